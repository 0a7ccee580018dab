/** The per-connection frame and byte budget (cloud/rate-budget.ts), on an explicit clock. */
import { expect, it } from 'vitest';
import { RateBudget } from '../cloud/rate-budget.js';

it('a burst up to the budget passes untouched; past it each frame waits its share of the rate; the budget refills with time', () => {
  const b = new RateBudget({ framesPerSecond: 100, bytesPerSecond: 1e6, burstSeconds: 2 }, 0);
  for (let i = 0; i < 200; i++) expect(b.charge(10, 0)).toBe(0);
  // the 201st frame is 1 frame in debt: 10 ms at 100 frames/s; the next 2 frames' debt, 20 ms
  expect(b.charge(10, 0)).toBeCloseTo(10, 9);
  expect(b.charge(10, 0)).toBeCloseTo(20, 9);
  // one second later 100 frames came back: 98 in hand
  for (let i = 0; i < 98; i++) expect(b.charge(10, 1000)).toBe(0);
  expect(b.charge(10, 1000)).toBeCloseTo(10, 9);
});

it('bytes have their own budget: one large frame may take the whole burst, the next waits for the rate', () => {
  const b = new RateBudget({ framesPerSecond: 1000, bytesPerSecond: 1000, burstSeconds: 2 }, 0);
  expect(b.charge(2000, 0)).toBe(0);
  expect(b.charge(500, 0)).toBeCloseTo(500, 9);
  expect(b.charge(0, 500)).toBe(0);
});

/** Heavy client-asked work (browser-edge segment builds) runs one at a time with a bounded queue (cloud/build-queue.ts). */
import { expect, it } from 'vitest';
import { BuildQueue, BuildQueueFull } from '../cloud/build-queue.js';

it('runs jobs one at a time in order; past one running and 2 waiting a job is refused at once; a failed job does not stop the next', async () => {
  const q = new BuildQueue(2);
  const order: string[] = [];
  const gates: (() => void)[] = [];
  const job = (name: string, fail = false) => () =>
    new Promise<string>((resolve, reject) => {
      order.push(`start ${name}`);
      gates.push(() => (fail ? reject(new Error(name)) : resolve(name)));
    });
  const a = q.run(job('a', true));
  const b = q.run(job('b'));
  const c = q.run(job('c'));
  await expect(q.run(job('d'))).rejects.toBeInstanceOf(BuildQueueFull);
  expect(q.pending).toBe(3);
  await Promise.resolve();
  expect(order).toEqual(['start a']);
  gates.shift()!();
  await expect(a).rejects.toThrow('a');
  for (let i = 0; i < 10 && gates.length === 0; i++) await Promise.resolve();
  expect(order).toEqual(['start a', 'start b']);
  // room again: one more may wait
  const e = q.run(job('e'));
  gates.shift()!();
  expect(await b).toBe('b');
  for (let i = 0; i < 10 && gates.length === 0; i++) await Promise.resolve();
  gates.shift()!();
  expect(await c).toBe('c');
  for (let i = 0; i < 10 && gates.length === 0; i++) await Promise.resolve();
  gates.shift()!();
  expect(await e).toBe('e');
  expect(order).toEqual(['start a', 'start b', 'start c', 'start e']);
  expect(q.pending).toBe(0);
});

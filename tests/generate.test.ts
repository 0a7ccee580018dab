import { expect, it } from 'vitest';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { Sampler } from '../models/runtime/sampler.js';
import { describeWithFixtures, REFERENCE_TEXT } from './helpers/fixtures.js';
import { storiesModel } from './helpers/models.js';

describeWithFixtures('generation with stories260K', () => {
  it('greedy decoding from BOS reproduces the reference text exactly', async () => {
    const pkg = await storiesModel();
    const p = await Pipeline.create(pkg);
    const ids = await generate(p, [1], { maxTokens: 100 });
    const text = pkg.tokenizer().decode(ids);
    expect(text.slice(0, REFERENCE_TEXT.length)).toBe(REFERENCE_TEXT);
    // the first token is the " Once" piece, whose leading space decode strips after BOS
    expect(ids[0]).toBe(pkg.tokenizer().encode('Once', false)[0]);
  });

  it('split generation gives the same ids at every split, and seeded sampling is deterministic', async () => {
    const pkg = await storiesModel();
    const prompt = pkg.tokenizer().encode('Tim had a red kite.');
    const ref = await generate(await Pipeline.create(pkg), prompt, { maxTokens: 40 });
    for (let k = 0; k <= pkg.config.nLayers; k++) {
      expect(await generate(await Pipeline.create(pkg, [k]), prompt, { maxTokens: 40 })).toEqual(ref);
    }
    const p = await Pipeline.create(pkg);
    const a = await generate(p, prompt, { maxTokens: 30, temperature: 0.9, topP: 0.9, seed: 42 });
    const b = await generate(p, prompt, { maxTokens: 30, temperature: 0.9, topP: 0.9, seed: 42 });
    const c = await generate(p, prompt, { maxTokens: 30, temperature: 0.9, topP: 0.9, seed: 43 });
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
  });

  it('stops at max tokens and refuses a sequence past the model maximum', async () => {
    const pkg = await storiesModel();
    const p = await Pipeline.create(pkg);
    expect((await generate(p, [1], { maxTokens: 5 })).length).toBe(5);
    await expect(generate(p, [1], { maxTokens: 600 })).rejects.toMatchObject({ code: 'E_SEQUENCE_TOO_LONG' });
  });
});

it('sampler: top-k 1 is greedy; temperature 0 is argmax; bad options are typed errors', () => {
  const logits = Float32Array.from([0.1, 2.5, -1, 2.4]);
  expect(new Sampler({ temperature: 0 }).sample(logits)).toBe(1);
  const s = new Sampler({ temperature: 1.5, topK: 1, seed: 3 });
  for (let i = 0; i < 20; i++) expect(s.sample(logits)).toBe(1);
  const counts = [0, 0, 0, 0];
  const t = new Sampler({ temperature: 1, seed: 9 });
  for (let i = 0; i < 4000; i++) counts[t.sample(logits)]!++;
  // p(1)/p(3) = e^0.1 ≈ 1.105
  expect(counts[1]! / counts[3]!).toBeGreaterThan(0.95);
  expect(counts[1]! / counts[3]!).toBeLessThan(1.3);
  expect(counts[2]!).toBeLessThan(counts[0]!);
  expect(() => new Sampler({ temperature: -1 })).toThrow(/temperature/);
  expect(() => new Sampler({ topP: 0 })).toThrow(/top-p/);
});

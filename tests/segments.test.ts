import { expect, it } from 'vitest';
import { ModelPackage } from '../models/package.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { argmax } from '../models/runtime/sampler.js';
import { maxAbsDiff } from '../shared/tensor.js';
import { describeWithFixtures } from './helpers/fixtures.js';
import { defaultModel, storiesModel } from './helpers/models.js';

const PROMPT = 'Once upon a time, there was a little dog named Max. Max liked to run in the park with his friend Sam. One day they found a big red ball under a tree and they played with it all day long until the sun went down.';

/** Prefill 64 ids then 32 greedy decode steps; returns the logits of every step. */
async function trace(p: Pipeline, prompt: number[], steps: number): Promise<{ logits: Float32Array[]; ids: number[] }> {
  const V = p.pkg.config.vocabSize;
  p.reset();
  const logits: Float32Array[] = [];
  let out = await p.forward(prompt);
  logits.push(out.data.slice());
  const ids = [...prompt];
  for (let s = 0; s < steps; s++) {
    const next = argmax(out.data, (out.tokens - 1) * V, V);
    ids.push(next);
    out = await p.forward([next]);
    logits.push(out.data.slice());
  }
  return { logits, ids };
}

async function checkAllSplits(pkg: ModelPackage, prompt: number[]): Promise<void> {
  const L = pkg.config.nLayers;
  const V = pkg.config.vocabSize;
  const full = await Pipeline.create(pkg);
  const ref = await trace(full, prompt, 32);
  expect(ref.logits[0]!.length).toBe(64 * V);

  // KV-cached decoding equals full recomputation of the whole sequence
  for (const step of [1, 8, 32]) {
    const seq = ref.ids.slice(0, 64 + step);
    full.reset();
    const recomputed = await full.forward(seq, { keepCache: false });
    const last = recomputed.data.subarray((seq.length - 1) * V, seq.length * V);
    expect(maxAbsDiff(last, ref.logits[step]!)).toBeLessThan(1e-4);
  }

  for (let k = 0; k <= L; k++) {
    const split = await Pipeline.create(pkg, [k]);
    expect(split.segments.map((s) => [s.from, s.to])).toEqual([[0, k], [k, L]]);
    const got = await trace(split, prompt, 32);
    expect(got.ids).toEqual(ref.ids);
    for (let s = 0; s < got.logits.length; s++) expect(maxAbsDiff(got.logits[s]!, ref.logits[s]!), `split ${k} step ${s}`).toBeLessThan(1e-4);
    await split.release();
  }
  await full.release();
}

describeWithFixtures('segments of stories260K', () => {
  it('[0,K) then [K,L) equals [0,L) for every K, prefill 64 + 32 cached decode steps', async () => {
    const pkg = await storiesModel();
    const prompt = pkg.tokenizer().encode(PROMPT).slice(0, 64);
    expect(prompt.length).toBe(64);
    await checkAllSplits(pkg, prompt);
  });

  it('three segments [0,1) [1,3) [3,5) equal one', async () => {
    const pkg = await storiesModel();
    const prompt = pkg.tokenizer().encode(PROMPT).slice(0, 20);
    const a = await trace(await Pipeline.create(pkg), prompt, 5);
    const b = await trace(await Pipeline.create(pkg, [1, 3]), prompt, 5);
    for (let s = 0; s < a.logits.length; s++) expect(maxAbsDiff(a.logits[s]!, b.logits[s]!)).toBeLessThan(1e-4);
  });
});

it('segments of the default model (GQA 6:2, half RoPE, tied head) compose exactly at every split', async () => {
  const pkg = await defaultModel();
  const prompt = pkg.tokenizer().encode('MENENIUS:\nThere was a time when all the body\'s members\nRebell\'d against the belly, thus accused it:\nThat only like a gulf it did remain\nI\' the midst o\' the body, idle and unactive,').slice(0, 64);
  expect(prompt.length).toBe(64);
  await checkAllSplits(pkg, prompt);
});

it('segments of a Qwen2-shaped synthetic model (half RoPE, q/k/v biases, untied head) compose exactly', async () => {
  const pkg = ModelPackage.fromImported(syntheticModel('tiny', 7, { architecture: 'qwen2', qkvBias: true }));
  const prompt = Array.from({ length: 64 }, (_, i) => (i * 37 + 5) % pkg.config.vocabSize);
  await checkAllSplits(pkg, prompt);
});

/**
 * The resident-KV attention (the cache stays in the runtime's buffers, the graph reads it and returns
 * only the new positions) against the reference graph (Concat of past and new): the same logits within
 * 1e-4 through prefill, decode, capacity growth, chunked prefill, batched steps of different lengths,
 * KV export/import and truncation.
 */
import { describe, expect, it } from 'vitest';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage } from '../models/package.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { buildSegment } from '../models/onnx/segment.js';
import { maxAbsDiff } from '../shared/tensor.js';
import { linearFor, nbitsLinear } from '../models/onnx/linear.js';
import { describeWithFixtures } from './helpers/fixtures.js';
import { defaultModel, storiesModel } from './helpers/models.js';

const pkg = ModelPackage.fromImported(syntheticModel('tiny', 7));
const c = pkg.config;
const L = c.nLayers;
const V = c.vocabSize;
const ids = Array.from({ length: 150 }, (_, i) => 3 + ((i * 37) % (V - 3)));

it('resident and reference attention give the same logits through prefill, growth past the capacity and chunks', async () => {
  const res = await SegmentRuntime.create(pkg, 0, L, { attention: 'resident' });
  const ref = await SegmentRuntime.create(pkg, 0, L, { attention: 'reference' });
  expect(res.segment.outputNames).toContain('new_key_0');
  expect(ref.segment.outputNames).toContain('present_key_0');
  // 10-token prefill, 100 single steps (the capacity grows from 64 twice), then a 40-token chunk
  const runs: number[] = [10, ...Array<number>(100).fill(1), 40];
  let at = 0;
  let worst = 0;
  for (const T of runs) {
    const a = await res.run(ids.slice(at, at + T), T);
    const b = await ref.run(ids.slice(at, at + T), T);
    worst = Math.max(worst, maxAbsDiff(a.data, b.data));
    at += T;
  }
  expect(worst).toBeLessThan(1e-4);
  expect(res.length).toBe(150);
  expect(res.capacity).toBeGreaterThanOrEqual(150);
  expect(res.capacity).toBeLessThan(150 * 1.5);
  // the caches hold the same keys and values
  for (const [x, y] of res.exportKV().map((e, i) => [e, ref.exportKV()[i]!] as const)) {
    expect(x.layer).toBe(y.layer);
    expect(maxAbsDiff(x.key, y.key)).toBeLessThan(1e-4);
    expect(maxAbsDiff(x.value, y.value)).toBeLessThan(1e-4);
  }
  await res.release();
  await ref.release();
});

it('a window run with keepCache: false leaves the cache as it was, and truncation rolls it back', async () => {
  const rt = await SegmentRuntime.create(pkg, 0, L);
  await rt.run(ids.slice(0, 20), 20);
  const before = rt.exportKV();
  const probe = await rt.run(ids.slice(20, 25), 5, { keepCache: false });
  expect(rt.length).toBe(20);
  expect(rt.exportKV()).toEqual(before);
  const again = await rt.run(ids.slice(20, 25), 5, { keepCache: false });
  expect(maxAbsDiff(probe.data, again.data)).toBe(0);
  // truncate to 12, then run 12..19 again: the same logits as the first time through
  const fresh = await SegmentRuntime.create(pkg, 0, L);
  await fresh.run(ids.slice(0, 12), 12);
  const want = await fresh.run(ids.slice(12, 20), 8);
  rt.truncate(12);
  expect(rt.length).toBe(12);
  const got = await rt.run(ids.slice(12, 20), 8);
  expect(maxAbsDiff(got.data, want.data)).toBeLessThan(1e-5);
  expect(() => rt.truncate(21)).toThrow(/cannot truncate a KV cache of 20 positions to 21/);
  await rt.release();
  await fresh.release();
});

it('batched steps of sessions at different lengths equal their single steps, in both forms', async () => {
  for (const attention of ['resident', 'reference'] as const) {
    const front = await SegmentRuntime.create(pkg, 0, 1, { attention });
    const seg = buildSegment(c, pkg.weights, 1, L, { attention, embed: false, head: true, keyPositions: true });
    const shared = await SegmentRuntime.openSession(seg);
    const back = (): SegmentRuntime => SegmentRuntime.withSession(c, seg, shared);
    // three sessions with 0, 5 and 70 positions (past the first capacity) through the back layers
    const hidden = async (n: number): Promise<Float32Array[]> => {
      front.reset();
      const out: Float32Array[] = [];
      for (let i = 0; i < n; i++) out.push((await front.run([ids[i]!], 1)).data);
      return out;
    };
    const lengths = [0, 5, 70];
    const batch: SegmentRuntime[] = [];
    const solo: SegmentRuntime[] = [];
    const nexts: Float32Array[] = [];
    for (const n of lengths) {
      const hs = await hidden(n + 1);
      const b = back();
      const s = back();
      for (const h of hs.slice(0, n)) {
        await b.run(h, 1);
        await s.run(h, 1);
      }
      batch.push(b);
      solo.push(s);
      nexts.push(hs[n]!);
    }
    const outs = await SegmentRuntime.runBatch(batch, nexts);
    for (let k = 0; k < lengths.length; k++) {
      const want = await solo[k]!.run(nexts[k]!, 1);
      expect(maxAbsDiff(outs[k]!.data, want.data), `${attention}, session of ${lengths[k]}`).toBeLessThan(1e-4);
      expect(batch[k]!.length).toBe(lengths[k]! + 1);
      // and the next single step continues from the batched one
      const h = (await hidden(lengths[k]! + 2))[lengths[k]! + 1]!;
      const x = await batch[k]!.run(h, 1);
      const y = await solo[k]!.run(h, 1);
      expect(maxAbsDiff(x.data, y.data)).toBeLessThan(1e-4);
    }
    // later batches reuse the gathered batch's buffers, stale from the one before: the same batch again
    // (a little longer), then two of its sessions in another order, each equal to its single step
    for (const order of [[0, 1, 2], [2, 1]]) {
      const xs = await Promise.all(order.map(async (k) => (await hidden(batch[k]!.length + 1))[batch[k]!.length]!));
      const outs = await SegmentRuntime.runBatch(order.map((k) => batch[k]!), xs);
      for (const [j, k] of order.entries()) {
        const want = await solo[k]!.run(xs[j]!, 1);
        expect(maxAbsDiff(outs[j]!.data, want.data), `${attention}, batch ${order.join(',')}, session ${k}`).toBeLessThan(1e-4);
      }
    }
    for (const r of [...batch, ...solo, front]) await r.release();
    await shared.session.release();
  }
});

/**
 * The fused kernels of the resident graph (SimplifiedLayerNormalization, RotaryEmbedding in either
 * style, stacked q/k/v and gate/up linears) against the plain reference graph, on real weights: the
 * default model (halves RoPE, GQA 6:2) and stories260K (interleaved RoPE), float32 and 4-bit weights
 * (blockwise rows quantize the same stacked or apart). The 4-bit check runs MatMulNBits at accuracy level
 * 0 (dequantized weights, float math): level 4 rounds each activation block to int8, so a last-bit
 * difference of the fused norm can flip a rounding and move logits by ~0.1 — a property of the kernel,
 * not of the stacking.
 */
const REAL = [
  { name: 'the default model', load: defaultModel, describeIt: describe },
  { name: 'stories260K', load: storiesModel, describeIt: describeWithFixtures },
];
for (const { name, load, describeIt } of REAL) describeIt(`fused kernels on ${name}`, () => {
  it(`fused and plain graphs agree at 32 and 4 bits through prefill and decode`, async () => {
    const real = await load();
    const { nLayers, vocabSize } = real.config;
    const tokens = Array.from({ length: 40 }, (_, i) => 3 + ((i * 53) % (vocabSize - 3)));
    for (const bits of [32, 4]) {
      const lin = bits === 32 ? linearFor(32) : nbitsLinear(bits, 32, undefined, 0);
      const res = await SegmentRuntime.create(real, 0, nLayers, { attention: 'resident', linearFor: () => lin });
      const ref = await SegmentRuntime.create(real, 0, nLayers, { attention: 'reference', linearFor: () => lin });
      let worst = 0;
      let at = 0;
      for (const T of [24, ...Array<number>(16).fill(1)]) {
        const a = await res.run(tokens.slice(at, at + T), T);
        const b = await ref.run(tokens.slice(at, at + T), T);
        worst = Math.max(worst, maxAbsDiff(a.data, b.data));
        at += T;
      }
      expect(worst, `${name}, ${bits}-bit`).toBeLessThan(1e-4);
      await res.release();
      await ref.release();
    }
  });
});

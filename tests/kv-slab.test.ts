/**
 * The cloud's shared KV slab and its continuous batching: runtimes of one back segment keep their caches
 * in slots of one buffer, a batched step feeds it as is (no gather), and the results equal each
 * session's own single steps within 1e-4 — through slot moves when a session leaves, capacity growth
 * and padding rows of sessions that did not step, and the slab shrinks as sessions leave. The pool (with
 * and without the slab, `splitllm cloud --kv-slab`) batches the steps of the sessions it just served
 * together again, a lone session's step runs without waiting for a batch, and a step of a released
 * session fails alone.
 */
import { expect, it } from 'vitest';
import { BackSegmentPool } from '../cloud/segment-pool.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage } from '../models/package.js';
import { buildSegment } from '../models/onnx/segment.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { SharedSegments } from '../models/runtime/shared-segments.js';
import { maxAbsDiff } from '../shared/tensor.js';

const pkg = ModelPackage.fromImported(syntheticModel('tiny', 11));
const c = pkg.config;
const L = c.nLayers;
const V = c.vocabSize;
const ids = Array.from({ length: 200 }, (_, i) => 3 + ((i * 29) % (V - 3)));

/** hidden states of ids[0..n) through layer 0 */
async function hiddenStates(n: number): Promise<Float32Array[]> {
  const front = await SegmentRuntime.create(pkg, 0, 1, { embed: true, head: false });
  const out: Float32Array[] = [];
  for (let i = 0; i < n; i++) out.push((await front.run([ids[i]!], 1)).data);
  await front.release();
  return out;
}

it('batched steps over the slab equal single steps of own caches, through slot moves, growth and padding rows', async () => {
  const hs = await hiddenStates(160);
  const slabbed = new SharedSegments(c, (k: number) => String(k), (k) => buildSegment(c, pkg.weights, k, L, { embed: false, head: true }), { sharedKv: true });
  const own = await SegmentRuntime.openSession(buildSegment(c, pkg.weights, 1, L, { embed: false, head: true }));
  const solo = (): SegmentRuntime => SegmentRuntime.withSession(c, buildSegment(c, pkg.weights, 1, L, { embed: false, head: true }), own);
  // four sessions at 3, 10, 60 and 1 positions: each with a slab runtime and an own-cache twin
  const lengths = [3, 10, 60, 1];
  const a: SegmentRuntime[] = [];
  const b: SegmentRuntime[] = [];
  for (const n of lengths) {
    const r = await slabbed.runtime(1);
    const s = solo();
    await r.run(concat(hs.slice(0, n)), n);
    await s.run(concat(hs.slice(0, n)), n);
    a.push(r);
    b.push(s);
  }
  const check = async (who: number[], label: string) => {
    const xs = who.map((k) => hs[a[k]!.length]!);
    const outs = await SegmentRuntime.runBatch(who.map((k) => a[k]!), xs);
    for (let j = 0; j < who.length; j++) {
      const want = await b[who[j]!]!.run(xs[j]!, 1);
      expect(maxAbsDiff(outs[j]!.data, want.data), `${label}: session ${who[j]}`).toBeLessThan(1e-4);
      expect(a[who[j]!]!.length).toBe(b[who[j]!]!.length);
    }
  };
  await check([0, 1, 2, 3], 'all four');
  // session 3 does not step: its slot is a padding row, its cache unchanged
  const before = a[3]!.length;
  await check([0, 1, 2], 'three of four');
  expect(a[3]!.length).toBe(before);
  // session 1 leaves: the last slot moves into its place and goes on exactly
  await a[1]!.release();
  await b[1]!.release();
  await check([0, 2, 3], 'after a slot move');
  // session 2 steps past the first capacity (64): the slab grows for every slot
  for (let i = 0; i < 10; i++) await check([0, 2, 3], `growth step ${i}`);
  expect(a[2]!.capacity).toBeGreaterThan(64);
  // a single step of a slab runtime reads its own slot
  const x = hs[a[0]!.length]!;
  expect(maxAbsDiff((await a[0]!.run(x, 1)).data, (await b[0]!.run(x, 1)).data)).toBeLessThan(1e-4);
  // exported KV equals the own cache's
  const ea = a[2]!.exportKV();
  const eb = b[2]!.exportKV();
  expect(maxAbsDiff(ea[0]!.key, eb[0]!.key)).toBe(0);
  expect(maxAbsDiff(ea[0]!.value, eb[0]!.value)).toBe(0);
  for (const r of [a[0]!, a[2]!, a[3]!, b[0]!, b[2]!, b[3]!]) await r.release();
  await slabbed.close();
  await own.session.release();
});

for (const kvSlab of [false, true]) it(`the pool batches the sessions it just served together again, and a lone session steps at once (KV slab ${kvSlab ? 'on' : 'off'})`, async () => {
  const hs = await hiddenStates(40);
  const sizes: number[] = [];
  const pool = new BackSegmentPool(pkg, (n) => sizes.push(n), undefined, undefined, undefined, kvSlab);
  const key = { split: 1, bits: 32, blockSize: 32 };
  const lone = await pool.runtime(key);
  await lone.run(hs[0]!, 1);
  // a lone session's step: no batch hop, one run per step
  for (let i = 1; i < 4; i++) await pool.step(key, lone, hs[i]!);
  expect(sizes).toEqual([1, 1, 1]);
  const others = await Promise.all([1, 2, 3].map(() => pool.runtime(key)));
  for (const r of others) await r.run(hs[0]!, 1);
  sizes.length = 0;
  // four sessions, each sending its next step as soon as its token comes, for five rounds
  const all = [lone, ...others];
  await Promise.all(
    all.map(async (r) => {
      for (let i = 0; i < 5; i++) await pool.step(key, r, hs[r.length]!);
    }),
  );
  expect(sizes).toEqual([4, 4, 4, 4, 4]);
  for (const r of all) expect(r.length).toBe(r === lone ? 9 : 6);
  for (const r of all) await r.release();
  await pool.close();
});

function concat(xs: Float32Array[]): Float32Array {
  const out = new Float32Array(xs.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of xs) {
    out.set(x, o);
    o += x.length;
  }
  return out;
}

for (const kvSlab of [false, true]) it(`a step whose session is released while it waits fails alone; the batch it would have joined runs (KV slab ${kvSlab ? 'on' : 'off'})`, async () => {
  const hs = await hiddenStates(8);
  const pool = new BackSegmentPool(pkg, undefined, undefined, undefined, undefined, kvSlab);
  const key = { split: 1, bits: 32, blockSize: 32 };
  const rts = await Promise.all([0, 1, 2].map(() => pool.runtime(key)));
  for (const r of rts) await r.run(hs[0]!, 1);
  const steps = rts.map((r) => pool.step(key, r, hs[1]!));
  await rts[1]!.release(); // before the batch starts (it waits for the end of this turn)
  await expect(steps[1]).rejects.toThrow(/released before its step ran/);
  const [a, c] = await Promise.all([steps[0]!, steps[2]!]);
  expect(maxAbsDiff(a.data, c.data)).toBe(0); // the same inputs at the same length
  expect(rts[0]!.length).toBe(2);
  expect(rts[2]!.length).toBe(2);
  for (const r of [rts[0]!, rts[2]!]) await r.release();
  await pool.close();
});

it('the slab gives memory back as sessions leave, and the sessions left go on exactly', async () => {
  const hs = await hiddenStates(120);
  const slabbed = new SharedSegments(c, (k: number) => String(k), (k) => buildSegment(c, pkg.weights, k, L, { embed: false, head: true }), { sharedKv: true });
  const own = await SegmentRuntime.openSession(buildSegment(c, pkg.weights, 1, L, { embed: false, head: true }));
  const twin = (): SegmentRuntime => SegmentRuntime.withSession(c, buildSegment(c, pkg.weights, 1, L, { embed: false, head: true }), own);
  const a: SegmentRuntime[] = [];
  const b: SegmentRuntime[] = [];
  for (let i = 0; i < 12; i++) {
    const n = i === 0 ? 100 : 3 + i; // one long session makes the capacity grow
    const r = await slabbed.runtime(1);
    const t = twin();
    await r.run(concat(hs.slice(0, n)), n);
    await t.run(concat(hs.slice(0, n)), n);
    a.push(r);
    b.push(t);
  }
  const slab = slabbed.entry(1).slab!;
  expect(slab.size).toBe(12);
  const full = slab.bytes;
  // the long one and nine others leave: two short sessions stay
  for (const k of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) {
    await a[k]!.release();
    await b[k]!.release();
  }
  expect(slab.size).toBe(2);
  expect(slab.bytes).toBeLessThan(full / 4);
  expect(slab.capacity).toBeLessThan(100);
  const outs = await SegmentRuntime.runBatch([a[10]!, a[11]!], [hs[a[10]!.length]!, hs[a[11]!.length]!]);
  for (const [j, k] of [10, 11].entries()) {
    const want = await b[k]!.run(hs[b[k]!.length]!, 1);
    expect(maxAbsDiff(outs[j]!.data, want.data)).toBeLessThan(1e-4);
  }
  for (const r of [a[10]!, a[11]!]) await r.release();
  expect(slab.bytes).toBe(0);
  for (const r of [b[10]!, b[11]!]) await r.release();
  await slabbed.close();
  await own.session.release();
});

it('a session that leaves the slab before any session ran (no buffers yet) leaves it working', async () => {
  const hs = await hiddenStates(4);
  const slabbed = new SharedSegments(c, (k: number) => String(k), (k) => buildSegment(c, pkg.weights, k, L, { embed: false, head: true }), { sharedKv: true });
  const [a, b] = [await slabbed.runtime(1), await slabbed.runtime(1)];
  await a.release(); // its slot goes to b before the slab has allocated anything
  const own = await SegmentRuntime.create(pkg, 1, L, { embed: false, head: true });
  expect(maxAbsDiff((await b.run(hs[0]!, 1)).data, (await own.run(hs[0]!, 1)).data)).toBeLessThan(1e-4);
  expect(slabbed.entry(1).slab!.size).toBe(1);
  await b.release();
  await own.release();
  await slabbed.close();
});

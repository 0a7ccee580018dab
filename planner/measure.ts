/**
 * Measurements behind the compute profiles: per-layer decode and prefill latency at each weight precision
 * on this machine, and the runtime's baseline memory. (The link is measured from the edge:
 * edge/measure-link.ts.)
 */
import { rng } from '../shared/random.js';
import { linearFor } from '../models/onnx/linear.js';
import { ModelPackage } from '../models/package.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { segmentBytes } from '../quantization/weights/memory.js';
import { DEFAULT_BLOCK_SIZE, isBlockwise } from '../shared/precision.js';
import type { BlockComputeProfile, ComputeProfile } from './types.js';

/** Weights a timed stack of layers must reach so that they do not sit in the CPU caches. */
const WORKING_SET_BYTES = 64 * 1024 * 1024;

async function timeSteps(rt: SegmentRuntime, input: (i: number) => ArrayLike<number> | Float32Array, steps: number): Promise<number> {
  for (let i = 0; i < 3; i++) await rt.run(input(i), 1); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await rt.run(input(i), 1);
  return (performance.now() - t0) / steps;
}

/**
 * Per-layer decode and prefill latency of `bits`-bit layers at `block` on this machine: a run of layers whose
 * weights outgrow the CPU caches (≥ 64 MB, or all of them), as a segment's do: one small layer timed alone
 * stays in cache and looks faster than it runs in a stack.
 */
async function timeLayers(pkg: ModelPackage, bits: number, block: number, steps: number, ctx: number, hidden: (n: number) => Float32Array): Promise<{ decode: number; prefill: number; n: number }> {
  const c = pkg.config;
  const one = segmentBytes(c, 0, 1, { embed: false, head: false, bitsOf: () => bits, blockSize: block }).linear;
  const n = Math.min(c.nLayers, Math.max(1, Math.ceil(WORKING_SET_BYTES / Math.max(1, one))));
  const lin = linearFor(bits, block);
  const rt = await SegmentRuntime.create(pkg, 0, n, { embed: false, head: false, linearFor: () => lin });
  try {
    await rt.run(hidden(ctx), ctx, { keepCache: false }); // warm-up: the first run pays for allocation
    const t0 = performance.now();
    for (let i = 0; i < 3; i++) await rt.run(hidden(ctx), ctx, { keepCache: false });
    const prefill = (performance.now() - t0) / (3 * ctx * n);
    await rt.run(hidden(ctx), ctx); // decode is timed with ctx positions in the cache
    const decode = (await timeSteps(rt, () => hidden(1), steps)) / n;
    return { decode, prefill, n };
  } finally {
    await rt.release();
  }
}

/** Decode latency of the final norm + LM head at `bits` (blockwise at `block` below 16 bits). */
async function timeHead(pkg: ModelPackage, bits: number, block: number, steps: number, hidden: (n: number) => Float32Array): Promise<number> {
  const L = pkg.config.nLayers;
  const q = await SegmentRuntime.create(pkg, L, L, { embed: false, head: true, ...(bits < 32 ? { headLinear: linearFor(bits, block) } : {}) });
  try {
    return await timeSteps(q, () => hidden(1), steps);
  } finally {
    await q.release();
  }
}

/**
 * The compute profile of this machine: every precision of `bitsList` at the default block (the top-level
 * entries), and the blockwise ones (below 16 bits) again at each other block of `blockSizes` (`blocks`).
 */
export async function measureCompute(
  pkg: ModelPackage,
  bitsList: number[],
  opts: { steps?: number; context?: number; blockSizes?: number[]; onProgress?: (m: string) => void } = {},
): Promise<ComputeProfile & { layerPrefillMsPerToken: Record<string, number>; headMsByBits: Record<string, number> }> {
  const c = pkg.config;
  const steps = opts.steps ?? 20;
  const ctx = Math.min(opts.context ?? 64, c.maxSeq - steps - 8);
  const next = rng(11);
  const hidden = (n: number) => Float32Array.from({ length: n * c.dim }, () => next() - 0.5);
  const measureAt = async (block: number, bits: number[]) => {
    const t: Required<BlockComputeProfile> = { layerDecodeMs: {}, layerPrefillMsPerToken: {}, headMsByBits: {} };
    const at = block === DEFAULT_BLOCK_SIZE ? '' : ` at block ${block}`;
    for (const b of bits) {
      const r = await timeLayers(pkg, b, block, steps, ctx, hidden);
      t.layerDecodeMs[String(b)] = r.decode;
      t.layerPrefillMsPerToken[String(b)] = r.prefill;
      opts.onProgress?.(`${b}-bit layers${at} (${r.n} timed together): decode ${r.decode.toFixed(3)} ms/token, prefill ${r.prefill.toFixed(3)} ms/token per layer`);
    }
    // the LM head at the lower precisions too (the plan may quantize it: --head-bits)
    for (const b of bits.filter((x) => x < 32)) t.headMsByBits[String(b)] = await timeHead(pkg, b, block, steps, hidden);
    return t;
  };
  const top = await measureAt(DEFAULT_BLOCK_SIZE, bitsList);
  const blocks: Record<string, BlockComputeProfile> = {};
  for (const block of (opts.blockSizes ?? []).filter((b) => b !== DEFAULT_BLOCK_SIZE)) {
    const quantized = bitsList.filter(isBlockwise);
    if (quantized.length) blocks[String(block)] = await measureAt(block, quantized);
  }
  const emb = await SegmentRuntime.create(pkg, 0, 0, { embed: true, head: false });
  const embedMs = await timeSteps(emb, (i) => [(i * 7 + 3) % c.vocabSize], steps);
  await emb.release();
  const headMs = await timeHead(pkg, 32, DEFAULT_BLOCK_SIZE, steps, hidden);
  return { model: pkg.hash, ...top, embedMs, headMs, baselineBytes: 0, ...(Object.keys(blocks).length ? { blocks } : {}) };
}

/**
 * The runtime's own resident memory as an edge process sees it: RSS once every kernel an edge may run has
 * run (onnxruntime's libraries, thread pools and arenas are then in place, with a tiny stand-in model whose
 * own memory is negligible) and the model's tokenizer is loaded. The model's own memory (weights,
 * embedding, KV) is the cost model's to count (planner/cost.ts). Call it before anything else loads a
 * segment: RSS rarely shrinks.
 */
export async function measureBaseline(pkg: ModelPackage, bitsList: number[] = [4, 8, 32]): Promise<number> {
  const tiny = ModelPackage.fromImported(syntheticModel('tiny', 1));
  for (const bits of bitsList) {
    const lin = linearFor(bits, 32);
    const rt = await SegmentRuntime.create(tiny, 0, 1, { embed: true, head: false, linearFor: () => lin });
    await rt.run([1, 2, 3], 3);
    await rt.run([4], 1);
    await rt.release();
  }
  // the tokenizer an edge holds (a large vocabulary's tables are tens of MB)
  pkg.tokenizer().encode('a baseline probe', true);
  return process.memoryUsage().rss;
}

/**
 * The accuracy profile's measurements (ppl change per split × front bits × back bits, per split and
 * hidden-state codec, per head and embedding precision), made layer by layer on a sweep
 * (models/eval/layer-sweep.ts): never more than one layer's segments held, each opened once per
 * precision for every configuration that needs it.
 *
 * Two ways:
 * - `measureAccuracy`: every configuration measured (at the splits asked), as `profile accuracy` does.
 * - `estimateAccuracy`: what `plan` does for a model without a profile, in a fraction of the work. Measured:
 *   the head and the embedding at each precision; the back half [k, L) quantized at each precision from a
 *   few sampled splits k; each layer alone at each precision on the float model's input (its relative
 *   error); each codec's bits per value and relative error on the float model's hidden state at every
 *   split; each clearly lossy codec's ppl change at a few splits. Estimated: a configuration's change of
 *   log-perplexity as the front's plus the back's (the front [0,k) at f costing what quantizing every layer
 *   at f costs less what quantizing [k,L) costs); the back half between sampled splits shared out by the
 *   layers' own errors; a codec's change as its relative error times the split's sensitivity (measured by
 *   the lossy codecs there, interpolated between splits). On the default model (6 layers) the weights
 *   came within 0.23 percentage points of the measured profile with every split sampled, 0.47 with 3 of 7.
 */
import type { ModelPackage } from '../models/package.js';
import { sweepPerplexity, type SweepPath } from '../models/eval/layer-sweep.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { linearFor } from '../models/onnx/linear.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import { WireMeter } from '../quantization/activations/meter.js';
import { codecAtSplit } from '../quantization/activations/registry.js';
import type { CalibrationContexts } from '../quantization/activations/calibration.js';
import { checkSplit, SplitLLMError } from '../shared/errors.js';
import { DEFAULT_BLOCK_SIZE, isBlockwise } from '../shared/precision.js';
import { quantizesBlockwise } from './cost.js';
import type { AccuracyEstimate, BlockAccuracyProfile } from './types.js';

/** The codecs an accuracy profile measures by default (a bare 'ts-tabq' only where the model has a calibration). */
export const DEFAULT_PROFILE_CODECS = ['fp32', 'fp16', 'int8', 'uniform:4', 'ts-tabq:eps=0.1', 'ts-tabq'];

/** The embedding precisions a profile measures (what `--embed-bits` may choose). */
const EMBED_BITS = [8, 4];

/** What an accuracy profile file holds under `data`. */
export interface AccuracyData {
  model: string;
  baselinePpl: number;
  windows: number;
  weights: Record<string, number>;
  codecs: Record<string, { pplIncrease: number; bitsPerValue: number }>;
  heads: Record<string, number>;
  embeds: Record<string, number>;
  blocks?: Record<string, BlockAccuracyProfile>;
  /** present on an estimate: how it was made */
  estimate?: AccuracyEstimate;
}

export interface AccuracyOptions {
  /** weight precisions (front and back, and the head below 32) */
  bits: number[];
  /** hidden-state codec specs (bare 'ts-tabq': the split's calibrated codec) */
  codecs: string[];
  contexts: CalibrationContexts;
  /** splits to measure (default 0..L) */
  splits?: number[];
  /** other quantization blocks to measure the blockwise configurations at (measureAccuracy only) */
  blockSizes?: number[];
  /** how far it is: runs of a window through one segment done, of all */
  onProgress?(done: number, total: number): void;
  /** intra-op threads of each segment */
  threads?: number;
}

/** A layer precision's id in a sweep: `bits` (float32, float16) or `bits@block`. */
const precision = (bits: number, block = DEFAULT_BLOCK_SIZE) => (isBlockwise(bits) ? `${bits}@${block}` : String(bits));

function emitters(): (id: string) => LinearEmitter | undefined {
  const made = new Map<string, LinearEmitter>();
  return (id) => {
    if (id === '32') return undefined;
    let e = made.get(id);
    if (!e) {
      const [bits, block] = id.split('@').map(Number);
      made.set(id, (e = linearFor(bits!, block ?? DEFAULT_BLOCK_SIZE)));
    }
    return e;
  };
}

interface CodecProbe {
  spec: string;
  split: number;
  meter: WireMeter;
  /** Σ (decoded − x)² and Σ x² over the reference state's values */
  err: number;
  norm: number;
}

const relative = (p: CodecProbe) => (p.norm > 0 ? p.err / p.norm : 0);

/** Adds Σ (y − x)² and Σ x² of one window's rows to `acc`. */
function addError(acc: { err: number; norm: number }, y: Float32Array, x: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const d = y[i]! - x[i]!;
    acc.err += d * d;
    acc.norm += x[i]! * x[i]!;
  }
}

/**
 * The paths both ways share: the reference, the heads and embeddings below float32, and each codec's
 * bits per value and error on the reference's state at every split of `probeSplits` (`observe`).
 */
function commonPaths(pkg: ModelPackage, o: AccuracyOptions, probeSplits: number[]) {
  const L = pkg.config.nLayers;
  const D = pkg.config.dim;
  const ref: SweepPath = { embedBits: 32, layers: Array<string>(L).fill('32'), head: '32' };
  const paths: SweepPath[] = [ref];
  const heads = new Map<number, number>(); // bits → path index
  for (const b of o.bits.filter((x) => x < 32)) heads.set(b, paths.push({ ...ref, head: precision(b) }) - 1);
  const embeds = new Map<number, number>();
  for (const b of EMBED_BITS) embeds.set(b, paths.push({ ...ref, embedBits: b }) - 1);
  const probes: CodecProbe[] = [];
  for (const k of probeSplits) for (const spec of o.codecs) probes.push({ spec, split: k, meter: wireMeter(o, spec, k), err: 0, norm: 0 });
  const observe = {
    path: ref,
    at(split: number, rows: readonly Float32Array[], tokens: readonly number[]) {
      for (const p of probes) {
        if (p.split !== split) continue;
        rows.forEach((x, w) => addError(p, p.meter.roundTrip(x, tokens[w]!, D), x));
      }
    },
  };
  /** a path through `spec` at split k (float weights) */
  const codecPath = (spec: string, k: number) => {
    const wire = wireMeter(o, spec, k);
    return paths.push({ ...ref, codec: { split: k, id: spec, roundTrip: (h, T) => wire.roundTrip(h, T, D) } }) - 1;
  };
  return { ref, paths, heads, embeds, probes, observe, codecPath };
}

const wireMeter = (o: AccuracyOptions, spec: string, k: number) => new WireMeter(codecAtSplit(spec, k, o.contexts), { contexts: o.contexts.contexts });

const allSplits = (L: number) => Array.from({ length: L + 1 }, (_, i) => i);

function checkSplits(splits: number[], L: number): number[] {
  for (const k of splits) checkSplit(k, L);
  return [...new Set(splits)].sort((a, b) => a - b);
}

/** Every configuration measured on `windows` (at `o.splits`, default every split). */
export async function measureAccuracy(pkg: ModelPackage, windows: number[][], o: AccuracyOptions): Promise<AccuracyData> {
  const L = pkg.config.nLayers;
  const splits = checkSplits(o.splits ?? allSplits(L), L);
  const common = commonPaths(pkg, o, splits);
  const { ref, paths } = common;
  const codecPaths = new Map<string, number>();
  for (const p of common.probes) if (!p.meter.codec.lossless) codecPaths.set(`${p.split}/${p.spec}`, common.codecPath(p.spec, p.split));
  const layersOf = (k: number, f: number, b: number, block = DEFAULT_BLOCK_SIZE) => Array.from({ length: L }, (_, j) => precision(j < k ? f : b, block));
  const weightPaths = new Map<string, number>();
  for (const k of splits) for (const f of o.bits) for (const b of o.bits) weightPaths.set(`${k}/${f}/${b}`, paths.push({ ...ref, layers: layersOf(k, f, b) }) - 1);
  const blockPaths = new Map<number, { weights: Map<string, number>; heads: Map<number, number> }>();
  for (const block of (o.blockSizes ?? []).filter((b) => b !== DEFAULT_BLOCK_SIZE)) {
    const t = { weights: new Map<string, number>(), heads: new Map<number, number>() };
    for (const k of splits) {
      for (const f of o.bits) {
        for (const b of o.bits) {
          if (quantizesBlockwise(pkg.config, { split: k, frontBits: f, backBits: b })) t.weights.set(`${k}/${f}/${b}`, paths.push({ ...ref, layers: layersOf(k, f, b, block) }) - 1);
        }
      }
    }
    for (const b of o.bits.filter(isBlockwise)) t.heads.set(b, paths.push({ ...ref, head: precision(b, block) }) - 1);
    if (t.weights.size) blockPaths.set(block, t);
  }
  const r = await sweepPerplexity(pkg, windows, paths, {
    emitter: emitters(),
    observe: common.observe,
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
  });
  const increase = (i: number) => Math.exp((r.nll[i]! - r.nll[0]!) / r.tokens) - 1;
  const table = (m: Map<string | number, number>) => Object.fromEntries([...m].map(([k, i]) => [String(k), increase(i)]));
  const blocks: Record<string, BlockAccuracyProfile> = {};
  for (const [block, t] of blockPaths) blocks[String(block)] = { weights: table(t.weights), heads: table(t.heads) };
  return {
    model: pkg.hash,
    baselinePpl: Math.exp(r.nll[0]! / r.tokens),
    windows: windows.length,
    weights: table(weightPaths),
    codecs: codecTable(common.probes, (p) => {
      const i = codecPaths.get(`${p.split}/${p.spec}`);
      return i === undefined ? 0 : increase(i);
    }),
    heads: table(common.heads),
    embeds: table(common.embeds),
    ...(blockPaths.size ? { blocks } : {}),
  };
}

function codecTable(probes: CodecProbe[], pplIncrease: (p: CodecProbe) => number): AccuracyData['codecs'] {
  const out: AccuracyData['codecs'] = {};
  for (const p of probes) out[`${p.split}/${p.spec}`] = { pplIncrease: pplIncrease(p), bitsPerValue: p.meter.bitsPerValue };
  return out;
}

/** Up to `n` splits spread evenly over [from, to], both ends among them. */
const spread = (from: number, to: number, n: number) => [...new Set(Array.from({ length: n }, (_, i) => Math.round(from + (i * (to - from)) / (n - 1))))];

/** The splits an estimate quantizes the back half from: every one up to 8 layers, else 5 spread over 0..L. */
export function sampledSplits(L: number): number[] {
  return L <= 8 ? allSplits(L) : spread(0, L, 5);
}

/** The splits an estimate runs the lossy codecs at: every one up to 8 layers, else 3 inside (L/4, L/2, 3L/4). */
export function codecSplits(L: number): number[] {
  return L <= 8 ? allSplits(L) : spread(0, L, 5).slice(1, -1);
}

/** A codec whose error is below this share of the lossiest codec's (fp16, int8 beside 4-bit codes) gets the lossiest's sensitivity instead of a run of its own. */
const NEAR_LOSSLESS = 0.01;

/** Linear interpolation of `at` (known at the sorted `xs`) at `x`; flat past either end. */
function interpolate(xs: number[], at: (x: number) => number, x: number): number {
  const hi = xs.findIndex((s) => s >= x);
  if (hi < 0) return at(xs[xs.length - 1]!);
  if (xs[hi] === x || hi === 0) return at(xs[hi]!);
  const a = xs[hi - 1]!;
  const b = xs[hi]!;
  return at(a) + ((at(b) - at(a)) * (x - a)) / (b - a);
}

/** Relative error of the windows' rows `ys` against the reference's (as many windows as `ys` has): Σ (y − x)² / Σ x². */
function relativeError(ys: readonly Float32Array[], xs: readonly Float32Array[]): number {
  const acc = { err: 0, norm: 0 };
  ys.forEach((y, w) => addError(acc, y, xs[w]!));
  return acc.norm > 0 ? acc.err / acc.norm : 0;
}

/** The cheap estimate (see the top of this file), with every split of 0..L in its tables. */
export async function estimateAccuracy(pkg: ModelPackage, windows: number[][], o: AccuracyOptions): Promise<AccuracyData> {
  const t0 = performance.now();
  const L = pkg.config.nLayers;
  const sampled = o.splits ? checkSplits(o.splits, L) : sampledSplits(L);
  if (sampled[0] !== 0 || sampled[sampled.length - 1] !== L) throw new SplitLLMError('E_USAGE', `an estimate samples splits from 0 to ${L}: include both ends`);
  const atCodec = o.splits ? sampled : codecSplits(L);
  const common = commonPaths(pkg, o, allSplits(L));
  const { ref, paths } = common;
  // which codecs are lossy enough to need runs of their own: their error on the embedding's output (one
  // cheap run) against the lossiest's
  const lossy = await lossyCodecs(pkg, windows, o);
  const codecPaths = new Map<string, number>();
  for (const k of atCodec) for (const spec of lossy) codecPaths.set(`${k}/${spec}`, common.codecPath(spec, k));
  const quantized = o.bits.filter((b) => b !== 32);
  const back = new Map<string, number>(); // `${k}/${b}` → path index: [0,k) float, [k,L) at b
  for (const k of sampled.filter((x) => x < L)) for (const b of quantized) back.set(`${k}/${b}`, paths.push({ ...ref, layers: Array.from({ length: L }, (_, j) => (j < k ? '32' : precision(b))) }) - 1);
  // each layer alone at each precision, on the reference's input: its relative error says how the back
  // half's change shares out between the sampled splits
  const layerError = new Map<number, number[]>(quantized.map((b) => [b, Array<number>(L).fill(0)]));
  const pending = new Map<number, Map<string, readonly Float32Array[]>>();
  const r = await sweepPerplexity(pkg, windows, paths, {
    emitter: emitters(),
    observe: {
      path: ref,
      at(split, rows, tokens) {
        common.observe.at(split, rows, tokens);
        const outs = pending.get(split - 1);
        pending.delete(split - 1);
        for (const b of quantized) {
          const q = outs?.get(precision(b));
          if (q) layerError.get(b)![split - 1]! += relativeError(q, rows);
        }
      },
    },
    probe: {
      precisions: quantized.map((b) => precision(b)),
      windows: 1, // a layer's error relative to its neighbours' shows on one window
      at(layer, p, rows) {
        pending.set(layer, (pending.get(layer) ?? new Map<string, readonly Float32Array[]>()).set(p, rows));
      },
    },
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
  });
  // changes of log-perplexity (per predicted token), which add across independent changes
  const dlog = (i: number) => (r.nll[i]! - r.nll[0]!) / r.tokens;
  const measuredBack = (b: number, s: number) => (s === L ? 0 : dlog(back.get(`${s}/${b}`)!));
  const backAt = (b: number, k: number) => {
    if (b === 32 || k === L) return 0;
    if (sampled.includes(k)) return measuredBack(b, k);
    // between the sampled splits around k, the layers [k, hi) take their share of the change by their errors alone
    const hi = sampled.find((s) => s > k)!;
    const lo = sampled[sampled.indexOf(hi) - 1]!;
    const e = layerError.get(b)!;
    const sum = (from: number, to: number) => e.slice(from, to).reduce((a, x) => a + x, 0);
    const share = sum(lo, hi) > 0 ? sum(k, hi) / sum(lo, hi) : (hi - k) / (hi - lo);
    return measuredBack(b, hi) + (measuredBack(b, lo) - measuredBack(b, hi)) * share;
  };
  const frontAt = (f: number, k: number) => (f === 32 ? 0 : backAt(f, 0) - backAt(f, k));
  const weights: Record<string, number> = {};
  for (let k = 0; k <= L; k++) for (const f of o.bits) for (const b of o.bits) weights[`${k}/${f}/${b}`] = Math.exp(frontAt(f, k) + backAt(b, k)) - 1;
  // a codec's change: its own error at the split times the split's sensitivity (change per relative
  // error), measured where it ran (or, for a near-lossless one, where the lossiest ran), interpolated between
  const probe = new Map(common.probes.map((p) => [`${p.split}/${p.spec}`, p]));
  const lossiest = lossy.length ? lossy.reduce((a, b) => (relative(probe.get(`${atCodec[0]}/${b}`)!) > relative(probe.get(`${atCodec[0]}/${a}`)!) ? b : a)) : undefined;
  const sensitivity = (spec: string, k: number) => {
    const e = relative(probe.get(`${k}/${spec}`)!);
    return e > 0 ? dlog(codecPaths.get(`${k}/${spec}`)!) / e : 0;
  };
  const codecChange = (p: CodecProbe) => {
    const e = relative(p);
    if (e === 0 || p.meter.codec.lossless) return 0;
    const own = codecPaths.has(`${p.split}/${p.spec}`);
    if (own) return Math.exp(dlog(codecPaths.get(`${p.split}/${p.spec}`)!)) - 1;
    const by = lossy.includes(p.spec) ? p.spec : lossiest;
    if (!by) return 0;
    return Math.exp(e * interpolate(atCodec, (s) => sensitivity(by, s), p.split)) - 1;
  };
  const increase = (i: number) => Math.exp(dlog(i)) - 1;
  const table = (m: Map<number, number>) => Object.fromEntries([...m].map(([k, i]) => [String(k), increase(i)]));
  return {
    model: pkg.hash,
    baselinePpl: Math.exp(r.nll[0]! / r.tokens),
    windows: windows.length,
    weights,
    codecs: codecTable(common.probes, codecChange),
    heads: table(common.heads),
    embeds: table(common.embeds),
    estimate: { method: 'sampled-splits', splits: sampled, tokens: r.tokens, seconds: (performance.now() - t0) / 1000 },
  };
}

/**
 * The codecs of `o` that lose enough to be run: on the float embedding's output (split 0), an error of at
 * least NEAR_LOSSLESS of the lossiest codec's (lossless codecs never).
 */
async function lossyCodecs(pkg: ModelPackage, windows: number[][], o: AccuracyOptions): Promise<string[]> {
  const D = pkg.config.dim;
  // the embedding's output once per window, every codec's round trip on it
  const emb = await SegmentRuntime.create(pkg, 0, 0, { embed: true, head: false, cache: false });
  const rows: Float32Array[] = [];
  try {
    for (const ids of windows) rows.push((await emb.run(ids.slice(0, -1), ids.length - 1, { keepCache: false })).data);
  } finally {
    await emb.release();
  }
  const errors = new Map<string, number>();
  for (const spec of o.codecs) {
    const meter = wireMeter(o, spec, 0);
    if (meter.codec.lossless) continue;
    errors.set(spec, relativeError(rows.map((x, w) => meter.roundTrip(x, windows[w]!.length - 1, D)), rows));
  }
  const worst = Math.max(0, ...errors.values());
  return [...errors].filter(([, e]) => e > 0 && e >= NEAR_LOSSLESS * worst).map(([spec]) => spec);
}

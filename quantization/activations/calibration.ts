/**
 * Calibration of the split-point hidden state: statistics per split layer and the codec chosen for an
 * accuracy target, stored as calibration.json in the model package (or a file given by the user).
 * Pure TypeScript; reading and writing the file is the CLI's job (cli/calibration-io.ts).
 */
import { SplitLLMError } from '../../shared/errors.js';
import { Fields, failWith } from '../../shared/fields.js';
import { CodecContext, type CodecContextData, type ContextSet } from './context.js';

export interface SplitStats {
  values: number;
  tokens: number;
  /** quantiles of |x| */
  absQuantiles: Record<string, number>;
  /** fraction of values above each τ candidate */
  outlierRate: Record<string, number>;
  /** per-token (max − min) / rms: median and 90th percentile */
  tokenRangeOverRms: { p50: number; p90: number };
  /** channels with the largest |x| (channel, max |x|) */
  topChannels: [number, number][];
}

export interface SplitChoice {
  codec: string;
  bitsPerValue: number;
  ppl: number;
  pplIncrease: number;
}

export interface Calibration {
  format: 'splitllm-calibration';
  version: 1;
  model: string;
  text: string;
  windows: number;
  target: number;
  /** float32 ppl of the calibration windows, per split (equal up to float noise) */
  baselinePpl: number;
  splits: Record<string, SplitCalibration>;
}

export interface SplitCalibration {
  stats: SplitStats;
  /** the codec context `ts-tabq:cal=K` codes against */
  context?: CodecContextData;
  choice?: SplitChoice;
  tried?: SplitChoice[];
  /** least-squares fit of the ppl increase over the tried steps: increase ≈ a·step² */
  fit?: { a: number };
}

/** The contexts of a calibration: by split for encoders, by id for decoders. */
export class CalibrationContexts {
  private readonly bySplit = new Map<number, CodecContext>();
  readonly byId = new Map<number, CodecContext>();
  constructor(private readonly cal?: Calibration) {
    for (const [k, s] of Object.entries(cal?.splits ?? {})) {
      if (!s.context) continue;
      const ctx = new CodecContext(s.context);
      this.bySplit.set(Number(k), ctx);
      this.byId.set(ctx.id, ctx);
    }
  }
  /** the calibration these contexts come from (the browser edge is sent it) */
  get calibration(): Calibration | undefined {
    return this.cal;
  }
  context = (split: number): CodecContext | undefined => this.bySplit.get(split);
  defaultCodec = (split: number): string | undefined => this.cal?.splits[String(split)]?.choice?.codec;
  get calibrated(): boolean {
    return Object.values(this.cal?.splits ?? {}).some((s) => s.choice !== undefined);
  }
  get contexts(): ContextSet {
    return this.byId;
  }
}

/**
 * Fits increase ≈ a·step² through the origin to measured (step, increase) points and returns the coarsest
 * step of `ladder` whose predicted increase is within the target (the finest when none is): one
 * measurement at one step is noisy, the fit over several is not.
 */
export function fitStep(points: { step: number; increase: number }[], ladder: number[], target: number): { a: number; step: number } {
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += p.increase * p.step ** 2;
    den += p.step ** 4;
  }
  const a = den > 0 ? Math.max(num / den, 0) : 0;
  const sorted = [...ladder].sort((x, y) => y - x);
  const step = sorted.find((st) => a * st * st <= target) ?? sorted[sorted.length - 1]!;
  return { a, step };
}

export const QUANTILES = [0.5, 0.9, 0.99, 0.995, 0.999, 0.9999, 1];

export function splitStats(rows: Float32Array[], dim: number): SplitStats {
  let n = 0;
  for (const r of rows) n += r.length;
  // quantiles from a strided sample of at most 2^20 values
  const stride = Math.max(1, Math.floor(n / (1 << 20)));
  const sample: number[] = [];
  let i = 0;
  const chMax = new Float64Array(dim);
  const ratios: number[] = [];
  for (const r of rows) {
    for (let t = 0; t < r.length / dim; t++) {
      let mn = Infinity;
      let mx = -Infinity;
      let s2 = 0;
      for (let c = 0; c < dim; c++) {
        const v = r[t * dim + c]!;
        if (i++ % stride === 0) sample.push(Math.abs(v));
        if (Math.abs(v) > chMax[c]!) chMax[c] = Math.abs(v);
        if (v < mn) mn = v;
        if (v > mx) mx = v;
        s2 += v * v;
      }
      const rms = Math.sqrt(s2 / dim);
      if (rms > 0) ratios.push((mx - mn) / rms);
    }
  }
  const sorted = Float64Array.from(sample).sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const absQuantiles: Record<string, number> = {};
  for (const q of QUANTILES) absQuantiles[String(q)] = at(q);
  const outlierRate: Record<string, number> = {};
  for (const q of [0.99, 0.995, 0.999, 0.9999]) {
    const tau = at(q);
    let above = 0;
    for (const v of sorted) if (v > tau) above++;
    outlierRate[String(q)] = above / sorted.length;
  }
  ratios.sort((a, b) => a - b);
  const top = Array.from(chMax, (v, c) => [c, v] as [number, number]).sort((a, b) => b[1] - a[1]).slice(0, 8);
  return {
    values: n,
    tokens: n / dim,
    absQuantiles,
    outlierRate,
    tokenRangeOverRms: { p50: ratios[Math.floor(ratios.length / 2)] ?? 0, p90: ratios[Math.floor(ratios.length * 0.9)] ?? 0 },
    topChannels: top,
  };
}

/** Histogram of y that contexts carry: bins of 1/32 over [−16, 16). */
export const CONTEXT_HIST = { lo: -16, width: 1 / 32, bins: 1024 };

/**
 * The codec context of a split from calibration hidden states (rows of [tokens, dim], one per window):
 * per-channel mean and standard deviation, and the histogram of y = (x − mean) / std. The first token
 * of every window (BOS at position 0, the attention sink: an order of magnitude larger than the rest)
 * is left out: TS sends its values exactly anyway.
 */
export function contextData(rows: Float32Array[], dim: number): CodecContextData {
  const sum = new Float64Array(dim);
  const sum2 = new Float64Array(dim);
  let n = 0;
  for (const r of rows) {
    for (let o = dim; o < r.length; o += dim) {
      n++;
      for (let c = 0; c < dim; c++) {
        const v = r[o + c]!;
        sum[c] = sum[c]! + v;
        sum2[c] = sum2[c]! + v * v;
      }
    }
  }
  if (n === 0) throw new SplitLLMError('E_BAD_ARGUMENT', 'calibration needs windows of two or more tokens');
  const center = Array.from(sum, (s) => Math.fround(s / n));
  const scale = Array.from(sum2, (s2, c) => Math.fround(Math.sqrt(Math.max(s2 / n - (sum[c]! / n) ** 2, 1e-12))));
  const counts = new Array<number>(CONTEXT_HIST.bins).fill(0);
  const inv = scale.map((s) => 1 / s);
  for (const r of rows) {
    for (let o = dim; o < r.length; o += dim) {
      for (let c = 0; c < dim; c++) {
        const b = Math.floor(((r[o + c]! - center[c]!) * inv[c]! - CONTEXT_HIST.lo) / CONTEXT_HIST.width);
        if (b >= 0 && b < CONTEXT_HIST.bins) counts[b]!++;
      }
    }
  }
  // the sink: windows that start a paragraph start with BOS at position 0, whose state is the same in
  // all of them up to float noise (windows that continue a long paragraph start elsewhere)
  const sink = Array.from(rows[0]!.subarray(0, dim));
  let n0 = 0;
  for (const v of sink) n0 += v * v;
  let same = 0;
  for (const r of rows) {
    let d2 = 0;
    for (let c = 0; c < dim; c++) d2 += (r[c]! - sink[c]!) ** 2;
    if (d2 <= 1e-10 * n0) same++;
  }
  const data: CodecContextData = { dim, center, scale, hist: { lo: CONTEXT_HIST.lo, width: CONTEXT_HIST.width, counts } };
  if (rows.length > 1 && n0 > 0 && same >= rows.length / 2) data.sink = sink.map(Math.fround);
  return data;
}

/** The largest model dimension and histogram a calibration file may describe. */
const MAX_DIM = 1 << 20;
const MAX_BINS = 1 << 16;

/**
 * Checks a parsed calibration.json and builds a fresh `Calibration` from it (the file boundary; the
 * codec context's own numeric checks run when a `CodecContext` is made from it). Throws E_BAD_CONFIG
 * naming the file and the field.
 */
export function parseCalibration(raw: unknown, where: string): Calibration {
  const fail = failWith('E_BAD_CONFIG', "run 'splitllm calibrate' again");
  const f: Fields = Fields.of(raw, where, fail, 'a splitllm calibration file');
  if (f.value('format') !== 'splitllm-calibration' || f.value('version') !== 1) f.fail('is not a splitllm calibration file (format splitllm-calibration, version 1)');
  const choice = (c: Fields): SplitChoice => ({ codec: c.str('codec', 256), bitsPerValue: c.num('bitsPerValue', 0), ppl: c.num('ppl', 0), pplIncrease: c.num('pplIncrease') });
  const splits: Record<string, SplitCalibration> = {};
  const table = f.map('splits');
  for (const key of table.keys()) {
    if (!/^\d{1,4}$/.test(key)) table.fail(`split key ${JSON.stringify(key)} is not a layer index`);
    const s = table.map(key);
    const st: Fields = s.map('stats');
    const range = st.map('tokenRangeOverRms');
    const stats: SplitStats = {
      values: st.int('values', 0, Number.MAX_SAFE_INTEGER),
      tokens: st.int('tokens', 0, Number.MAX_SAFE_INTEGER),
      absQuantiles: st.numberRecord('absQuantiles', 0),
      outlierRate: st.numberRecord('outlierRate', 0, 1),
      tokenRangeOverRms: { p50: range.num('p50', 0), p90: range.num('p90', 0) },
      topChannels: st.array('topChannels', MAX_DIM).map((v, i): [number, number] => {
        const at = `topChannels[${i}]`;
        if (!Array.isArray(v) || v.length !== 2) return st.fail(`${at} must be [channel, max |x|]`);
        return [st.int(`${at}[0]`, 0, MAX_DIM, v[0]), st.num(`${at}[1]`, 0, Infinity, v[1])];
      }),
    };
    const out: SplitCalibration = { stats };
    const ctx = s.optMap('context');
    if (ctx) {
      const dim = ctx.int('dim', 1, MAX_DIM);
      const hist = ctx.map('hist');
      out.context = {
        dim,
        center: ctx.numArray('center', MAX_DIM),
        scale: ctx.numArray('scale', MAX_DIM),
        hist: { lo: hist.num('lo'), width: hist.positive('width'), counts: hist.intArray('counts', MAX_BINS, 0, Number.MAX_SAFE_INTEGER) },
      };
      if (ctx.has('sink')) out.context.sink = ctx.numArray('sink', MAX_DIM);
    }
    const chosen = s.optMap('choice');
    if (chosen) out.choice = choice(chosen);
    if (s.has('tried')) out.tried = s.array('tried', 1024).map((v, i) => choice(Fields.of(v, `${s.path}.tried[${i}]`, fail)));
    const fit = s.optMap('fit');
    if (fit) out.fit = { a: fit.num('a') };
    splits[key] = out;
  }
  return {
    format: 'splitllm-calibration',
    version: 1,
    model: f.str('model', 128),
    text: f.str('text', 4096, 0),
    windows: f.int('windows', 0, Number.MAX_SAFE_INTEGER),
    target: f.num('target'),
    baselinePpl: f.num('baselinePpl', 0),
    splits,
  };
}

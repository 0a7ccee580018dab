/**
 * Calibration of the split-point hidden state: statistics per split layer and the codec chosen for an
 * accuracy target, stored as calibration.json in the model package (or a file given by the user).
 * Pure TypeScript; reading and writing the file is the CLI's job (cli/calibration-io.ts).
 */
import { SplitLLMError } from '../../shared/errors.js';

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
  splits: Record<string, { stats: SplitStats; choice?: SplitChoice; tried?: SplitChoice[] }>;
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

/**
 * Resolves a codec spec for a split: a bare "ts-tabq" takes the calibrated choice for that split when
 * there is one; any other spec is used as written.
 */
export function resolveCodecSpec(spec: string, split: number, cal?: Calibration): { spec: string; calibrated: boolean } {
  const bare = spec.trim().toLowerCase();
  if ((bare === 'ts-tabq' || bare === 'default') && cal?.splits[String(split)]?.choice) {
    return { spec: cal.splits[String(split)]!.choice!.codec, calibrated: true };
  }
  if (bare === 'default') throw new SplitLLMError('E_CODEC_SPEC', `no calibrated codec for split ${split}: run 'splitllm calibrate' or name a codec`);
  return { spec, calibrated: false };
}

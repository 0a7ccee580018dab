/**
 * Synthetic planning problems shaped like real models, for tests and bench/planner: latency that scales
 * with weight bytes, accuracy that worsens with fewer bits and more quantized layers, six codec settings.
 */
import { rng } from '../shared/random.js';
import { WEIGHT_BITS } from '../shared/precision.js';
import type { ShapeConfig } from '../quantization/weights/memory.js';
import type { AccuracyProfile, ComputeProfile, Problem } from './types.js';

export const ALL_BITS: number[] = [...WEIGHT_BITS];
export const CODEC_SETTINGS = ['fp32', 'fp16', 'int8', 'ts-tabq:eps=0.05', 'ts-tabq:eps=0.1', 'ts-tabq:budget=3'];
const CODEC_BITS = [32, 16, 8.5, 6, 4.5, 3];
const CODEC_LOSS = [0, 0, 0.0005, 0.002, 0.006, 0.02];
const BITS_LOSS: Record<number, number> = { 2: 0.9, 3: 0.45, 4: 0.08, 8: 0.002, 16: 0, 32: 0 };

export function syntheticProblem(model: ShapeConfig & { hash: string }, seed = 1): Problem {
  const next = rng(seed);
  const L = model.nLayers;
  const layerMs = (scale: number): Record<string, number> => {
    const r: Record<string, number> = {};
    for (const b of ALL_BITS) r[String(b)] = scale * (0.25 + (b === 3 ? 4 : b) / 32) * (0.9 + 0.2 * next());
    return r;
  };
  const edge: ComputeProfile = { model: model.hash, layerDecodeMs: layerMs(8), embedMs: 0.3, headMs: 6, baselineBytes: 80e6 };
  const cloud: ComputeProfile = { model: model.hash, layerDecodeMs: layerMs(1), embedMs: 0.05, headMs: 1, baselineBytes: 200e6 };
  const accuracy: AccuracyProfile = { model: model.hash, weights: {}, codecs: {} };
  for (let split = 0; split <= L; split++) {
    for (const f of ALL_BITS) for (const b of ALL_BITS) accuracy.weights[`${split}/${f}/${b}`] = (BITS_LOSS[f]! * split + BITS_LOSS[b]! * (L - split)) / L;
    CODEC_SETTINGS.forEach((c, i) => {
      accuracy.codecs[`${split}/${c}`] = { pplIncrease: CODEC_LOSS[i]! * (1 + 0.3 * next()), bitsPerValue: CODEC_BITS[i]! };
    });
  }
  return {
    model,
    edge,
    cloud,
    link: { rttMs: 40, bytesPerSec: 10e6 / 8 },
    accuracy,
    budgets: { edgeMemory: 1.2e9, latencyMs: 150, maxPplIncrease: 0.01 },
    candidates: { splits: Array.from({ length: L + 1 }, (_, i) => i), bits: ALL_BITS, codecs: CODEC_SETTINGS, seqLens: [128, 256, 384, 512, 768, 1024, 1280, 1536, 1792, 2048] },
  };
}

/**
 * Exact memory accounting of a segment's weights, as the segment builder lays them out, and of its KV
 * cache per token. The planner calls these; tests hold them to the builder's own byte counts.
 */
import { blockwiseBytes } from './blockwise.js';

/** The parts of a model config the accounting needs (structurally a models/ ModelConfig). */
export interface ShapeConfig {
  dim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  ffnDim: number;
  vocabSize: number;
  maxSeq: number;
  tiedEmbeddings: boolean;
  qkvBias: boolean;
}

export type Strategy = 'rtn' | 'awq' | 'smoothquant';

export interface SegmentBytes {
  linear: number;
  embedding: number;
  head: number;
  norms: number;
  rope: number;
  other: number;
  total: number;
  /** KV cache bytes per token of sequence (float32 keys and values of the segment's layers) */
  kvPerToken: number;
}

/**
 * Bytes of one linear layer's weights [N, K] at a precision. `afterNorm`: the layer reads an RMSNorm
 * (q, k, v, gate, up), into which SmoothQuant folds its smoothing vector instead of storing it.
 */
export function linearBytes(N: number, K: number, bits: number, blockSize: number, strategy: Strategy = 'rtn', afterNorm = false): number {
  if (bits === 32) return N * K * 4;
  if (bits === 16) return N * K * 2;
  if (strategy === 'smoothquant') return N * K + N * 4 + (afterNorm ? 0 : K * 4); // int8 codes, per-row scales, smoothing vector
  return blockwiseBytes(N, K, bits, blockSize) + (strategy === 'awq' ? K * 4 : 0);
}

export function segmentBytes(
  c: ShapeConfig,
  from: number,
  to: number,
  opts: { embed?: boolean; head?: boolean; bitsOf: (layer: number) => number; blockSize?: number; strategy?: Strategy },
): SegmentBytes {
  const embed = opts.embed ?? from === 0;
  const head = opts.head ?? to === c.nLayers;
  const bs = opts.blockSize ?? 32;
  const qd = c.nHeads * c.headDim;
  const kvd = c.nKvHeads * c.headDim;
  let linear = 0;
  let norms = 0;
  let other = 0;
  for (let i = from; i < to; i++) {
    const b = opts.bitsOf(i);
    const st = opts.strategy ?? 'rtn';
    linear +=
      linearBytes(qd, c.dim, b, bs, st, true) + 2 * linearBytes(kvd, c.dim, b, bs, st, true) + linearBytes(c.dim, qd, b, bs, st) +
      2 * linearBytes(c.ffnDim, c.dim, b, bs, st, true) + linearBytes(c.dim, c.ffnDim, b, bs, st);
    norms += 2 * c.dim * 4;
    if (c.qkvBias) other += (qd + 2 * kvd) * 4;
  }
  const embedding = embed || (head && c.tiedEmbeddings) ? c.vocabSize * c.dim * 4 : 0;
  const headBytes = head ? c.dim * 4 + (c.tiedEmbeddings ? 0 : c.vocabSize * c.dim * 4) : 0;
  const rope = to > from ? 2 * c.maxSeq * (c.headDim / 2) * 4 : 0;
  return {
    linear,
    embedding,
    head: headBytes,
    norms,
    rope,
    other,
    total: linear + embedding + headBytes + norms + rope + other,
    kvPerToken: (to - from) * 2 * kvd * 4,
  };
}

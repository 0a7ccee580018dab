/**
 * Exact memory accounting of a segment's weights, as the segment builder lays them out, and of its KV
 * cache per token. The planner calls these; tests hold them to the builder's own byte counts.
 */
import { type DecoderShape, layerLinears } from '../../shared/decoder.js';
import { blockwiseBytes, kBlocks } from './blockwise.js';

/** The parts of a model config the accounting needs (the decoder block's shape; a models/ ModelConfig is one). */
export type ShapeConfig = DecoderShape;

/** Bytes of one quantized linear [N, K] at `bits` (a weight strategy's accounting; default: blockwise RTN). */
export type QuantizedBytes = (N: number, K: number, bits: number, blockSize: number, afterNorm: boolean) => number;

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
 * Bytes of one linear layer's weights [N, K] at a precision: float at 16 and 32 bits, else what the
 * strategy's accounting says. `afterNorm`: the layer reads an RMSNorm (q, k, v, gate, up).
 */
export function linearBytes(N: number, K: number, bits: number, blockSize: number, quantized: QuantizedBytes = blockwiseBytes, afterNorm = false): number {
  if (bits === 32) return N * K * 4;
  if (bits === 16) return N * K * 2;
  return quantized(N, K, bits, blockSize, afterNorm);
}

export function segmentBytes(
  c: ShapeConfig,
  from: number,
  to: number,
  opts: { embed?: boolean; head?: boolean; bitsOf: (layer: number) => number; blockSize?: number; quantized?: QuantizedBytes; embedBits?: number; headBits?: number },
): SegmentBytes {
  const embed = opts.embed ?? from === 0;
  const head = opts.head ?? to === c.nLayers;
  const bs = opts.blockSize ?? 32;
  const kvd = c.nKvHeads * c.headDim;
  let linear = 0;
  let norms = 0;
  let other = 0;
  for (let i = from; i < to; i++) {
    const b = opts.bitsOf(i);
    for (const l of layerLinears(c, i)) {
      linear += linearBytes(l.out, l.in, b, bs, opts.quantized, l.norm !== undefined);
      if (l.bias) other += l.out * 4;
    }
    norms += 2 * c.dim * 4;
  }
  // a quantized embedding is held as codes; a float tied head in the same segment still needs the float
  // table, a quantized head (RTN blockwise, whatever the layers' strategy) has initializers of its own
  const embedBits = embed ? (opts.embedBits ?? 32) : 32;
  const headBits = opts.headBits ?? 32;
  const floatHead = head && headBits === 32;
  const embedding = (embed ? embeddingBytes(c.vocabSize, c.dim, embedBits, 32) : 0) + ((floatHead && c.tiedEmbeddings && (!embed || embedBits < 32)) ? c.vocabSize * c.dim * 4 : 0);
  const headBytes = head ? c.dim * 4 + (floatHead ? (c.tiedEmbeddings ? 0 : c.vocabSize * c.dim * 4) : linearBytes(c.vocabSize, c.dim, headBits, bs)) : 0;
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

/** Bytes of a [V, D] token embedding at `bits` (models/onnx/embedding.ts): codes, float32 scales and one zero-point byte per row and block. */
export function embeddingBytes(V: number, D: number, bits: number, blockSize: number): number {
  if (bits >= 32) return V * D * 4;
  const kb = kBlocks(D, blockSize);
  return V * kb * ((blockSize * bits) / 8) + V * kb * 4 + V * kb;
}

/**
 * Exact memory accounting of a segment's weights, as the segment builder lays them out, and of its KV
 * cache per token. The planner calls these; tests hold them to the builder's own byte counts.
 */
import { type DecoderShape, layerLinears } from '../../shared/decoder.js';
import { blockwiseBytes, kBlocks } from './blockwise.js';

/**
 * The parts of a model config the accounting needs: the decoder block's shape (a models/ ModelConfig is
 * one) and how many bytes a value of the float token embedding takes as a segment holds it — 2 where the
 * package stores it as bf16/f16 (gathered, then cast: models/onnx/segment.ts), 4 (the default) where it is
 * float32 or a float32 tied head shares it. `ModelPackage.memoryShape` fills it in.
 */
export type ShapeConfig = DecoderShape & { embedValueBytes?: number };

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
  // a float embedding keeps the package's stored type unless a float32 tied head in the segment shares it
  const sharedWithHead = floatHead && c.tiedEmbeddings;
  const floatEmbed = sharedWithHead ? c.vocabSize * c.dim * 4 : c.vocabSize * c.dim * (c.embedValueBytes ?? 4);
  const embedding = (embed ? (embedBits >= 32 ? floatEmbed : embeddingBytes(c.vocabSize, c.dim, embedBits, 32)) : 0) + ((sharedWithHead && (!embed || embedBits < 32)) ? c.vocabSize * c.dim * 4 : 0);
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
    kvPerToken: kvBytesPerToken(c, to - from),
  };
}

/** Bytes one position of KV cache takes in `layers` layers: float32 keys and values of every KV head (the one place this is counted). */
export function kvBytesPerToken(c: { nKvHeads: number; headDim: number }, layers: number): number {
  return layers * 2 * c.nKvHeads * c.headDim * 4;
}

/**
 * How a KV cache's buffers grow (models/runtime/kv-cache.ts reads these; the accounting bounds them): a
 * quarter more at a time, at least `KV_MIN_GROWTH` positions, the capacity a multiple of `KV_CAPACITY_STEP`.
 */
export const KV_MIN_GROWTH = 64;
export const KV_CAPACITY_STEP = 16;

/** Positions a KV cache has room for once `positions` have run, by that growth rule: at most this many. */
export function kvRoom(positions: number): number {
  if (positions <= 0) return 0;
  return Math.ceil((positions + Math.max(KV_MIN_GROWTH, Math.ceil(positions / 4))) / KV_CAPACITY_STEP) * KV_CAPACITY_STEP;
}

/**
 * The one memory rule of the planner and the edge: what a process holds to run `seg` with `positions`
 * positions cached — its weights once (a cached segment is loaded from its file: onnxruntime maps the
 * external data or repacks it, and keeps no second copy; measured at the Llama-3.2-1B shape, anonymous
 * memory = baseline + linear weights + RoPE tables within 1 MB), the KV cache with its growth room
 * (`kvRoom`), and one decode step's activations. The runtime's own memory (Node, onnxruntime, the
 * tokenizer) is not in it: the planner adds its measured baseline on both sides of the budget.
 */
export function heldBytes(c: ShapeConfig, seg: SegmentBytes, positions: number): number {
  const buffers = 4 * c.dim * 4 + 4 * c.ffnDim * 4; // one decode step's activations, a few live at once
  return seg.total + kvRoom(positions) * seg.kvPerToken + buffers;
}

/** Bytes of a [V, D] token embedding at `bits` (models/onnx/embedding.ts): codes, float32 scales and one zero-point byte per row and block. */
export function embeddingBytes(V: number, D: number, bits: number, blockSize: number): number {
  if (bits >= 32) return V * D * 4;
  const kb = kBlocks(D, blockSize);
  return V * kb * ((blockSize * bits) / 8) + V * kb * 4 + V * kb;
}

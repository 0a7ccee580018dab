/**
 * A quantized token embedding: the [V, D] table as blockwise codes (the weights' own quantizer, per row
 * and block of `blockSize` values: scale and zero point), gathered by token id and dequantized in the
 * graph with plain ONNX ops (Gather, BitShift, Cast, Sub, Mul), so it runs on onnxruntime-node and -web
 * alike. 8 bits keep one code per byte; 4 bits two, low nibble first, unpacked by shifts. The edge holds a
 * quarter (8-bit) or an eighth (4-bit) of the float table's bytes, plus the scales.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { kBlocks, quantizeBlockwiseRows } from '../../quantization/weights/blockwise.js';
export { embeddingBytes } from '../../quantization/weights/memory.js';
import { DT, type GraphBuilder } from './graph.js';
import type { RowPieces } from './segment.js';

/** The precisions an embedding may take (32: float). */
export const EMBED_BITS = [4, 8, 32] as const;

export function checkEmbedBits(bits: number): void {
  if (!EMBED_BITS.some((b) => b === bits)) throw new SplitLLMError('E_BAD_ARGUMENT', `embedding bits ${bits} are not supported: use one of ${EMBED_BITS.join(', ')}`);
}

/**
 * The table: the float table itself, or its rows read a piece at a time (a 1B model's float32 table is
 * 1 GB; its bf16 pieces are quantized without ever holding it).
 */
export type EmbeddingRows = Float32Array | RowPieces;

/** Rows per piece quantized at once: 16 MiB of float32 at D = 1024. */
const PIECE_VALUES = 4 << 20;

/** Emits the gather of `ids` from the table quantized at `bits`: a [..ids, D] float tensor. */
export function quantizedEmbedding(g: GraphBuilder, name: string, table: EmbeddingRows, V: number, D: number, bits: number, blockSize: number, ids: string): string {
  checkEmbedBits(bits);
  const kb = kBlocks(D, blockSize);
  const per = (blockSize * bits) / 8;
  // rows quantize independently: a piece of the table at a time (never the float32 table whole)
  const rowsPer = Math.max(1, Math.floor(PIECE_VALUES / D));
  const { packed, zp: zps, scales } = quantizeBlockwiseRows(typeof table === 'function' ? table(rowsPer) : [table], V, D, bits, blockSize, `embedding ${name}`);
  const codes = g.op('Gather', [g.initializer(`${name}.q${bits}`, DT.UINT8, [V, kb, per], packed), ids], { axis: 0 });
  let values: string;
  if (bits === 8) values = codes;
  else {
    // two codes per byte, the first in the low nibble: hi = x >> 4, lo = x − (hi << 4), interleaved lo, hi
    const four = g.initializer(`${name}.four`, DT.UINT8, [], Uint8Array.of(4));
    const hi = g.op('BitShift', [codes, four], { direction: 'RIGHT' });
    const lo = g.op('Sub', [codes, g.op('BitShift', [hi, four], { direction: 'LEFT' })]);
    const axis = g.i64([-1]);
    const pairs = g.op('Concat', [g.op('Unsqueeze', [lo, axis]), g.op('Unsqueeze', [hi, axis])], { axis: -1 });
    values = g.op('Reshape', [pairs, g.i64([0, 0, kb, blockSize])]);
  }
  const zp = g.op('Gather', [g.initializer(`${name}.zp`, DT.UINT8, [V, kb, 1], zps), ids], { axis: 0 });
  const scale = g.op('Gather', [g.f32(`${name}.scales`, [V, kb, 1], scales), ids], { axis: 0 });
  const centered = g.op('Sub', [g.op('Cast', [values], { to: DT.FLOAT }), g.op('Cast', [zp], { to: DT.FLOAT })]);
  const rows = g.op('Reshape', [g.op('Mul', [centered, scale]), g.i64([0, 0, kb * blockSize])]);
  // a last block past D holds padding
  return kb * blockSize === D ? rows : g.op('Slice', [rows, g.i64([0]), g.i64([D]), g.i64([2])]);
}

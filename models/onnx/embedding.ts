/**
 * A quantized token embedding: the [V, D] table as blockwise codes (the weights' own quantizer, per row
 * and block of `blockSize` values: scale and zero point), gathered by token id and dequantized in the
 * graph with plain ONNX ops (Gather, BitShift, Cast, Sub, Mul), so it runs on onnxruntime-node and -web
 * alike. 8 bits keep one code per byte; 4 bits two, low nibble first, unpacked by shifts. The edge holds a
 * quarter (8-bit) or an eighth (4-bit) of the float table's bytes, plus the scales.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { kBlocks, quantizeBlockwise } from '../../quantization/weights/blockwise.js';
export { embeddingBytes } from '../../quantization/weights/memory.js';
import { DT, type GraphBuilder } from './graph.js';

/** The precisions an embedding may take (32: float). */
export const EMBED_BITS = [4, 8, 32] as const;

export function checkEmbedBits(bits: number): void {
  if (!EMBED_BITS.some((b) => b === bits)) throw new SplitLLMError('E_BAD_ARGUMENT', `embedding bits ${bits} are not supported: use one of ${EMBED_BITS.join(', ')}`);
}

/**
 * The table's rows in order, in pieces of at most `rows` rows (the last may be shorter): the float table
 * itself, or a reader that widens one piece of the stored table at a time (a 1B model's float32 table is
 * 1 GB; its bf16 pieces are quantized without ever holding it).
 */
export type EmbeddingRows = Float32Array | ((rows: number) => Iterable<Float32Array>);

/** Rows per piece quantized at once: 16 MiB of float32 at D = 1024. */
const PIECE_VALUES = 4 << 20;

/** Emits the gather of `ids` from the table quantized at `bits`: a [..ids, D] float tensor. */
export function quantizedEmbedding(g: GraphBuilder, name: string, table: EmbeddingRows, V: number, D: number, bits: number, blockSize: number, ids: string): string {
  checkEmbedBits(bits);
  const kb = kBlocks(D, blockSize);
  const per = (blockSize * bits) / 8;
  // rows are quantized independently: piece by piece into the whole table's codes, zero points and scales
  const packed = new Uint8Array(V * kb * per);
  const zps = new Uint8Array(V * kb);
  const scales = new Float32Array(V * kb);
  const rowsPer = Math.max(1, Math.floor(PIECE_VALUES / D));
  let row = 0;
  for (const piece of typeof table === 'function' ? table(rowsPer) : [table]) {
    const n = piece.length / D;
    if (!Number.isInteger(n) || row + n > V) throw new SplitLLMError('E_BAD_PACKAGE', `embedding ${name}: a piece of ${piece.length} values does not hold whole rows of ${D} within ${V} rows`);
    const q = quantizeBlockwise(piece, n, D, bits, blockSize);
    packed.set(q.packed, row * kb * per);
    zps.set(q.zp, row * kb);
    scales.set(q.scales, row * kb);
    row += n;
  }
  if (row !== V) throw new SplitLLMError('E_BAD_PACKAGE', `embedding ${name} holds ${row} rows, the model ${V}`);
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

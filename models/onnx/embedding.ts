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

/** Emits the gather of `ids` from the table quantized at `bits`: a [..ids, D] float tensor. */
export function quantizedEmbedding(g: GraphBuilder, name: string, table: Float32Array, V: number, D: number, bits: number, blockSize: number, ids: string): string {
  checkEmbedBits(bits);
  const q = quantizeBlockwise(table, V, D, bits, blockSize);
  const kb = kBlocks(D, blockSize);
  const per = (blockSize * bits) / 8;
  const codes = g.op('Gather', [g.initializer(`${name}.q${bits}`, DT.UINT8, [V, kb, per], q.packed), ids], { axis: 0 });
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
  const zp = g.op('Gather', [g.initializer(`${name}.zp`, DT.UINT8, [V, kb, 1], q.zp), ids], { axis: 0 });
  const scales = g.op('Gather', [g.f32(`${name}.scales`, [V, kb, 1], q.scales), ids], { axis: 0 });
  const centered = g.op('Sub', [g.op('Cast', [values], { to: DT.FLOAT }), g.op('Cast', [zp], { to: DT.FLOAT })]);
  const rows = g.op('Reshape', [g.op('Mul', [centered, scales]), g.i64([0, 0, kb * blockSize])]);
  // a last block past D holds padding
  return kb * blockSize === D ? rows : g.op('Slice', [rows, g.i64([0]), g.i64([D]), g.i64([2])]);
}

/**
 * Blockwise weight quantization in onnxruntime's MatMulNBits layout (docs/FORMATS.md, "Weights").
 *
 * A linear layer's weight W [N, K] (out, in) is cut along K into blocks of `blockSize`; each block of each
 * row gets a float32 scale and an integer zero point: code = clamp(round(w / scale) + zp, 0, 2^b − 1),
 * ŵ = (code − zp) · scale. Blocks past K are padded with the zero point (they dequantize to 0).
 * MatMulNBits on CPU runs 2, 4 and 8 bits; 3-bit codes are stored in the 4-bit container (8 of its 16
 * levels), so 3 bits cost the memory of 4 — said so wherever bytes are reported.
 */
import { SplitLLMError } from '../../shared/errors.js';

import { BLOCK_SIZES, isBlockSize, isWeightBits, WEIGHT_BITS } from '../../shared/precision.js';
export { BLOCK_SIZES, WEIGHT_BITS, type WeightBits } from '../../shared/precision.js';

/** Bits a code occupies in memory (the kernel's container width). */
export function containerBits(bits: number): number {
  return bits === 3 ? 4 : bits;
}

export function checkWeightBits(bits: number, blockSize = 32): void {
  if (!isWeightBits(bits)) {
    throw new SplitLLMError('E_BAD_ARGUMENT', `weight bits ${bits} are not supported: use one of ${WEIGHT_BITS.join(', ')}`);
  }
  if (!isBlockSize(blockSize)) {
    throw new SplitLLMError('E_BAD_ARGUMENT', `block size ${blockSize} is not supported: use one of ${BLOCK_SIZES.join(', ')}`);
  }
}

export interface BlockQuantized {
  N: number;
  K: number;
  bits: number;
  blockSize: number;
  /** [N, kBlocks, blockSize · container / 8] */
  packed: Uint8Array;
  /** [N · kBlocks] */
  scales: Float32Array;
  /** [N · ⌈kBlocks · container / 8⌉], packed like the codes */
  zeroPoints: Uint8Array;
  /** the unpacked codes and zero points, kept for dequantization and tests */
  codes: Uint8Array;
  zp: Uint8Array;
}

export function kBlocks(K: number, blockSize: number): number {
  return Math.ceil(K / blockSize);
}

/** Exact bytes of a MatMulNBits weight: codes + float32 scales + packed zero points. */
export function blockwiseBytes(N: number, K: number, bits: number, blockSize: number): number {
  const c = containerBits(bits);
  const kb = kBlocks(K, blockSize);
  return N * kb * ((blockSize * c) / 8) + N * kb * 4 + N * Math.ceil((kb * c) / 8);
}

/**
 * Quantizes W [N, K]. `clip` (optional, per row·block) shrinks the block's [min, max] range before the
 * scale is chosen (AWQ's clip search); `inputScale` (optional, per K) multiplies the columns first.
 */
/**
 * Where quantization's output arrays come from: fresh by default; a segment build that writes each
 * initializer out as soon as it is made hands buffers it reuses (fresh memory is slow to touch: on these
 * machines writing the codes of a 1B model's linears into new arrays cost more than computing them).
 * Every byte of what it returns is overwritten.
 */
export type Alloc = (tag: string, bytes: number) => Uint8Array;
const fresh: Alloc = (_tag, bytes) => new Uint8Array(bytes);

export function quantizeBlockwise(w: Float32Array, N: number, K: number, bits: number, blockSize: number, clip?: Float32Array, alloc: Alloc = fresh): BlockQuantized {
  checkWeightBits(bits, blockSize);
  if (bits > 8) throw new SplitLLMError('E_BAD_ARGUMENT', `blockwise quantization takes 2–8 bits, not ${bits}`);
  if (w.length !== N * K) throw new SplitLLMError('E_BAD_ARGUMENT', `weight has ${w.length} values, [${N}, ${K}] needs ${N * K}`);
  const kb = kBlocks(K, blockSize);
  const levels = (1 << bits) - 1;
  const codes = alloc('codes', N * kb * blockSize);
  const zp = alloc('zp', N * kb);
  const sb = alloc('scales', N * kb * 4);
  const scales = new Float32Array(sb.buffer, sb.byteOffset, N * kb);
  // one pass per block for its range, one for its codes (a 1B model's linears are ~1.2e9 values: the
  // loops stay on plain locals)
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let b = 0; b < kb; b++) {
      const k0 = row + b * blockSize;
      const k1 = row + Math.min(K, (b + 1) * blockSize);
      let mn = 0; // the range always holds 0, so zero weights stay exact and zp fits the code range
      let mx = 0;
      for (let k = k0; k < k1; k++) {
        const v = w[k]!;
        if (v < mn) mn = v;
        else if (v > mx) mx = v;
      }
      const r = clip ? clip[n * kb + b]! : 1;
      // a block already on a symmetric grid (a GGUF Q4_0 / Q8_0 block, dequantized) keeps its exact values
      const grid = r === 1 ? symmetricGrid(w, k0, k1, Math.max(-mn, mx), bits) : undefined;
      mn *= r;
      mx *= r;
      const scale = grid ? grid.scale : mx > mn ? Math.fround((mx - mn) / levels) : 1;
      const z = grid ? grid.zp : Math.min(levels, Math.max(0, Math.round(-mn / scale)));
      scales[n * kb + b] = scale;
      zp[n * kb + b] = z;
      let j = (n * kb + b) * blockSize;
      const end = j + blockSize;
      for (let k = k0; k < k1; k++, j++) {
        // floor(x + 0.5) is Math.round (ties up) for every x here, and V8 runs it ~4× faster on random data
        const q = Math.floor(w[k]! / scale + 0.5) + z;
        codes[j] = q < 0 ? 0 : q > levels ? levels : q;
      }
      for (; j < end; j++) codes[j] = z;
    }
  }
  const c = containerBits(bits);
  const blob = (blockSize * c) / 8;
  // 8-bit codes are their own packing
  const packed = c === 8 ? codes : alloc('packed', N * kb * blob);
  if (c !== 8) packLowFirst(codes, c, packed, blockSize, N * kb, blob);
  const zpRow = Math.ceil((kb * c) / 8);
  const zeroPoints = alloc('zeroPoints', N * zpRow);
  for (let n = 0; n < N; n++) packLowFirst(zp.subarray(n * kb, (n + 1) * kb), c, zeroPoints.subarray(n * zpRow, (n + 1) * zpRow), kb, 1, zpRow);
  return { N, K, bits, blockSize, packed, scales, zeroPoints, codes, zp };
}

/**
 * W [N, K] quantized from its rows given a piece at a time (pieces of whole rows, in order, N in all):
 * rows quantize independently, so the result equals `quantizeBlockwise` of the whole matrix, while only one
 * piece is ever held in float32. Returns what the callers emit: the packed codes, the scales, the packed zero
 * points (MatMulNBits) and the unpacked ones per block (a quantized embedding's gather).
 */
export function quantizeBlockwiseRows(pieces: Iterable<Float32Array>, N: number, K: number, bits: number, blockSize: number, what = 'the weight'): Pick<BlockQuantized, 'packed' | 'scales' | 'zeroPoints' | 'zp'> {
  const kb = kBlocks(K, blockSize);
  const c = containerBits(bits);
  const blob = (blockSize * c) / 8;
  const zpRow = Math.ceil((kb * c) / 8);
  const packed = new Uint8Array(N * kb * blob);
  const scales = new Float32Array(N * kb);
  const zeroPoints = new Uint8Array(N * zpRow);
  const zp = new Uint8Array(N * kb);
  let row = 0;
  for (const piece of pieces) {
    const n = piece.length / K;
    if (!Number.isInteger(n) || row + n > N) throw new SplitLLMError('E_BAD_PACKAGE', `${what}: a piece of ${piece.length} values does not hold whole rows of ${K} within ${N} rows`);
    const q = quantizeBlockwise(piece, n, K, bits, blockSize);
    packed.set(q.packed, row * kb * blob);
    scales.set(q.scales, row * kb);
    zeroPoints.set(q.zeroPoints, row * zpRow);
    zp.set(q.zp, row * kb);
    row += n;
  }
  if (row !== N) throw new SplitLLMError('E_BAD_PACKAGE', `${what} holds ${row} rows, the model ${N}`);
  return { packed, scales, zeroPoints, zp };
}

/**
 * When every value of w[k0, k1) is an integer multiple of one scale with at most 2^(b−1) steps on one side
 * (amax / 2^(b−1) or amax / (2^(b−1) − 1): the grids of ggml's Q4_0 and Q8_0), the scale and zero point
 * that reproduce the values exactly; undefined otherwise (the min/max fit applies).
 */
function symmetricGrid(w: Float32Array, k0: number, k1: number, amax: number, bits: number): { scale: number; zp: number } | undefined {
  if (!(amax > 0)) return undefined;
  const half = 1 << (bits - 1);
  for (let steps = half; steps >= half - 1; steps--) {
    const scale = Math.fround(amax / steps);
    let lo = 0;
    let hi = 0;
    let exact = true;
    for (let k = k0; k < k1; k++) {
      const q = Math.floor(w[k]! / scale + 0.5);
      if (Math.fround(q * scale) !== w[k]) {
        exact = false;
        break;
      }
      if (q < lo) lo = q;
      if (q > hi) hi = q;
    }
    if (!exact) continue;
    if (lo >= -half && hi <= half - 1) return { scale, zp: half };
    if (lo >= -(half - 1) && hi <= half) return { scale, zp: half - 1 };
  }
  return undefined;
}

/** Packs `rows` runs of `count` codes of `bits` bits, low bits first, each run into `stride` bytes. */
function packLowFirst(codes: Uint8Array, bits: number, out: Uint8Array, count: number, rows: number, stride: number): void {
  if (bits === 4 && count % 2 === 0 && stride === count / 2) {
    // the common case, two codes a byte: one pass over the whole run
    for (let i = 0, o = 0, n = rows * count; i < n; i += 2, o++) out[o] = codes[i]! | (codes[i + 1]! << 4);
    return;
  }
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    let nb = 0;
    let o = r * stride;
    for (let i = 0; i < count; i++) {
      acc |= codes[r * count + i]! << nb;
      nb += bits;
      while (nb >= 8) {
        out[o++] = acc & 255;
        acc >>>= 8;
        nb -= 8;
      }
    }
    if (nb > 0) out[o] = acc & 255;
  }
}

/** ŵ [N, K] of a quantized weight. */
export function dequantizeBlockwise(q: BlockQuantized): Float32Array {
  const { N, K, blockSize } = q;
  const kb = kBlocks(K, blockSize);
  const w = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / blockSize);
      w[n * K + k] = (q.codes[(n * kb + b) * blockSize + (k % blockSize)]! - q.zp[n * kb + b]!) * q.scales[n * kb + b]!;
    }
  }
  return w;
}

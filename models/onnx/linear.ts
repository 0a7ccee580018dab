/**
 * Linear-layer emitters for each weight precision: the segment builder calls `linear(g, x, w)` and the
 * emitter decides how y = x · Wᵀ runs. float32 → MatMul; float16 → MatMul in half precision (weights
 * stay half in memory); 2–8 bits → com.microsoft MatMulNBits; optional per-input-channel scales s (AWQ)
 * quantize W·diag(s) and multiply x by 1/s first.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { f32ArrayToF16 } from '../../shared/tensor.js';
import { checkWeightBits, quantizeBlockwise, quantizeBlockwiseRows, type BlockQuantized } from '../../quantization/weights/blockwise.js';
import { int8PerChannel } from '../../quantization/weights/smoothquant.js';
import { DT, type GraphBuilder } from './graph.js';
import { float32Linear, type LinearEmitter, type LinearWeight, type RowPieces } from './segment.js';

/**
 * A digest of names and float arrays (FNV-1a, two 32-bit lanes): an emitter whose output depends on
 * calibrated values says which in its id, so that the segment cache keys it by them.
 */
export function digestArrays(items: (string | Float32Array | undefined)[]): string {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  const mix = (x: number): void => {
    a = Math.imul(a ^ x, 0x01000193) >>> 0;
    b = Math.imul(b ^ x, 0x5bd1e995) >>> 0;
  };
  for (const it of items) {
    if (it === undefined) mix(0xfffffffe);
    else if (typeof it === 'string') for (let i = 0; i < it.length; i++) mix(it.charCodeAt(i));
    else {
      mix(it.length);
      const u = new Uint32Array(it.buffer, it.byteOffset, it.length);
      for (let i = 0; i < u.length; i++) mix(u[i]!);
    }
    mix(0xffffffff);
  }
  return a.toString(16).padStart(8, '0') + b.toString(16).padStart(8, '0');
}

export interface ChannelTransform {
  /** per input channel multiplier s: the weight is quantized as W·diag(s), x is multiplied by 1/s */
  scale?: Float32Array;
  /** per (row, block) range shrink ratio */
  clip?: Float32Array;
}

export const float16Linear: LinearEmitter = {
  id: 'fp16',
  stackable: true,
  linear(g, x, w) {
    const { outDim: O, inDim: I, data } = w;
    const t = new Float32Array(data.length);
    for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) t[i * O + o] = data[o * I + i]!;
    const h = g.op('Cast', [x], { to: DT.FLOAT16 });
    const y = g.op('MatMul', [h, g.initializer(`${w.name}.T.f16`, DT.FLOAT16, [I, O], f32ArrayToF16(t))]);
    return g.op('Cast', [y], { to: DT.FLOAT });
  },
};

/**
 * MatMulNBits' accuracy_level: 4 computes with int8-quantized activations (per block), onnxruntime's fast
 * path; 0 dequantizes to float32 and has no fast 8-bit kernel. Measured here: ~100M preset decode
 * 8-bit 95.7 → 11.1 ms/token, 4-bit 13.2 → 10.0 (float32 19.5); ppl change against level 0: default
 * model 8-bit −0.03%, 4-bit −0.01%; stories260K 8-bit +0.06%, 4-bit +0.02%, 3-bit +0.08%.
 */
export const NBITS_ACCURACY_LEVEL = 4;

/** `accuracyLevel` 0 computes exactly what the dequantized weights compute (the reference the tests check packing with). */
export function nbitsLinear(bits: number, blockSize: number, transforms?: Map<string, ChannelTransform>, accuracyLevel: 0 | 4 = NBITS_ACCURACY_LEVEL): LinearEmitter {
  checkWeightBits(bits, blockSize);
  if (bits > 8) throw new SplitLLMError('E_BAD_ARGUMENT', `MatMulNBits takes 2–8 bits, not ${bits}`);
  return {
    id: `nbits${bits}b${blockSize}${transforms ? `+t${digestArrays([...transforms].flatMap(([n, t]) => [n, t.scale, t.clip]))}` : ''}${accuracyLevel === NBITS_ACCURACY_LEVEL ? '' : `a${accuracyLevel}`}`,
    // blockwise quantization is per output row: stacked rows quantize as they would apart
    stackable: transforms === undefined,
    linear(g: GraphBuilder, x: string, w: LinearWeight): string {
      const tr = transforms?.get(w.name);
      let data = w.data;
      let input = x;
      if (tr?.scale) {
        const s = tr.scale;
        data = new Float32Array(w.data.length);
        for (let o = 0; o < w.outDim; o++) for (let i = 0; i < w.inDim; i++) data[o * w.inDim + i] = w.data[o * w.inDim + i]! * s[i]!;
        input = g.op('Mul', [x, g.f32(`${w.name}.inv_s`, [w.inDim], Float32Array.from(s, (v) => 1 / v))]);
      }
      return matMulNBits(g, input, w, quantizeBlockwise(data, w.outDim, w.inDim, bits, blockSize, tr?.clip, (tag, bytes) => g.reusable(tag, bytes)));
    },
    // per-row transforms (AWQ's) need the whole weight
    ...(transforms
      ? {}
      : {
          linearRows(g: GraphBuilder, x: string, w: Omit<LinearWeight, 'data'> & { rows: RowPieces }): string {
            const rowsPer = Math.max(1, Math.floor((4 << 20) / w.inDim));
            return matMulNBits(g, x, w, quantizeBlockwiseRows(w.rows(rowsPer), w.outDim, w.inDim, bits, blockSize, w.name));
          },
        }),
  };
  /** MatMulNBits of `input` against the quantized weight's initializers. */
  function matMulNBits(g: GraphBuilder, input: string, w: Omit<LinearWeight, 'data'>, q: Pick<BlockQuantized, 'packed' | 'scales' | 'zeroPoints'>): string {
    const kb = Math.ceil(w.inDim / blockSize);
    const container = bits === 3 ? 4 : bits;
    return g.op(
      'MatMulNBits',
      [
        input,
        g.initializer(`${w.name}.q${bits}`, DT.UINT8, [w.outDim, kb, (blockSize * container) / 8], q.packed),
        g.f32(`${w.name}.scales`, [w.outDim * kb], q.scales),
        g.initializer(`${w.name}.zp`, DT.UINT8, [q.zeroPoints.length], q.zeroPoints),
      ],
      { K: w.inDim, N: w.outDim, bits: container, block_size: blockSize, accuracy_level: accuracyLevel },
      { domain: 'com.microsoft' },
    );
  }
}

/** The emitter for a weight precision: 32 and 16 are float, 2–8 bits blockwise. */
export function linearFor(bits: number, blockSize = 32, transforms?: Map<string, ChannelTransform>): LinearEmitter {
  if (bits === 32) return float32Linear;
  if (bits === 16) return float16Linear;
  return nbitsLinear(bits, blockSize, transforms);
}

/**
 * W8A8 (SmoothQuant): x / s → DynamicQuantizeLinear (uint8, per tensor) → MatMulInteger with the int8
 * weight W·diag(s) (per output channel scales) → Cast → × x_scale × w_scale. Integer kernels do the
 * product. `smoothing` maps weight names to s; `normFolds` maps RMSNorm weight names to the s folded
 * into them, in which case the linears reading that norm (listed in `folded`) skip the division.
 */
export function w8a8Linear(smoothing: Map<string, Float32Array>, normFolds = new Map<string, Float32Array>(), folded = new Set<string>()): LinearEmitter {
  return {
    id: `w8a8+${digestArrays([...smoothing, ...normFolds].flatMap(([n, v]) => [n, v]).concat([...folded].sort()))}`,
    normScale: (name) => normFolds.get(name),
    linear(g, x, w) {
      const s = smoothing.get(w.name);
      let data = w.data;
      let input = x;
      if (s) {
        data = new Float32Array(w.data.length);
        for (let o = 0; o < w.outDim; o++) for (let i = 0; i < w.inDim; i++) data[o * w.inDim + i] = w.data[o * w.inDim + i]! * s[i]!;
        if (!folded.has(w.name)) input = g.op('Mul', [x, g.f32(`${w.name}.inv_s`, [w.inDim], Float32Array.from(s, (v) => 1 / v))]);
      }
      const { qT, scales } = int8PerChannel(data, w.outDim, w.inDim);
      const [xq, xs, xz] = g.opMulti('DynamicQuantizeLinear', [input], {}, { outputs: [g.fresh('xq'), g.fresh('xs'), g.fresh('xz')] });
      const acc = g.op('MatMulInteger', [xq!, g.initializer(`${w.name}.i8`, DT.INT8, [w.inDim, w.outDim], qT), xz!]);
      const y = g.op('Mul', [g.op('Cast', [acc], { to: DT.FLOAT }), xs!]);
      return g.op('Mul', [y, g.f32(`${w.name}.w_scale`, [w.outDim], scales)]);
    },
  };
}

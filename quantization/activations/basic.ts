/** Baseline codecs: fp32 (lossless), fp16, and int8 per-token symmetric blocks of 32 (like Q8_0). */
import { f16BitsToF32, f16Up, f32ToF16Bits } from '../../shared/tensor.js';
import type { Codec, CodecDefinition, Decoded, DecodeOptions } from './codec.js';
import { noParams } from './spec.js';
import { checkInput, corrupt, nonFinite, HEADER_BYTES, readHeader, writeHeader, type CodecId } from './format.js';

/** wire ids (header byte 3) of the basic codecs */
export const FP32_ID = 1;
export const FP16_ID = 2;
export const INT8_ID = 3;
const NAMES: Record<number, string> = { [FP32_ID]: 'fp32', [FP16_ID]: 'fp16', [INT8_ID]: 'int8' };

function expectCodec(bytes: Uint8Array, id: CodecId, opts?: DecodeOptions) {
  const h = readHeader(bytes, opts?.maxValues);
  if (h.codec !== id) throw corrupt(`codec id ${h.codec} where ${NAMES[id] ?? 'codec'} (${id}) was expected`);
  return h;
}

export class Fp32Codec implements Codec {
  readonly spec = 'fp32';
  readonly id = FP32_ID;
  readonly lossless = true;
  encode(x: Float32Array, tokens: number, dim: number): Uint8Array {
    checkInput(x, tokens, dim);
    const out = new Uint8Array(HEADER_BYTES + x.length * 4);
    writeHeader(out, this.id, tokens, dim);
    new Uint8Array(out.buffer, HEADER_BYTES).set(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
    return out;
  }
  decode(bytes: Uint8Array, opts?: DecodeOptions): Decoded {
    const { tokens, dim } = expectCodec(bytes, this.id, opts);
    const n = tokens * dim;
    if (bytes.length !== HEADER_BYTES + n * 4) throw corrupt(`fp32 payload is ${bytes.length - HEADER_BYTES} bytes, [${tokens}, ${dim}] needs ${n * 4}`);
    const x = new Float32Array(n);
    new Uint8Array(x.buffer).set(bytes.subarray(HEADER_BYTES));
    for (let i = 0; i < n; i++) if (x[i]! - x[i]! !== 0) throw nonFinite(`fp32 value ${i} is not finite`);
    return { x, tokens, dim };
  }
}

export class Fp16Codec implements Codec {
  readonly spec = 'fp16';
  readonly id = FP16_ID;
  readonly lossless = false;
  encode(x: Float32Array, tokens: number, dim: number): Uint8Array {
    checkInput(x, tokens, dim);
    const out = new Uint8Array(HEADER_BYTES + x.length * 2);
    writeHeader(out, this.id, tokens, dim);
    const v = new DataView(out.buffer);
    // values past the half range saturate at ±65504 instead of becoming infinite
    for (let i = 0; i < x.length; i++) v.setUint16(HEADER_BYTES + 2 * i, f32ToF16Bits(Math.max(-65504, Math.min(65504, x[i]!))), true);
    return out;
  }
  decode(bytes: Uint8Array, opts?: DecodeOptions): Decoded {
    const { tokens, dim } = expectCodec(bytes, this.id, opts);
    const n = tokens * dim;
    if (bytes.length !== HEADER_BYTES + n * 2) throw corrupt(`fp16 payload is ${bytes.length - HEADER_BYTES} bytes, [${tokens}, ${dim}] needs ${n * 2}`);
    const x = new Float32Array(n);
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) {
      const f = f16BitsToF32(v.getUint16(HEADER_BYTES + 2 * i, true));
      if (f - f !== 0) throw nonFinite(`fp16 value ${i} is not finite`);
      x[i] = f;
    }
    return { x, tokens, dim };
  }
}

const Q8_BLOCK = 32;

/** int8: per token, blocks of 32 channels (last block may be shorter), f16 scale d = max|x|/127, q = round(x/d). */
export class Int8Codec implements Codec {
  readonly spec = 'int8';
  readonly id = INT8_ID;
  readonly lossless = false;
  static payloadBytes(tokens: number, dim: number): number {
    return tokens * (Math.ceil(dim / Q8_BLOCK) * 2 + dim);
  }
  encode(x: Float32Array, tokens: number, dim: number): Uint8Array {
    checkInput(x, tokens, dim);
    const out = new Uint8Array(HEADER_BYTES + Int8Codec.payloadBytes(tokens, dim));
    writeHeader(out, this.id, tokens, dim);
    const v = new DataView(out.buffer);
    let p = HEADER_BYTES;
    for (let t = 0; t < tokens; t++) {
      for (let b0 = 0; b0 < dim; b0 += Q8_BLOCK) {
        const b1 = Math.min(dim, b0 + Q8_BLOCK);
        let amax = 0;
        for (let c = b0; c < b1; c++) amax = Math.max(amax, Math.abs(x[t * dim + c]!));
        let dBits = f16Up(amax / 127); // d ≥ amax/127: every q fits in [-127, 127]
        let d = f16BitsToF32(dBits);
        if (!Number.isFinite(d)) {
          dBits = 0x7bff; // largest finite half: values past 8.3e6 saturate
          d = 65504;
        }
        v.setUint16(p, dBits, true);
        p += 2;
        const inv = d > 0 ? 1 / d : 0;
        for (let c = b0; c < b1; c++) {
          const q = Math.max(-127, Math.min(127, Math.round(x[t * dim + c]! * inv)));
          v.setInt8(p++, q);
        }
      }
    }
    return out;
  }
  decode(bytes: Uint8Array, opts?: DecodeOptions): Decoded {
    const { tokens, dim } = expectCodec(bytes, this.id, opts);
    const need = Int8Codec.payloadBytes(tokens, dim);
    if (bytes.length !== HEADER_BYTES + need) throw corrupt(`int8 payload is ${bytes.length - HEADER_BYTES} bytes, [${tokens}, ${dim}] needs ${need}`);
    const x = new Float32Array(tokens * dim);
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let p = HEADER_BYTES;
    for (let t = 0; t < tokens; t++) {
      for (let b0 = 0; b0 < dim; b0 += Q8_BLOCK) {
        const b1 = Math.min(dim, b0 + Q8_BLOCK);
        const d = f16BitsToF32(v.getUint16(p, true));
        p += 2;
        if (!Number.isFinite(d)) throw nonFinite(`int8 block scale ${d} is not finite`);
        if (d < 0) throw corrupt(`int8 block scale ${d} is negative`);
        for (let c = b0; c < b1; c++) {
          const q = v.getInt8(p++);
          if (q === -128) throw corrupt('int8 value -128 is outside the symmetric range');
          x[t * dim + c] = q * d;
        }
      }
    }
    return { x, tokens, dim };
  }
}

function basic(name: string, summary: string, id: CodecId, make: () => Codec): CodecDefinition {
  return {
    names: [name],
    summary,
    decodes: [id],
    create(p) {
      noParams(p);
      return make();
    },
    decode: (bytes, _h, opts) => make().decode(bytes, opts),
  };
}

export const fp32Definition = basic('fp32', 'float32, lossless', FP32_ID, () => new Fp32Codec());
export const fp16Definition = basic('fp16', 'float16', FP16_ID, () => new Fp16Codec());
export const int8Definition = basic('int8', 'int8 per token in blocks of 32 channels with a float16 scale (like Q8_0)', INT8_ID, () => new Int8Codec());

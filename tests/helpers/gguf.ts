/**
 * A GGUF v3 writer and ggml-layout quantizers for tests, written from the block structs in ggml-common.h
 * (not from the reader in models/gguf.ts): each quantizer also returns the values it means (its own
 * integers times its own fp16 scales, in natural order), so a test can check the reader's dequantization
 * exactly against what was encoded.
 */
import { writeFileSync } from 'node:fs';
import { f16BitsToF32, f32ToF16Bits } from '../../shared/tensor.js';

export type MetaEntry =
  | { key: string; t: 'u32' | 'i32' | 'f32'; v: number }
  | { key: string; t: 'str'; v: string }
  | { key: string; t: 'bool'; v: boolean }
  | { key: string; t: 'strs'; v: string[] }
  | { key: string; t: 'f32s' | 'i32s'; v: number[] };

export interface GgufTensorOut {
  name: string;
  /** row-major shape; written as ne (reversed) */
  shape: number[];
  type: number;
  data: Buffer;
}

const TYPE_IDS = { u32: 4, i32: 5, f32: 6, bool: 7, str: 8, arr: 9 } as const;

export function ggufBytes(meta: MetaEntry[], tensors: GgufTensorOut[], opts: { version?: number; align?: number } = {}): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    parts.push(b);
  };
  const i32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    parts.push(b);
  };
  const f32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    parts.push(b);
  };
  const u64 = (v: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    parts.push(b);
  };
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    u64(b.length);
    parts.push(b);
  };
  parts.push(Buffer.from('GGUF', 'latin1'));
  u32(opts.version ?? 3);
  u64(tensors.length);
  u64(meta.length);
  for (const m of meta) {
    str(m.key);
    switch (m.t) {
      case 'u32': u32(TYPE_IDS.u32); u32(m.v); break;
      case 'i32': u32(TYPE_IDS.i32); i32(m.v); break;
      case 'f32': u32(TYPE_IDS.f32); f32(m.v); break;
      case 'bool': u32(TYPE_IDS.bool); parts.push(Buffer.from([m.v ? 1 : 0])); break;
      case 'str': u32(TYPE_IDS.str); str(m.v); break;
      case 'strs': u32(TYPE_IDS.arr); u32(TYPE_IDS.str); u64(m.v.length); m.v.forEach(str); break;
      case 'f32s': u32(TYPE_IDS.arr); u32(TYPE_IDS.f32); u64(m.v.length); m.v.forEach(f32); break;
      case 'i32s': u32(TYPE_IDS.arr); u32(TYPE_IDS.i32); u64(m.v.length); m.v.forEach(i32); break;
    }
  }
  const align = opts.align ?? 32;
  const pad = (n: number) => Math.ceil(n / align) * align;
  let rel = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    offsets.push(rel);
    rel = pad(rel + t.data.length);
  }
  tensors.forEach((t, i) => {
    str(t.name);
    u32(t.shape.length);
    for (const d of [...t.shape].reverse()) u64(d);
    u32(t.type);
    u64(offsets[i]!);
  });
  let head = Buffer.concat(parts);
  head = Buffer.concat([head, Buffer.alloc(pad(head.length) - head.length)]);
  const data = Buffer.alloc(rel);
  tensors.forEach((t, i) => t.data.copy(data, offsets[i]!));
  return Buffer.concat([head, data]);
}

export function writeGguf(path: string, meta: MetaEntry[], tensors: GgufTensorOut[], opts: { version?: number; align?: number } = {}): void {
  writeFileSync(path, ggufBytes(meta, tensors, opts));
}

export const GGML = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8, Q2_K: 10, Q4_K: 12, Q5_K: 13, Q6_K: 14 } as const;

export interface Quantized {
  data: Buffer;
  /** the values the blocks encode, in natural order */
  values: Float32Array;
}

const h16 = (v: number): number => f32ToF16Bits(v);
const f16 = (bits: number): number => f16BitsToF32(bits);
const roundAway = (v: number): number => Math.sign(v) * Math.round(Math.abs(v));

export function f32Bytes(x: Float32Array): Buffer {
  return Buffer.from(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
}

export function f16Bytes(x: Float32Array): Quantized {
  const b = Buffer.alloc(x.length * 2);
  const values = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const bits = h16(x[i]!);
    b.writeUInt16LE(bits, i * 2);
    values[i] = f16(bits);
  }
  return { data: b, values };
}

/** ggml's quantize_row_q8_0_ref: d = amax/127, q = round(x/d). */
export function quantizeQ8_0(x: Float32Array): Quantized {
  const nb = x.length / 32;
  const b = Buffer.alloc(nb * 34);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[i * 32 + j]!));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    const dBits = h16(d);
    b.writeUInt16LE(dBits, i * 34);
    for (let j = 0; j < 32; j++) {
      const q = roundAway(x[i * 32 + j]! * id);
      b.writeInt8(q, i * 34 + 2 + j);
      values[i * 32 + j] = f16(dBits) * q;
    }
  }
  return { data: b, values };
}

/** ggml's quantize_row_q4_0_ref: d = (signed max)/-8, q = min(15, trunc(x/d + 8.5)); element j low nibble, j+16 high. */
export function quantizeQ4_0(x: Float32Array): Quantized {
  const nb = x.length / 32;
  const b = Buffer.alloc(nb * 18);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[i * 32 + j]!;
      if (Math.abs(v) > amax) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = max / -8;
    const id = d ? 1 / d : 0;
    const dBits = h16(d);
    b.writeUInt16LE(dBits, i * 18);
    const q = (j: number) => Math.min(15, Math.trunc(x[i * 32 + j]! * id + 8.5));
    for (let j = 0; j < 16; j++) {
      const lo = q(j);
      const hi = q(j + 16);
      b[i * 18 + 2 + j] = lo | (hi << 4);
      values[i * 32 + j] = (lo - 8) * f16(dBits);
      values[i * 32 + j + 16] = (hi - 8) * f16(dBits);
    }
  }
  return { data: b, values };
}

/** ggml's quantize_row_q4_1_ref: d = (max-min)/15, m = min, q = min(15, trunc((x-min)/d + 0.5)). */
export function quantizeQ4_1(x: Float32Array): Quantized {
  const nb = x.length / 32;
  const b = Buffer.alloc(nb * 20);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    let min = Infinity;
    let max = -Infinity;
    for (let j = 0; j < 32; j++) {
      min = Math.min(min, x[i * 32 + j]!);
      max = Math.max(max, x[i * 32 + j]!);
    }
    const d = (max - min) / 15;
    const id = d ? 1 / d : 0;
    const dBits = h16(d);
    const mBits = h16(min);
    b.writeUInt16LE(dBits, i * 20);
    b.writeUInt16LE(mBits, i * 20 + 2);
    const q = (j: number) => Math.min(15, Math.trunc((x[i * 32 + j]! - min) * id + 0.5));
    for (let j = 0; j < 16; j++) {
      const lo = q(j);
      const hi = q(j + 16);
      b[i * 20 + 4 + j] = lo | (hi << 4);
      values[i * 32 + j] = lo * f16(dBits) + f16(mBits);
      values[i * 32 + j + 16] = hi * f16(dBits) + f16(mBits);
    }
  }
  return { data: b, values };
}

/**
 * Q4_K / Q5_K (super-blocks of 256 = 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes):
 * a simple, not optimal, quantizer — per sub-block scale (max−min)/levels and min ≤ 0.
 */
export function quantizeKQuant(x: Float32Array, bits: 4 | 5): Quantized {
  const levels = bits === 4 ? 15 : 31;
  const bytes = bits === 4 ? 144 : 176;
  const nb = x.length / 256;
  const b = Buffer.alloc(nb * bytes);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    const o = i * bytes;
    const s: number[] = [];
    const mins: number[] = [];
    for (let sb = 0; sb < 8; sb++) {
      let lo = 0;
      let hi = -Infinity;
      for (let l = 0; l < 32; l++) {
        const v = x[i * 256 + sb * 32 + l]!;
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      s.push((hi - lo) / levels);
      mins.push(-lo);
    }
    const dBits = h16(Math.max(...s) / 63);
    const dminBits = h16(Math.max(...mins) / 63);
    const d = f16(dBits);
    const dmin = f16(dminBits);
    const sc = s.map((v) => (d ? Math.min(63, Math.round(v / d)) : 0));
    const m = mins.map((v) => (dmin ? Math.min(63, Math.round(v / dmin)) : 0));
    b.writeUInt16LE(dBits, o);
    b.writeUInt16LE(dminBits, o + 2);
    for (let j = 0; j < 4; j++) {
      b[o + 4 + j] = (sc[j]! & 63) | ((sc[j + 4]! >> 4) << 6);
      b[o + 4 + j + 4] = (m[j]! & 63) | ((m[j + 4]! >> 4) << 6);
      b[o + 4 + j + 8] = (sc[j + 4]! & 0xf) | ((m[j + 4]! & 0xf) << 4);
    }
    const qh = o + 16;
    const ql = bits === 4 ? o + 16 : o + 48;
    for (let sb = 0; sb < 8; sb++) {
      const step = d * sc[sb]!;
      for (let l = 0; l < 32; l++) {
        const v = x[i * 256 + sb * 32 + l]!;
        const q = step ? Math.max(0, Math.min(levels, Math.round((v + dmin * m[sb]!) / step))) : 0;
        const byte = ql + (sb >> 1) * 32 + l;
        b[byte] = b[byte]! | ((q & 0xf) << (sb & 1 ? 4 : 0));
        if (bits === 5 && q & 16) b[qh + l] = b[qh + l]! | (1 << sb);
        values[i * 256 + sb * 32 + l] = step * q - dmin * m[sb]!;
      }
    }
  }
  return { data: b, values };
}

/** Q6_K (16 sub-blocks of 16, int8 scales, 6-bit q − 32: low 4 bits in ql, high 2 in qh): a simple quantizer. */
export function quantizeQ6_K(x: Float32Array): Quantized {
  const nb = x.length / 256;
  const b = Buffer.alloc(nb * 210);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    const o = i * 210;
    const s: number[] = [];
    for (let sb = 0; sb < 16; sb++) {
      let amax = 0;
      for (let l = 0; l < 16; l++) amax = Math.max(amax, Math.abs(x[i * 256 + sb * 16 + l]!));
      s.push(amax / 31);
    }
    const dBits = h16(Math.max(...s) / 127);
    const d = f16(dBits);
    const sc = s.map((v) => (d ? Math.min(127, Math.round(v / d)) : 0));
    b.writeUInt16LE(dBits, o + 208);
    sc.forEach((v, k) => b.writeInt8(v, o + 192 + k));
    for (let e = 0; e < 256; e++) {
      const step = d * sc[e >> 4]!;
      const q = step ? Math.max(-32, Math.min(31, Math.round(x[i * 256 + e]! / step))) : 0;
      values[i * 256 + e] = step * q;
      const u = q + 32;
      const half = e >> 7;
      const w = e & 127; // 0..127 inside the half: quarter = w >> 5, l = w & 31
      const quarter = w >> 5;
      const l = w & 31;
      const qlByte = o + half * 64 + l + (quarter & 1 ? 32 : 0);
      b[qlByte] = b[qlByte]! | ((u & 0xf) << (quarter >= 2 ? 4 : 0));
      const qhByte = o + 128 + half * 32 + l;
      b[qhByte] = b[qhByte]! | ((u >> 4) << (2 * quarter));
    }
  }
  return { data: b, values };
}

/**
 * GGUF files (llama.cpp's format, versions 2 and 3): the header, the metadata key/values and the tensor
 * table are parsed and checked here, once; tensors are read by position and dequantized to float32.
 *
 * Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count; per metadata
 * entry a string key, a u32 value type and the value (strings are u64 length + UTF-8 bytes; arrays a u32
 * element type, a u64 count and the elements); per tensor a string name, u32 dimension count, u64 per
 * dimension (ne[0] first: the fastest-moving one), u32 ggml type and u64 offset into the data section.
 * The data section starts at the next multiple of `general.alignment` (default 32) after the table.
 * A tensor with ne = [in, out] holds an [out, in] row-major matrix, so shapes here are `ne` reversed.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { SplitLLMError } from '../shared/errors.js';
import { f16BitsToF32 } from '../shared/tensor.js';

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufTensorInfo {
  name: string;
  /** row-major shape (ne reversed: the last entry is contiguous) */
  shape: number[];
  type: number;
  /** absolute byte offset in the file */
  offset: number;
  bytes: number;
}

/** ggml tensor types this reader dequantizes: block size (elements) and block bytes. */
export const GGML_TYPES = {
  F32: { id: 0, block: 1, bytes: 4 },
  F16: { id: 1, block: 1, bytes: 2 },
  Q4_0: { id: 2, block: 32, bytes: 18 },
  Q4_1: { id: 3, block: 32, bytes: 20 },
  Q8_0: { id: 8, block: 32, bytes: 34 },
  Q4_K: { id: 12, block: 256, bytes: 144 },
  Q5_K: { id: 13, block: 256, bytes: 176 },
  Q6_K: { id: 14, block: 256, bytes: 210 },
  BF16: { id: 30, block: 1, bytes: 2 },
} as const;
export type GgmlTypeName = keyof typeof GGML_TYPES;

/** Names of the ggml types this reader does not dequantize, for the error message. */
const OTHER_GGML_TYPES: Record<number, string> = {
  6: 'Q5_0', 7: 'Q5_1', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS',
  19: 'IQ1_S', 20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64',
  28: 'F64', 29: 'IQ1_M', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
};

function typeById(id: number): { name: GgmlTypeName; block: number; bytes: number } | undefined {
  for (const [name, t] of Object.entries(GGML_TYPES) as [GgmlTypeName, (typeof GGML_TYPES)[GgmlTypeName]][]) {
    if (t.id === id) return { name, block: t.block, bytes: t.bytes };
  }
  return undefined;
}

export function ggmlTypeName(id: number): string {
  return typeById(id)?.name ?? OTHER_GGML_TYPES[id] ?? `type ${id}`;
}

const MAGIC = 0x46554747; // "GGUF" little-endian
const MAX_STRING = 1 << 24;
const MAX_ARRAY = 1 << 24;
const MAX_DIMS = 4;

/** Signals that the header runs past the bytes read so far (the reader retries with more). */
class NeedMore extends Error {}

class HeaderReader {
  private o = 0;
  constructor(
    private readonly b: Buffer,
    private readonly complete: boolean,
    private readonly fail: (why: string) => never,
    private readonly truncated: () => never,
  ) {}
  get offset(): number {
    return this.o;
  }
  private need(n: number): void {
    if (this.o + n > this.b.length) {
      if (this.complete) this.truncated();
      throw new NeedMore();
    }
  }
  u8(): number {
    this.need(1);
    return this.b.readUInt8(this.o++);
  }
  u32(): number {
    this.need(4);
    const v = this.b.readUInt32LE(this.o);
    this.o += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.b.readBigUInt64LE(this.o);
    this.o += 8;
    return v;
  }
  /** A u64 count or size that must fit a safe integer below `max`. */
  count(max: number, what: string): number {
    const v = this.u64();
    if (v > BigInt(max)) this.fail(`${what} ${v} is implausible`);
    return Number(v);
  }
  str(): string {
    const n = this.count(MAX_STRING, 'string length');
    this.need(n);
    const s = this.b.toString('utf8', this.o, this.o + n);
    this.o += n;
    return s;
  }
  value(type: number, depth = 0): GgufValue {
    const b = this.b;
    const at = (n: number): number => {
      this.need(n);
      const o = this.o;
      this.o += n;
      return o;
    };
    switch (type) {
      case 0: return b.readUInt8(at(1));
      case 1: return b.readInt8(at(1));
      case 2: return b.readUInt16LE(at(2));
      case 3: return b.readInt16LE(at(2));
      case 4: return b.readUInt32LE(at(4));
      case 5: return b.readInt32LE(at(4));
      case 6: return shortestF32(b.readFloatLE(at(4)));
      case 7: return b.readUInt8(at(1)) !== 0;
      case 8: return this.str();
      case 9: {
        if (depth > 0) this.fail('nested metadata arrays are not supported');
        const et = this.u32();
        const n = this.count(MAX_ARRAY, 'array length');
        const out: GgufValue[] = new Array<GgufValue>(n);
        for (let i = 0; i < n; i++) out[i] = this.value(et, depth + 1);
        return out;
      }
      case 10: return b.readBigUInt64LE(at(8));
      case 11: return b.readBigInt64LE(at(8));
      case 12: return b.readDoubleLE(at(8));
      default: return this.fail(`metadata value type ${type} is unknown`);
    }
  }
}

/** The shortest decimal that is the same float32 (1e-5 stored as f32 reads back as 1e-5, not 9.99999974e-6). */
function shortestF32(v: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

export class GgufFile {
  private constructor(
    readonly path: string,
    readonly version: number,
    readonly metadata: ReadonlyMap<string, GgufValue>,
    readonly tensors: ReadonlyMap<string, GgufTensorInfo>,
    private readonly fd: number,
  ) {}

  static open(path: string): GgufFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new SplitLLMError('E_FILE_NOT_FOUND', `${path} does not exist: check the path`);
      throw new SplitLLMError('E_FILE_READ', `${path} cannot be read (${code ?? String(e)})`);
    }
    try {
      return GgufFile.parse(path, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private static parse(path: string, fd: number): GgufFile {
    const size = fstatSync(fd).size;
    const fail = (why: string): never => {
      throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path} is not a readable GGUF file (${why}): convert the model again with llama.cpp`);
    };
    const truncated = (): never => {
      throw new SplitLLMError('E_CHECKPOINT_TRUNCATED', `${path} ends inside its GGUF header (${size} bytes): the file is truncated, download or convert it again`);
    };
    // the header is read in a growing window: large vocabularies make it megabytes long
    for (let window = Math.min(size, 1 << 20); ; window = Math.min(size, window * 4)) {
      const buf = Buffer.alloc(window);
      readSync(fd, buf, 0, window, 0);
      try {
        return GgufFile.parseHeader(path, fd, size, new HeaderReader(buf, window === size, fail, truncated), fail);
      } catch (e) {
        if (!(e instanceof NeedMore)) throw e;
      }
    }
  }

  private static parseHeader(path: string, fd: number, size: number, r: HeaderReader, fail: (why: string) => never): GgufFile {
    if (r.u32() !== MAGIC) fail('no GGUF magic at the start');
    const version = r.u32();
    if (version !== 2 && version !== 3) {
      throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path} is GGUF version ${version}; splitllm reads versions 2 and 3: convert it again with a current llama.cpp`);
    }
    const nTensors = r.count(1 << 20, 'tensor count');
    const nKv = r.count(1 << 20, 'metadata count');
    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < nKv; i++) {
      const key = r.str();
      metadata.set(key, r.value(r.u32()));
    }
    const align = metadata.get('general.alignment') ?? 32;
    if (typeof align !== 'number' || !Number.isInteger(align) || align <= 0 || (align & (align - 1)) !== 0) fail(`general.alignment ${String(align)} is not a power of two`);
    const infos: { name: string; ne: number[]; type: number; rel: bigint }[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = r.str();
      const nd = r.u32();
      if (nd < 1 || nd > MAX_DIMS) fail(`tensor ${name} has ${nd} dimensions`);
      const ne: number[] = [];
      for (let d = 0; d < nd; d++) ne.push(r.count(2 ** 40, `tensor ${name} dimension`));
      infos.push({ name, ne, type: r.u32(), rel: r.u64() });
    }
    const dataStart = Math.ceil(r.offset / Number(align)) * Number(align);
    const tensors = new Map<string, GgufTensorInfo>();
    for (const t of infos) {
      if (tensors.has(t.name)) fail(`tensor ${t.name} appears twice`);
      const elements = t.ne.reduce((a, b) => a * b, 1);
      const ty = typeById(t.type);
      // an unknown type still gets an entry (so that the importer can name the tensor); its size is unknown
      let bytes = -1;
      if (ty) {
        if (t.ne[0]! % ty.block !== 0) fail(`tensor ${t.name}'s rows of ${t.ne[0]} are not whole ${ty.name} blocks of ${ty.block}`);
        bytes = (elements / ty.block) * ty.bytes;
      }
      if (t.rel > BigInt(Number.MAX_SAFE_INTEGER)) fail(`tensor ${t.name} has an impossible offset`);
      const offset = dataStart + Number(t.rel);
      if (bytes >= 0 && offset + bytes > size) {
        throw new SplitLLMError(
          'E_CHECKPOINT_TRUNCATED',
          `${path} is ${size} bytes but tensor ${t.name} ends at byte ${offset + bytes}: the file is truncated, download or convert it again`,
        );
      }
      tensors.set(t.name, { name: t.name, shape: [...t.ne].reverse(), type: t.type, offset, bytes });
    }
    return new GgufFile(path, version, metadata, tensors, fd);
  }

  close(): void {
    closeSync(this.fd);
  }

  /** The raw bytes of a tensor. */
  raw(name: string): Buffer {
    const t = this.info(name);
    if (t.bytes < 0) this.unsupported(t);
    const buf = Buffer.alloc(t.bytes);
    if (t.bytes > 0 && readSync(this.fd, buf, 0, t.bytes, t.offset) !== t.bytes) {
      throw new SplitLLMError('E_CHECKPOINT_TRUNCATED', `${this.path}: tensor ${name} could not be read whole: the file is truncated`);
    }
    return buf;
  }

  info(name: string): GgufTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SplitLLMError('E_BAD_PACKAGE', `${this.path} has no tensor ${name}: it is not a complete llama-architecture GGUF`);
    return t;
  }

  /** A tensor's values as float32 (dequantized from its ggml type). */
  readF32(name: string): Float32Array {
    const t = this.info(name);
    const ty = typeById(t.type);
    if (!ty) return this.unsupported(t);
    return dequantize(ty.name, this.raw(name), t.shape.reduce((a, b) => a * b, 1));
  }

  private unsupported(t: GgufTensorInfo): never {
    const known = Object.keys(GGML_TYPES).join(', ');
    throw new SplitLLMError(
      'E_UNSUPPORTED_FORMAT',
      `${this.path}: tensor ${t.name} is ${ggmlTypeName(t.type)}, which splitllm does not read (it reads ${known}): requantize the model with llama-quantize to one of those`,
    );
  }
}

/** Dequantizes `n` elements of ggml type `type` from `b` (ggml's reference formulas). */
export function dequantize(type: GgmlTypeName, b: Buffer, n: number): Float32Array {
  const y = new Float32Array(n);
  const h = (o: number): number => f16BitsToF32(b.readUInt16LE(o));
  switch (type) {
    case 'F32':
      for (let i = 0; i < n; i++) y[i] = b.readFloatLE(i * 4);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) y[i] = h(i * 2);
      break;
    case 'BF16': {
      const bits = new Uint32Array(y.buffer);
      for (let i = 0; i < n; i++) bits[i] = b.readUInt16LE(i * 2) << 16;
      break;
    }
    case 'Q8_0':
      for (let blk = 0; blk < n / 32; blk++) {
        const o = blk * 34;
        const d = h(o);
        for (let j = 0; j < 32; j++) y[blk * 32 + j] = d * b.readInt8(o + 2 + j);
      }
      break;
    case 'Q4_0':
    case 'Q4_1': {
      const bytes = type === 'Q4_0' ? 18 : 20;
      const qs = type === 'Q4_0' ? 2 : 4;
      for (let blk = 0; blk < n / 32; blk++) {
        const o = blk * bytes;
        const d = h(o);
        const m = type === 'Q4_1' ? h(o + 2) : -8 * d;
        for (let j = 0; j < 16; j++) {
          const q = b[o + qs + j]!;
          y[blk * 32 + j] = (q & 0xf) * d + m;
          y[blk * 32 + j + 16] = (q >> 4) * d + m;
        }
      }
      break;
    }
    case 'Q4_K':
    case 'Q5_K': {
      const bytes = type === 'Q4_K' ? 144 : 176;
      for (let blk = 0; blk < n / 256; blk++) {
        const o = blk * bytes;
        const d = h(o);
        const dmin = h(o + 2);
        const sc = o + 4; // 12 bytes of 6-bit scales and mins
        const qh = o + 16; // Q5_K: 32 bytes of high bits
        const ql = type === 'Q4_K' ? o + 16 : o + 48;
        let out = blk * 256;
        for (let j = 0, is = 0; j < 256; j += 64, is += 2) {
          const [s1, m1] = scaleMinK4(b, sc, is);
          const [s2, m2] = scaleMinK4(b, sc, is + 1);
          const q = ql + (j >> 1);
          const u1 = 1 << (j >> 5);
          const u2 = 2 << (j >> 5);
          for (let l = 0; l < 32; l++) {
            const hi = type === 'Q5_K' && (b[qh + l]! & u1) !== 0 ? 16 : 0;
            y[out + l] = d * s1 * ((b[q + l]! & 0xf) + hi) - dmin * m1;
          }
          for (let l = 0; l < 32; l++) {
            const hi = type === 'Q5_K' && (b[qh + l]! & u2) !== 0 ? 16 : 0;
            y[out + 32 + l] = d * s2 * ((b[q + l]! >> 4) + hi) - dmin * m2;
          }
          out += 64;
        }
      }
      break;
    }
    case 'Q6_K':
      for (let blk = 0; blk < n / 256; blk++) {
        const o = blk * 210;
        const d = h(o + 208);
        for (let half = 0; half < 2; half++) {
          const ql = o + half * 64;
          const qh = o + 128 + half * 32;
          const sc = o + 192 + half * 8;
          const out = blk * 256 + half * 128;
          for (let l = 0; l < 32; l++) {
            const is = l >> 4;
            const hb = b[qh + l]!;
            const q1 = ((b[ql + l]! & 0xf) | ((hb & 3) << 4)) - 32;
            const q2 = ((b[ql + l + 32]! & 0xf) | (((hb >> 2) & 3) << 4)) - 32;
            const q3 = ((b[ql + l]! >> 4) | (((hb >> 4) & 3) << 4)) - 32;
            const q4 = ((b[ql + l + 32]! >> 4) | (((hb >> 6) & 3) << 4)) - 32;
            y[out + l] = d * b.readInt8(sc + is) * q1;
            y[out + l + 32] = d * b.readInt8(sc + is + 2) * q2;
            y[out + l + 64] = d * b.readInt8(sc + is + 4) * q3;
            y[out + l + 96] = d * b.readInt8(sc + is + 6) * q4;
          }
        }
      }
      break;
  }
  return y;
}

/** The j-th 6-bit scale and min of a Q4_K/Q5_K super-block's 12 packed bytes at `o`. */
function scaleMinK4(b: Buffer, o: number, j: number): [number, number] {
  if (j < 4) return [b[o + j]! & 63, b[o + j + 4]! & 63];
  return [(b[o + j + 4]! & 0xf) | ((b[o + j - 4]! >> 6) << 4), (b[o + j + 4]! >> 4) | ((b[o + j]! >> 6) << 4)];
}

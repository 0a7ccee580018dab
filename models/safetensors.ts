/**
 * Safetensors reader and writer (format: 8-byte little-endian header length, a JSON header naming each
 * tensor's dtype, shape and byte range, then the raw little-endian data). The reader works tensor by
 * tensor with positioned reads so that multi-gigabyte files never need to fit in one Buffer.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { SplitLLMError } from '../shared/errors.js';
import { Fields } from '../shared/fields.js';
import { bf16ArrayToF32, f16ArrayToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits as f32ToF16, numel } from '../shared/tensor.js';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'U8' | 'I8';
const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, U8: 1, I8: 1 };

/** The floating-point types a package stores weights in. */
export type FloatDtype = 'F32' | 'F16' | 'BF16';
export const FLOAT_DTYPES: readonly FloatDtype[] = ['F32', 'F16', 'BF16'];
export function isFloatDtype(d: string): d is FloatDtype {
  return (FLOAT_DTYPES as readonly string[]).includes(d);
}
export function dtypeBytes(d: SafetensorsDtype): number {
  return DTYPE_BYTES[d];
}

/** A tensor's values as stored, read in chunks without widening them (import streams these). */
export interface StoredTensor {
  dtype: FloatDtype;
  shape: number[];
  /**
   * The stored bytes in order, at most `maxBytes` each (a multiple of the element size). Each chunk is a
   * view of one reused buffer: use it before asking for the next.
   */
  chunks(maxBytes: number): Iterable<Uint8Array>;
}

/** Values of `bytes` (stored as `dtype`) as float32; F32 is viewed, not copied, when aligned. */
export function widen(bytes: Uint8Array, dtype: FloatDtype): Float32Array {
  if (dtype === 'F32') {
    if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    return new Float32Array(bytes.slice().buffer);
  }
  const h = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2) : new Uint16Array(bytes.slice().buffer);
  return dtype === 'F16' ? f16ArrayToF32(h) : bf16ArrayToF32(h);
}

/** float32 values stored as `dtype` (F16 and BF16 round to nearest even). */
export function narrow(values: Float32Array, dtype: FloatDtype): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const h = new Uint16Array(values.length);
  if (dtype === 'F16') for (let i = 0; i < h.length; i++) h[i] = f32ToF16(values[i]!);
  else for (let i = 0; i < h.length; i++) h[i] = f32ToBf16Bits(values[i]!);
  return new Uint8Array(h.buffer);
}

function isDtype(v: unknown): v is SafetensorsDtype {
  return typeof v === 'string' && Object.hasOwn(DTYPE_BYTES, v);
}

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number; // absolute file offset
  end: number;
}

export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};
  private fd: number;

  constructor(readonly path: string) {
    if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `weights file ${path} does not exist: check the path`);
    this.fd = openSync(path, 'r');
    const size = fstatSync(this.fd).size;
    const bad = (why: string): never => {
      closeSync(this.fd);
      throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path} is not a valid safetensors file (${why}): re-export or re-import the model`);
    };
    if (size < 8) bad('shorter than its 8-byte header length');
    const lenBuf = Buffer.alloc(8);
    readSync(this.fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > 100_000_000 || 8 + headerLen > size) bad(`header length ${headerLen} exceeds the file`);
    const hbuf = Buffer.alloc(headerLen);
    readSync(this.fd, hbuf, 0, headerLen, 8);
    let parsed: unknown;
    try {
      parsed = JSON.parse(hbuf.toString('utf8'));
    } catch {
      return bad('header is not JSON');
    }
    const header: Fields = Fields.of(parsed, 'header', (message) => bad(message), 'a JSON object');
    const meta = header.optMap('__metadata__');
    for (const k of meta?.keys() ?? []) {
      const v = meta?.value(k);
      if (typeof v === 'string') this.metadata[k] = v;
    }
    const base = 8 + headerLen;
    for (const name of header.keys()) {
      if (name === '__metadata__') continue;
      const t = header.map(name);
      const dtype = t.value('dtype');
      if (!isDtype(dtype)) return bad(`tensor ${name} has an unsupported dtype ${JSON.stringify(dtype)}`);
      const shape = t.intArray('shape', 8, 0, Number.MAX_SAFE_INTEGER);
      const offsets = t.intArray('data_offsets', 2, 0, Number.MAX_SAFE_INTEGER);
      const [b, e] = offsets;
      if (b === undefined || e === undefined || e - b !== numel(shape) * DTYPE_BYTES[dtype] || base + e > size) {
        return bad(`tensor ${name} byte range does not match its shape or lies past the end of the file (truncated?)`);
      }
      this.tensors.set(name, { dtype, shape, begin: base + b, end: base + e });
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SplitLLMError('E_BAD_PACKAGE', `tensor ${name} is missing from ${this.path}: the weights do not match the model config`);
    return t;
  }

  /** Reads a floating-point tensor as float32 (F16 and BF16 are widened exactly). */
  readF32(name: string): Float32Array {
    return this.readF32Into(name, new Float32Array(numel(this.info(name).shape)));
  }

  /**
   * Reads a floating-point tensor as float32 into `dst` (its length the tensor's) and returns it. A 16-bit
   * tensor is read into the upper half of `dst`'s bytes and widened in place, front to back (element i is
   * written after element i was read, and every later one lies past it): no second buffer, so a build that
   * reuses `dst` touches no fresh memory.
   */
  readF32Into(name: string, dst: Float32Array): Float32Array {
    const t = this.info(name);
    const n = numel(t.shape);
    if (dst.length !== n) throw new Error(`tensor ${name} has ${n} values, the buffer ${dst.length}`);
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') throw new SplitLLMError('E_BAD_PACKAGE', `tensor ${name} has dtype ${t.dtype}, expected a float type`);
    const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    if (t.dtype === 'F32') {
      this.readAt(t.begin, bytes);
      return dst;
    }
    this.readAt(t.begin, bytes.subarray(2 * n));
    const u16 = new Uint16Array(dst.buffer, dst.byteOffset, 2 * n);
    if (t.dtype === 'BF16') {
      const out = new Int32Array(dst.buffer, dst.byteOffset, n);
      for (let i = 0; i < n; i++) out[i] = u16[n + i]! << 16;
    } else for (let i = 0; i < n; i++) dst[i] = f16BitsToF32(u16[n + i]!);
    return dst;
  }

  /** Fills `into` with the file's bytes from `pos` on. */
  private readAt(pos: number, into: Uint8Array): void {
    for (let off = 0; off < into.length; ) {
      const got = readSync(this.fd, into, off, Math.min(into.length - off, 1 << 30), pos + off);
      if (got <= 0) throw new SplitLLMError('E_CHECKPOINT_TRUNCATED', `${this.path} ended early while reading: the file is truncated`);
      off += got;
    }
  }

  /** A float tensor as stored, streamed in chunks (E_BAD_PACKAGE for an integer tensor). */
  stored(name: string): StoredTensor {
    const t = this.info(name);
    const dtype = t.dtype;
    if (!isFloatDtype(dtype)) throw new SplitLLMError('E_BAD_PACKAGE', `tensor ${name} has dtype ${t.dtype}, expected a float type`);
    const read = (pos: number, into: Uint8Array): void => this.readAt(pos, into);
    return {
      dtype,
      shape: t.shape,
      *chunks(maxBytes: number) {
        const len = t.end - t.begin;
        const step = Math.max(DTYPE_BYTES[dtype], maxBytes - (maxBytes % DTYPE_BYTES[dtype]));
        const buf = new Uint8Array(new ArrayBuffer(Math.min(step, len)));
        for (let off = 0; off < len; off += step) {
          const chunk = buf.subarray(0, Math.min(buf.length, len - off));
          read(t.begin + off, chunk);
          yield chunk;
        }
      },
    };
  }

  close(): void {
    closeSync(this.fd);
  }
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

/**
 * Writes float32 tensors (or F16 when `dtype` says so) to a safetensors file, streaming tensor by tensor.
 * Tensors are written in the order given.
 */
export function writeSafetensors(
  path: string,
  tensors: Iterable<TensorToWrite> | TensorToWrite[],
  metadata: Record<string, string> = {},
  dtype: 'F32' | 'F16' | 'BF16' = 'F32',
): void {
  const list = [...tensors];
  for (const t of list) if (numel(t.shape) !== t.data.length) throw new Error(`tensor ${t.name}: shape ${t.shape} does not match ${t.data.length} values`);
  writeSafetensorsStream(
    path,
    list.map((t) => ({ name: t.name, shape: t.shape, dtype, write: (put) => put(narrow(t.data, dtype)) })),
    metadata,
  );
}

/** One tensor of a streamed write: its stored type and a function that hands over its bytes in order. */
export interface StreamedTensor {
  name: string;
  shape: number[];
  dtype: FloatDtype;
  write(put: (bytes: Uint8Array) => void): void;
}

/**
 * Writes a safetensors file tensor by tensor from producers that hand over chunks (memory: one chunk);
 * every byte written also goes to `onBytes` (a hash of the file). Returns the file's size.
 */
export function writeSafetensorsStream(path: string, tensors: StreamedTensor[], metadata: Record<string, string> = {}, onBytes?: (b: Uint8Array) => void): number {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const t of tensors) {
    const len = numel(t.shape) * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + len] };
    off += len;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const hbytes = Buffer.from(json, 'utf8');
  const fd = openSync(path, 'w');
  let size = 0;
  const put = (b: Uint8Array): void => {
    writeAll(fd, b);
    onBytes?.(b);
    size += b.byteLength;
  };
  try {
    const lenBuf = Buffer.alloc(8);
    lenBuf.writeBigUInt64LE(BigInt(hbytes.length));
    put(lenBuf);
    put(hbytes);
    for (const t of tensors) {
      const start = size;
      t.write(put);
      const want = numel(t.shape) * DTYPE_BYTES[t.dtype];
      if (size - start !== want) throw new Error(`tensor ${t.name}: wrote ${size - start} bytes, its shape and dtype need ${want}`);
    }
  } finally {
    closeSync(fd);
  }
  return size;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) off += writeSync(fd, bytes, off, Math.min(bytes.length - off, 1 << 30));
}

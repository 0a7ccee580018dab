/**
 * Byte-level building blocks of the activation codecs (layouts in docs/FORMATS.md): the common header,
 * a bounds-checked reader, a growable writer, LEB128 varints and a little-endian bit packer. Pure
 * TypeScript on typed arrays (browser-safe). Every read past the end, and every size a header claims
 * that the bytes cannot hold, is an E_CODEC_CORRUPT error before anything is allocated.
 */
import { SplitLLMError } from '../../shared/errors.js';

export const MAGIC0 = 0x53; // 'S'
export const MAGIC1 = 0x48; // 'H' (hidden state)
export const FORMAT_VERSION = 1;
export const HEADER_BYTES = 12;
/** Largest message a decoder accepts by default: 2^26 values (256 MiB of float32). */
export const DEFAULT_MAX_VALUES = 1 << 26;
/**
 * No codec produces more than this many values per message byte (the densest legitimate case is a
 * low-rank or constant message); a header claiming more is refused before allocating its output.
 */
export const MAX_VALUES_PER_BYTE = 4096;

/**
 * A message's codec id (header byte 3). Each codec file declares its own (fp32 1, fp16 2, int8 3 in
 * basic.ts; ts-tabq 4 in tabq.ts; topk 5 in sparse.ts; lowrank 6 in lowrank.ts; calibrated ts-tabq 7 in
 * tabq-ec.ts: docs/FORMATS.md); the registry refuses two definitions that decode the same id.
 */
export type CodecId = number;

export function corrupt(why: string): SplitLLMError {
  return new SplitLLMError('E_CODEC_CORRUPT', `hidden-state message is corrupt: ${why}`);
}

/** A message that decodes to NaN or Inf: its own code, so that a server can say so precisely (`nan_tensor`). */
export function nonFinite(why: string): SplitLLMError {
  return new SplitLLMError('E_CODEC_NONFINITE', `hidden-state message decodes to a non-finite value: ${why}`);
}

export interface Header {
  codec: CodecId;
  tokens: number;
  dim: number;
}

export function writeHeader(out: Uint8Array, codec: CodecId, tokens: number, dim: number): void {
  out[0] = MAGIC0;
  out[1] = MAGIC1;
  out[2] = FORMAT_VERSION;
  out[3] = codec;
  const v = new DataView(out.buffer, out.byteOffset, HEADER_BYTES);
  v.setUint32(4, tokens, true);
  v.setUint32(8, dim, true);
}

export function readHeader(bytes: Uint8Array, maxValues = DEFAULT_MAX_VALUES): Header {
  if (!(bytes instanceof Uint8Array)) throw corrupt('not a byte array');
  if (bytes.length < HEADER_BYTES) throw corrupt(`${bytes.length} bytes is shorter than the ${HEADER_BYTES}-byte header`);
  if (bytes[0] !== MAGIC0 || bytes[1] !== MAGIC1) throw corrupt('wrong magic (not a splitllm hidden-state message)');
  if (bytes[2] !== FORMAT_VERSION) throw corrupt(`format version ${bytes[2]} is not supported (expected ${FORMAT_VERSION})`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const tokens = v.getUint32(4, true);
  const dim = v.getUint32(8, true);
  if (tokens === 0 || dim === 0) throw corrupt(`empty shape [${tokens}, ${dim}]`);
  if (tokens * dim > maxValues) {
    throw new SplitLLMError('E_CODEC_LIMIT', `hidden-state message claims [${tokens}, ${dim}] = ${tokens * dim} values, over the limit of ${maxValues}`);
  }
  if (tokens * dim > MAX_VALUES_PER_BYTE * bytes.length) {
    throw corrupt(`[${tokens}, ${dim}] = ${tokens * dim} values cannot come from ${bytes.length} bytes`);
  }
  return { codec: bytes[3]!, tokens, dim };
}

/** E_CODEC_INPUT unless [tokens, dim] is a positive integer shape that x fills exactly. */
export function checkShape(x: Float32Array, tokens: number, dim: number): void {
  if (!Number.isInteger(tokens) || !Number.isInteger(dim) || tokens <= 0 || dim <= 0 || tokens > 0xffffffff || dim > 0xffffffff) {
    throw new SplitLLMError('E_CODEC_INPUT', `shape [${tokens}, ${dim}] is not a positive integer shape`);
  }
  if (x.length !== tokens * dim) throw new SplitLLMError('E_CODEC_INPUT', `input has ${x.length} values, shape [${tokens}, ${dim}] needs ${tokens * dim}`);
}

/** checkShape, then E_CODEC_INPUT at the first NaN/Inf. */
export function checkInput(x: Float32Array, tokens: number, dim: number): void {
  checkShape(x, tokens, dim);
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v - v !== 0) {
      throw new SplitLLMError('E_CODEC_INPUT', `hidden state holds ${Number.isNaN(v) ? 'NaN' : 'Inf'} at token ${Math.floor(i / dim)}, channel ${i % dim}: the model diverged; nothing was encoded`);
    }
  }
}

/** Bounds-checked little-endian reader. */
export class Reader {
  pos: number;
  private readonly view: DataView;
  constructor(readonly bytes: Uint8Array, start = 0) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get remaining(): number {
    return this.bytes.length - this.pos;
  }
  need(n: number, what: string): void {
    if (n < 0 || this.pos + n > this.bytes.length) throw corrupt(`${what} needs ${n} bytes, ${this.remaining} left (truncated?)`);
  }
  u8(): number {
    this.need(1, 'a byte');
    return this.bytes[this.pos++]!;
  }
  u16(): number {
    this.need(2, 'a u16');
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4, 'a u32');
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f32(): number {
    this.need(4, 'a float');
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }
  /** LEB128 unsigned varint up to 2^35. */
  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 5; i++) {
      if (this.pos >= this.bytes.length) throw corrupt('varint runs past the end');
      const b = this.bytes[this.pos++]!;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
    throw corrupt('varint longer than 5 bytes');
  }
  /** A view of the next n bytes (no copy). */
  take(n: number, what: string): Uint8Array {
    this.need(n, what);
    const s = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  end(): void {
    if (this.pos !== this.bytes.length) throw corrupt(`${this.bytes.length - this.pos} trailing bytes after the payload`);
  }
}

/** Growable little-endian writer. */
export class Writer {
  buf: Uint8Array;
  pos = 0;
  private view: DataView;
  constructor(capacity = 1024) {
    this.buf = new Uint8Array(Math.max(16, capacity));
    this.view = new DataView(this.buf.buffer);
  }
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.pos + n) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.buf.subarray(0, this.pos));
    this.buf = nb;
    this.view = new DataView(nb.buffer);
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.pos, v, true);
    this.pos += 4;
  }
  f32(v: number): void {
    this.ensure(4);
    this.view.setFloat32(this.pos, v, true);
    this.pos += 4;
  }
  varint(v: number): void {
    this.ensure(5);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  /** Reserves n bytes and returns their offset. */
  reserve(n: number): number {
    this.ensure(n);
    const at = this.pos;
    this.pos += n;
    return at;
  }
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

/** Writes d as a LEB128 varint at out[o]; returns the offset after it. */
export function putVarint(out: Uint8Array, o: number, d: number): number {
  while (d >= 0x80) {
    out[o++] = (d & 0x7f) | 0x80;
    d = Math.floor(d / 128);
  }
  out[o++] = d;
  return o;
}

/**
 * A small ONNX graph writer on top of onnx-proto (the ONNX protobuf schema compiled for protobufjs).
 * Nodes are added in topological order by construction; initializers are raw little-endian bytes and
 * move to an external data file when the model would pass protobuf's 2 GB limit.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx as P } from 'onnx-proto';

const { onnx } = onnxProto;
export const DT = onnx.TensorProto.DataType;
const AT = onnx.AttributeProto.AttributeType;

export type Dim = number | string;
export type AttrValue = number | number[] | string | { float: number } | { floats: number[] } | { tensor: P.ITensorProto };

export interface Initializer {
  name: string;
  dataType: number;
  dims: number[];
  /** the values (empty once written to the external data file: see `external`) */
  bytes: Uint8Array;
  /** where a streamed initializer's values are in the external data file */
  external?: { offset: number; length: number };
}

/** Initializers at most this large stay inside the model file. */
const INLINE_MAX = 1024;
/** External data offsets are aligned to this (page-aligned, so onnxruntime can map them). */
const EXTERNAL_ALIGN = 4096;

function tensorBytes(data: Float32Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array | Int8Array): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export class GraphBuilder {
  readonly nodes: P.INodeProto[] = [];
  readonly initializers: Initializer[] = [];
  readonly inputs: P.IValueInfoProto[] = [];
  readonly outputs: P.IValueInfoProto[] = [];
  private counter = 0;
  private constCache = new Map<string, string>();
  readonly opsets = new Map<string, number>([['', 17]]);
  private sink?: ExternalSink;
  /** sha256 of the external data file as written (hex), once `serialize` has closed it */
  externalSha256?: string;

  constructor(readonly name: string) {}

  /**
   * From now on every initializer over 1 KiB goes straight to this external data file and is not kept:
   * a segment of any size is built holding one tensor at a time. `serialize` references the file.
   */
  streamExternal(path: string): void {
    if (this.sink || this.initializers.some((t) => t.bytes.byteLength > INLINE_MAX)) throw new Error('streamExternal must be called before any large initializer');
    this.sink = newSink(path);
  }

  /** whether initializers go to the external data file as they are made (and are not kept) */
  get streaming(): boolean {
    return this.sink !== undefined;
  }

  private readonly buffers = new Map<string, Uint8Array>();
  /**
   * A buffer of `bytes` for data that becomes an initializer right away: while streaming, one buffer per
   * tag reused from call to call (what `initializer` was given is written out before it returns); else fresh.
   * Its contents are not zeroed.
   */
  reusable(tag: string, bytes: number): Uint8Array {
    if (!this.sink) return new Uint8Array(bytes);
    let b = this.buffers.get(tag);
    if (!b || b.byteLength < bytes) {
      b = new Uint8Array(Math.max(bytes, Math.ceil((b?.byteLength ?? 0) * 1.25)));
      this.buffers.set(tag, b);
    }
    return b.subarray(0, bytes);
  }

  /** Closes a streamed external data file without serializing (a build that failed). */
  abandon(): void {
    if (this.sink) closeSync(this.sink.fd);
    this.sink = undefined;
    this.buffers.clear();
  }

  fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  input(name: string, elemType: number, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  output(name: string, elemType: number, dims: Dim[]): void {
    this.outputs.push(valueInfo(name, elemType, dims));
  }

  /** Adds a node; returns its single output name (or names when `outputs` > 1). */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { domain?: string; outputs?: string[]; name?: string } = {}): string {
    return this.opMulti(opType, inputs, attrs, { ...opts, outputs: opts.outputs ?? [this.fresh(opType)] })[0]!;
  }

  opMulti(opType: string, inputs: string[], attrs: Record<string, AttrValue>, opts: { domain?: string; outputs: string[]; name?: string }): string[] {
    const attribute: P.IAttributeProto[] = Object.entries(attrs).map(([name, v]) => attr(name, v));
    this.nodes.push({ opType, input: inputs, output: opts.outputs, name: opts.name ?? this.fresh(`n_${opType}`), domain: opts.domain ?? '', attribute });
    if (opts.domain && !this.opsets.has(opts.domain)) this.opsets.set(opts.domain, 1);
    return opts.outputs;
  }

  initializer(name: string, dataType: number, dims: number[], data: Float32Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array | Int8Array): string {
    const bytes = tensorBytes(data);
    if (this.sink && bytes.byteLength > INLINE_MAX) this.initializers.push({ name, dataType, dims, bytes: new Uint8Array(0), external: appendExternal(this.sink, bytes) });
    else this.initializers.push({ name, dataType, dims, bytes: this.sink ? bytes.slice() : bytes }); // a small one kept inline may be a reused buffer's view
    return name;
  }

  /**
   * An initializer whose `byteLength` bytes come in pieces (a stored tensor read a chunk at a time): while
   * streaming they go to the external data file as they come, never held whole; else they are joined.
   */
  initializerPieces(name: string, dataType: number, dims: number[], pieces: Iterable<Uint8Array>, byteLength: number): string {
    if (this.sink && byteLength > INLINE_MAX) {
      const external = appendExternal(this.sink, pieces);
      if (external.length !== byteLength) throw new Error(`initializer ${name}: ${external.length} bytes came, ${byteLength} expected`);
      this.initializers.push({ name, dataType, dims, bytes: new Uint8Array(0), external });
      return name;
    }
    const whole = new Uint8Array(byteLength);
    let at = 0;
    for (const piece of pieces) {
      if (at + piece.byteLength > byteLength) throw new Error(`initializer ${name}: more than ${byteLength} bytes came`);
      whole.set(piece, at);
      at += piece.byteLength;
    }
    if (at !== byteLength) throw new Error(`initializer ${name}: ${at} bytes came, ${byteLength} expected`);
    return this.initializer(name, dataType, dims, whole);
  }

  f32(name: string, dims: number[], data: Float32Array): string {
    return this.initializer(name, DT.FLOAT, dims, data);
  }

  /** A shared int64 constant (deduplicated by value). */
  i64(values: number[], scalar = false): string {
    const key = `i64:${scalar ? 's' : 'v'}:${values.join(',')}`;
    let n = this.constCache.get(key);
    if (!n) {
      n = this.initializer(this.fresh('c_i64'), DT.INT64, scalar ? [] : [values.length], BigInt64Array.from(values.map(BigInt)));
      this.constCache.set(key, n);
    }
    return n;
  }

  /** A shared float32 scalar constant. */
  scalar(value: number): string {
    const key = `f32:${value}`;
    let n = this.constCache.get(key);
    if (!n) {
      n = this.f32(this.fresh('c_f32'), [], Float32Array.of(value));
      this.constCache.set(key, n);
    }
    return n;
  }

  initializerBytes(): number {
    return this.initializers.reduce((a, t) => a + (t.external?.length ?? t.bytes.byteLength), 0);
  }

  /**
   * Serialises the model. With `externalDataPath`, every initializer over 1 KiB is written to that file
   * (ONNX external data, offsets aligned to 4 KiB) and the model references it by file name.
   */
  serialize(externalDataPath?: string): Uint8Array {
    this.buffers.clear();
    if (this.sink && externalDataPath !== undefined && externalDataPath !== this.sink.path) throw new Error(`this graph streamed its external data to ${this.sink.path}`);
    // not streamed so far: the large initializers go to the external data file now, the same way
    if (!this.sink && externalDataPath) {
      this.sink = newSink(externalDataPath);
      for (const t of this.initializers) {
        if (t.bytes.byteLength <= INLINE_MAX) continue;
        t.external = appendExternal(this.sink, t.bytes);
        t.bytes = new Uint8Array(0);
      }
    }
    const sink = this.sink;
    if (sink) {
      closeSync(sink.fd);
      this.externalSha256 = sink.hash.digest('hex');
    }
    this.sink = undefined;
    const init: P.ITensorProto[] = this.initializers.map((t) =>
      t.external
        ? {
            name: t.name,
            dataType: t.dataType,
            dims: t.dims,
            dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
            externalData: [
              { key: 'location', value: basename(sink!.path) },
              { key: 'offset', value: String(t.external.offset) },
              { key: 'length', value: String(t.external.length) },
            ],
          }
        : { name: t.name, dataType: t.dataType, dims: t.dims, rawData: t.bytes },
    );
    const model: P.IModelProto = {
      irVersion: 8,
      producerName: 'splitllm',
      producerVersion: '0.1.0',
      opsetImport: [...this.opsets].map(([domain, version]) => ({ domain, version })),
      graph: { name: this.name, node: this.nodes, initializer: init, input: this.inputs, output: this.outputs },
    };
    return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
  }
}

function valueInfo(name: string, elemType: number, dims: Dim[]): P.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attr(name: string, v: AttrValue): P.IAttributeProto {
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: use { float } for non-integers`);
    return { name, type: AT.INT, i: v };
  }
  if (typeof v === 'string') return { name, type: AT.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AT.INTS, ints: v };
  if ('float' in v) return { name, type: AT.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: AT.FLOATS, floats: v.floats };
  return { name, type: AT.TENSOR, t: v.tensor };
}

/** Writes `bytes` at the end of the external data file, 4 KiB-aligned; returns where they are. */
interface ExternalSink {
  fd: number;
  path: string;
  offset: number;
  /** of every byte written, so that a cache entry need not read the file back to record it */
  hash: Hash;
}

function newSink(path: string): ExternalSink {
  return { fd: openSync(path, 'w'), path, offset: 0, hash: createHash('sha256') };
}

/** Appends one tensor's bytes (given whole or as pieces in order) at the next aligned offset. */
function appendExternal(sink: ExternalSink, bytes: Uint8Array | Iterable<Uint8Array>): { offset: number; length: number } {
  const pad = (EXTERNAL_ALIGN - (sink.offset % EXTERNAL_ALIGN)) % EXTERNAL_ALIGN;
  if (pad) {
    const zeros = new Uint8Array(pad);
    writeAll(sink.fd, zeros);
    sink.hash.update(zeros);
  }
  const offset = sink.offset + pad;
  let length = 0;
  for (const piece of bytes instanceof Uint8Array ? [bytes] : bytes) {
    writeAll(sink.fd, piece);
    sink.hash.update(piece);
    length += piece.byteLength;
  }
  sink.offset = offset + length;
  return { offset, length };
}

function writeAll(fd: number, b: Uint8Array): void {
  for (let off = 0; off < b.byteLength; ) off += writeSync(fd, b, off, Math.min(b.byteLength - off, 1 << 30));
}

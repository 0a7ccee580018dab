/**
 * The edge ⇄ cloud wire protocol (docs/PROTOCOL.md). One WebSocket binary message is one frame:
 *
 *   u32 little-endian header length H | H bytes msgpack header {type, …} | raw payload bytes
 *
 * Control fields travel in the msgpack header; tensors (codec messages) travel as the raw payload, never
 * re-encoded. Browser-safe: typed arrays and msgpackr only.
 */
import { pack, unpack } from 'msgpackr';
import { SplitLLMError } from '../errors.js';

export const PROTOCOL_VERSION = 1;
export const MAX_HEADER_BYTES = 64 * 1024;

export interface SamplingParams {
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export interface Hello {
  type: 'hello';
  version: number;
  modelHash: string;
  split: number;
  codec: string;
  maxTokens: number;
  sampling?: SamplingParams;
  /** stop ids (default: EOS and BOS) */
  stopIds?: number[];
  /** weight bits of the cloud's back segment (OPSC; default 32) and their quantization block */
  backBits?: number;
  blockSize?: number;
}
export interface Ready {
  type: 'ready';
  session: string;
  layers: number;
  split: number;
  maxSeq: number;
  /** positions the cloud's KV cache holds (0 for a new session) */
  length: number;
}
/** Link measurement: the cloud answers a probe with a probe of `reply` payload bytes (at most 8 MiB). */
export interface Probe {
  type: 'probe';
  id: number;
  reply: number;
}
/** Re-attaches a dropped session; `position` = tokens the edge has fed through its front segment */
export interface Resume {
  type: 'resume';
  session: string;
  position: number;
}
/** hidden state [tokens, dim] of the prompt (prefill) or of one new token (step); payload: codec message */
export interface Prefill {
  type: 'prefill';
  tokens: number;
}
export interface Step {
  type: 'step';
  /** the token the edge fed (for the cloud's bookkeeping) */
  token: number;
}
export interface TokenMsg {
  type: 'token';
  id: number;
  /** generation ended after this token (stop id or limit); id is -1 when it ended without a new token */
  done: boolean;
  /** milliseconds spent in the cloud on this step: decode, back segment, sampling */
  cloudMs: number;
}
export interface ErrorMsg {
  type: 'error';
  code: string;
  message: string;
}
export interface Close {
  type: 'close';
}
/**
 * Moves the split to `split` between two steps. The side that gives layers away first sends their KV
 * (`kv` frames, edge → cloud when the split moves down); the cloud answers with `kv` frames for the
 * layers the edge takes (when it moves up), then `ready` with the new split.
 */
export interface Resplit {
  type: 'resplit';
  split: number;
  /** codec spec of the KV payloads in both directions (fp32 = lossless) */
  kvCodec: string;
}
/** KV cache of one layer: payload = u32 key bytes | key codec message | value codec message, each [KV·length, headDim] */
export interface KvMsg {
  type: 'kv';
  layer: number;
  length: number;
}

export type Message = Hello | Ready | Probe | Resume | Prefill | Step | TokenMsg | ErrorMsg | Close | Resplit | KvMsg;
export const MESSAGE_TYPES = ['hello', 'ready', 'probe', 'resume', 'prefill', 'step', 'token', 'error', 'close', 'resplit', 'kv'] as const;

export interface Frame {
  header: Message;
  payload: Uint8Array;
}

export function encodeFrame(header: Message, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = pack(header) as Uint8Array;
  const out = new Uint8Array(4 + h.length + payload.length);
  new DataView(out.buffer).setUint32(0, h.length, true);
  out.set(h, 4);
  out.set(payload, 4 + h.length);
  return out;
}

function bad(code: string, message: string): SplitLLMError {
  const e = new SplitLLMError('E_PROTOCOL', message);
  (e as SplitLLMError & { wireCode: string }).wireCode = code;
  return e;
}

/** Stable wire error codes (sent in `error` frames). */
export type WireCode =
  | 'bad_frame'
  | 'bad_msgpack'
  | 'unknown_type'
  | 'bad_version'
  | 'bad_model'
  | 'bad_hello'
  | 'bad_tensor'
  | 'nan_tensor'
  | 'frame_too_large'
  | 'unknown_session'
  | 'unauthorized'
  | 'step_before_prefill'
  | 'token_limit'
  | 'bad_resplit'
  | 'expired_session'
  | 'internal';

export function wireCodeOf(e: unknown): WireCode {
  return ((e as { wireCode?: WireCode }).wireCode ?? 'internal') as WireCode;
}

export function protocolError(code: WireCode, message: string): SplitLLMError {
  return bad(code, message);
}

export function decodeFrame(data: Uint8Array): Frame {
  if (data.length < 4) throw bad('bad_frame', `frame of ${data.length} bytes is shorter than its length prefix`);
  const hlen = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0, true);
  if (hlen > MAX_HEADER_BYTES || 4 + hlen > data.length) throw bad('bad_frame', `frame header length ${hlen} does not fit the ${data.length}-byte frame`);
  let header: unknown;
  try {
    header = unpack(data.subarray(4, 4 + hlen));
  } catch {
    throw bad('bad_msgpack', 'frame header is not valid msgpack');
  }
  if (!header || typeof header !== 'object' || typeof (header as { type?: unknown }).type !== 'string') {
    throw bad('bad_msgpack', 'frame header is not a msgpack map with a "type"');
  }
  const type = (header as { type: string }).type;
  if (!(MESSAGE_TYPES as readonly string[]).includes(type)) throw bad('unknown_type', `unknown message type "${type}"`);
  return { header: header as Message, payload: data.subarray(4 + hlen) };
}

/** Packs one layer's K and V codec messages into a `kv` payload. */
export function packKv(key: Uint8Array, value: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + key.length + value.length);
  new DataView(out.buffer).setUint32(0, key.length, true);
  out.set(key, 4);
  out.set(value, 4 + key.length);
  return out;
}

export function unpackKv(payload: Uint8Array): { key: Uint8Array; value: Uint8Array } {
  if (payload.length < 4) throw protocolError('bad_tensor', 'kv payload is shorter than its length prefix');
  const n = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(0, true);
  if (4 + n > payload.length) throw protocolError('bad_tensor', `kv key length ${n} does not fit the payload`);
  return { key: payload.subarray(4, 4 + n), value: payload.subarray(4 + n) };
}

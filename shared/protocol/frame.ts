/**
 * Framing: one WebSocket binary message is one frame,
 *
 *   u32 little-endian header length H | H bytes msgpack header {type, …} | raw payload bytes
 *
 * except the two frames of every token, which are compact and fixed-layout (no msgpack):
 *
 *   token: u32 0xFFFFFFFF | u8 1 | i32 id | u8 done (0/1) | f32 cloudMs          (14 bytes)
 *   step:  u32 0xFFFFFFFF | u8 2 | i32 token | raw payload bytes                   (9 + payload)
 *
 * (0xFFFFFFFF is never a header length: headers are at most MAX_HEADER_BYTES.) All little-endian.
 *
 * Control fields travel in the msgpack header; tensors (codec messages) travel as the raw payload, never
 * re-encoded. `kv` payloads pack a layer's key and value messages behind a u32 length.
 */
import { Packr } from 'msgpackr';
import type { Message } from './messages.js';
import { protocolError } from './errors.js';

export const MAX_HEADER_BYTES = 64 * 1024;

/** Plain maps and values only: no records, no extensions that build objects, no Map/Set. */
export const msgpack = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false, bundleStrings: false });

/** u32 little-endian length of `first` | first | rest: the layout of frames and of kv payloads. */
export function lengthPrefixed(first: Uint8Array, rest: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + first.length + rest.length);
  new DataView(out.buffer).setUint32(0, first.length, true);
  out.set(first, 4);
  out.set(rest, 4 + first.length);
  return out;
}

/** The first u32 of a compact frame. */
export const COMPACT_MARK = 0xffffffff;
/** The kind byte of each compact frame. */
export const COMPACT_KIND = { token: 1, step: 2 } as const;
/** Bytes of a compact token frame. */
export const COMPACT_TOKEN_BYTES = 14;
/** Bytes before a compact step frame's payload. */
export const COMPACT_STEP_HEADER = 9;

export function encodeFrame(header: Message, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  if (header.type === 'token') {
    const out = new Uint8Array(COMPACT_TOKEN_BYTES);
    const v = new DataView(out.buffer);
    v.setUint32(0, COMPACT_MARK, true);
    out[4] = COMPACT_KIND.token;
    v.setInt32(5, header.id, true);
    out[9] = header.done ? 1 : 0;
    v.setFloat32(10, header.cloudMs, true);
    return out;
  }
  if (header.type === 'step') {
    const out = new Uint8Array(COMPACT_STEP_HEADER + payload.length);
    const v = new DataView(out.buffer);
    v.setUint32(0, COMPACT_MARK, true);
    out[4] = COMPACT_KIND.step;
    v.setInt32(5, header.token, true);
    out.set(payload, COMPACT_STEP_HEADER);
    return out;
  }
  return lengthPrefixed(msgpack.pack(header), payload);
}

/** The frame's header bytes and payload, from its length prefix. */
export function splitFrame(data: Uint8Array): { header: Uint8Array; payload: Uint8Array } {
  if (data.length < 4) throw protocolError('bad_frame', `frame of ${data.length} bytes is shorter than its length prefix`);
  const hlen = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0, true);
  if (hlen > MAX_HEADER_BYTES || 4 + hlen > data.length) throw protocolError('bad_frame', `frame header length ${hlen} does not fit the ${data.length}-byte frame (at most ${MAX_HEADER_BYTES})`);
  return { header: data.subarray(4, 4 + hlen), payload: data.subarray(4 + hlen) };
}

/** Packs one layer's K and V codec messages into a `kv` payload. */
export function packKv(key: Uint8Array, value: Uint8Array): Uint8Array {
  return lengthPrefixed(key, value);
}

export function unpackKv(payload: Uint8Array): { key: Uint8Array; value: Uint8Array } {
  if (payload.length < 4) throw protocolError('bad_tensor', 'kv payload is shorter than its length prefix');
  const n = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(0, true);
  if (4 + n > payload.length) throw protocolError('bad_tensor', `kv key length ${n} does not fit the payload`);
  return { key: payload.subarray(4, 4 + n), value: payload.subarray(4 + n) };
}

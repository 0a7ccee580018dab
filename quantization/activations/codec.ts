/** The activation codec contract: hidden state [tokens, dim] float32 ⇄ self-describing bytes. */
import type { ContextSet } from './context.js';
import type { CodecId } from './format.js';

export interface Decoded {
  x: Float32Array;
  tokens: number;
  dim: number;
}

export interface Codec {
  /** canonical spec string, e.g. "ts-tabq:eps=0.02,tau=1.5" */
  readonly spec: string;
  readonly id: CodecId;
  /** lossless codecs promise exact round trips */
  readonly lossless: boolean;
  encode(x: Float32Array, tokens: number, dim: number): Uint8Array;
  decode(bytes: Uint8Array, opts?: DecodeOptions): Decoded;
}

export interface DecodeOptions {
  /** refuse messages with more values than this (default 2^26) */
  maxValues?: number;
  /** calibration contexts, by id, for messages coded against one (`ts-tabq:cal=K`) */
  contexts?: ContextSet;
}

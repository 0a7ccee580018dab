/**
 * The activation codec contract: hidden state [tokens, dim] float32 ⇄ self-describing bytes; and the
 * definition each codec file exports, which is all the registry (registry.ts) knows of a codec.
 */
import type { CodecContext, ContextSet } from './context.js';
import type { CodecId, Header } from './format.js';
import type { ParsedSpec } from './spec.js';

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

/** Where codecs bound to a calibration (`cal=K`) find its context: the model's calibration, per split. */
export interface CodecEnv {
  context?: (split: number) => CodecContext | undefined;
  /** the calibrated default codec of a split (what a bare `ts-tabq` means there) */
  defaultCodec?: (split: number) => string | undefined;
  /** whether the model has a calibration at all (a bare `ts-tabq` without one is an error) */
  calibrated?: boolean;
}

/**
 * A codec as the registry sees it. Adding a codec is one file exporting one of these plus one line in
 * registry.ts's table.
 */
export interface CodecDefinition {
  /** the spec name (`fp32`, `uniform`, `ts-tabq`) and any other names it answers to */
  readonly names: readonly string[];
  /** one line for listings and errors */
  readonly summary: string;
  /** message ids this definition decodes (a codec may write another's format: uniform writes ts-tabq messages) */
  readonly decodes: readonly CodecId[];
  /** whether this definition takes a spec of its name (several may share a name: `ts-tabq` with and without `cal`) */
  accepts?(p: ParsedSpec): boolean;
  create(p: ParsedSpec, env: CodecEnv): Codec;
  decode(bytes: Uint8Array, header: Header, opts: DecodeOptions): Decoded;
  /** the spec this one means at another split (a calibrated codec follows the split's context), or undefined for itself */
  atSplit?(p: ParsedSpec, split: number, env: CodecEnv): string | undefined;
}

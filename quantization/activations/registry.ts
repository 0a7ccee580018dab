/**
 * The codec registry: one table of codec definitions. A spec string names a codec and its parameters —
 * `fp32`, `fp16`, `int8`, `uniform:4`, `topk:5`, `lowrank:8`, `ts-tabq`, `ts-tabq:eps=0.03,tau=1.9`,
 * `ts-tabq:budget=3.5,tau=auto,q=0.995,group=64,outliers=f16`, and against the calibration of split K
 * `ts-tabq:cal=K,eps=0.08,tau=6` or `ts-tabq:cal=K,step=0.3` (needs the calibration's contexts).
 * `decodeMessage` reads any codec's message by the id in its header. A new codec is one file that exports
 * a `CodecDefinition` plus one line in CODECS.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { fp16Definition, fp32Definition, int8Definition } from './basic.js';
import type { Codec, CodecDefinition, CodecEnv, Decoded, DecodeOptions } from './codec.js';
import { corrupt, readHeader } from './format.js';
import { lowrankDefinition } from './lowrank.js';
import { topkDefinition } from './sparse.js';
import { parseSpec, type ParsedSpec } from './spec.js';
import { tabqEcDefinition } from './tabq-ec.js';
import { tabqDefinition, uniformDefinition } from './tabq.js';

export type { CodecEnv } from './codec.js';
export { parseSpec, type ParsedSpec } from './spec.js';

/** Every codec; the first definition of a name that accepts a spec makes it. */
export const CODECS: readonly CodecDefinition[] = [fp32Definition, fp16Definition, int8Definition, uniformDefinition, topkDefinition, lowrankDefinition, tabqEcDefinition, tabqDefinition];

export const CODEC_NAMES: readonly string[] = [...new Set(CODECS.map((d) => d.names[0]!))];

/** Each wire id is decoded by one definition: two codec files that claimed the same id would misread each other's messages. */
export function checkWireIds(defs: readonly CodecDefinition[]): void {
  const seen = new Map<number, string>();
  for (const d of defs) {
    for (const id of d.decodes) {
      if (!Number.isInteger(id) || id < 1 || id > 255) throw new Error(`codec ${d.names[0]}: wire id ${id} is not a byte from 1 to 255`);
      const other = seen.get(id);
      if (other !== undefined) throw new Error(`codecs ${other} and ${d.names[0]} both claim wire id ${id}: give one another id`);
      seen.set(id, d.names[0]!);
    }
  }
}
checkWireIds(CODECS);

function definitionOf(p: ParsedSpec): CodecDefinition {
  const def = CODECS.find((d) => d.names.includes(p.name) && (d.accepts?.(p) ?? true));
  if (!def) throw new SplitLLMError('E_CODEC_SPEC', `unknown codec "${p.name}": choose one of ${CODEC_NAMES.join(', ')}`);
  return def;
}

export function createCodec(spec: string, env: CodecEnv = {}): Codec {
  const p = parseSpec(spec);
  return definitionOf(p).create(p, env);
}

/**
 * The codec a spec names at a split: each definition says what it means there (a bare `ts-tabq` is that
 * split's calibrated default, a codec bound to a calibration follows the split to its context), so an
 * edge that moves its split keeps coding against the statistics of the layer it sends. `default` is the
 * split's calibrated codec or an error.
 */
export function codecAtSplit(spec: string, split: number, env: CodecEnv = {}): Codec {
  const p = parseSpec(spec);
  if (p.name === 'default' && p.arg === undefined && p.params.size === 0) {
    const chosen = env.defaultCodec?.(split);
    if (!chosen) throw new SplitLLMError('E_CODEC_SPEC', `no calibrated codec for split ${split}: run 'splitllm calibrate' or name a codec`);
    return createCodec(chosen, env);
  }
  const def = definitionOf(p);
  const moved = def.atSplit?.(p, split, env);
  return moved === undefined ? def.create(p, env) : createCodec(moved, env);
}

/** Decodes a message of any codec, by the id in its header. */
export function decodeMessage(bytes: Uint8Array, opts: DecodeOptions = {}): Decoded {
  const h = readHeader(bytes, opts.maxValues);
  const def = CODECS.find((d) => d.decodes.includes(h.codec));
  if (!def) throw corrupt(`unknown codec id ${h.codec}`);
  return def.decode(bytes, h, opts);
}

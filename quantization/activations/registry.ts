/**
 * Codec registry: a spec string names a codec and its parameters —
 * `fp32`, `fp16`, `int8`, `uniform:4`, `topk:5`, `lowrank:8`, `ts-tabq`, `ts-tabq:eps=0.03,tau=1.9`,
 * `ts-tabq:budget=3.5,tau=auto,q=0.995,group=64,outliers=f16`, and against the calibration of split K
 * `ts-tabq:cal=K,eps=0.08,tau=6` or `ts-tabq:cal=K,step=0.3` (needs the calibration's contexts).
 * `decodeMessage` reads any codec's message by the id in its header.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { Fp16Codec, Fp32Codec, Int8Codec } from './basic.js';
import type { Codec, Decoded, DecodeOptions } from './codec.js';
import { CodecId, corrupt, readHeader } from './format.js';
import { decodeLowrank, LowrankCodec } from './lowrank.js';
import { decodeTopk, TopkCodec } from './sparse.js';
import type { CodecContext } from './context.js';
import { decodeTabqEc, DEFAULT_TABQ_EC, TabqEcCodec, type TabqEcParams } from './tabq-ec.js';
import { decodeTabq, DEFAULT_TABQ, TabqCodec, validateTabq, type TabqParams } from './tabq.js';

export const CODEC_NAMES = ['fp32', 'fp16', 'int8', 'uniform', 'topk', 'lowrank', 'ts-tabq'] as const;

export interface ParsedSpec {
  name: string;
  /** a bare argument (`uniform:4`) */
  arg?: string;
  params: Map<string, string>;
}

export function parseSpec(spec: string): ParsedSpec {
  const s = spec.trim();
  const colon = s.indexOf(':');
  const name = (colon < 0 ? s : s.slice(0, colon)).toLowerCase();
  const params = new Map<string, string>();
  let arg: string | undefined;
  if (colon >= 0) {
    for (const part of s.slice(colon + 1).split(',')) {
      if (!part) continue;
      const eq = part.indexOf('=');
      if (eq < 0) {
        if (arg !== undefined) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": only one bare argument is allowed`);
        arg = part.trim();
      } else {
        params.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
      }
    }
  }
  return { name, arg, params };
}

function num(spec: string, key: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v === '' || !Number.isFinite(n)) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": ${key} must be a number, got "${v}"`);
  return n;
}

function only(spec: string, p: ParsedSpec, allowed: string[]): void {
  for (const k of p.params.keys()) {
    if (!allowed.includes(k)) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": unknown parameter "${k}" (allowed: ${allowed.join(', ') || 'none'})`);
  }
}

export function tabqParamsFrom(spec: string, p: ParsedSpec): TabqParams {
  only(spec, p, ['eps', 'budget', 'tau', 'q', 'group', 'outliers', 'entropy']);
  if (p.arg !== undefined) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": use named parameters, e.g. ts-tabq:eps=0.05`);
  if (p.params.has('eps') && p.params.has('budget')) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": give eps or budget, not both`);
  const tauRaw = p.params.get('tau');
  const tau = tauRaw === undefined || tauRaw === 'auto' ? NaN : tauRaw === 'none' ? Infinity : num(spec, 'tau', tauRaw)!;
  const budget = num(spec, 'budget', p.params.get('budget'));
  return validateTabq(
    {
      mode: budget !== undefined ? 'budget' : 'eps',
      eps: num(spec, 'eps', p.params.get('eps')) ?? DEFAULT_TABQ.eps,
      bits: budget ?? DEFAULT_TABQ.bits,
      tau,
      q: num(spec, 'q', p.params.get('q')) ?? DEFAULT_TABQ.q,
      group: num(spec, 'group', p.params.get('group')) ?? 0,
      outliers: (p.params.get('outliers') ?? 'f32') as 'f32' | 'f16',
      entropy: (p.params.get('entropy') ?? 'off') as 'off' | 'on' | 'auto',
    },
    spec,
  );
}

/** Where codecs bound to a calibration (`cal=K`) find its context: the model's calibration, per split. */
export interface CodecEnv {
  context?: (split: number) => CodecContext | undefined;
  /** the calibrated default codec of a split (what a bare `ts-tabq` means there) */
  defaultCodec?: (split: number) => string | undefined;
}

function tabqEcParamsFrom(spec: string, p: ParsedSpec): TabqEcParams {
  only(spec, p, ['cal', 'eps', 'step', 'tau', 'outliers']);
  if (p.arg !== undefined) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": use named parameters, e.g. ts-tabq:cal=1,eps=0.08`);
  if (p.params.has('eps') && p.params.has('step')) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": give eps or step, not both`);
  const cal = num(spec, 'cal', p.params.get('cal'))!;
  if (!Number.isInteger(cal) || cal < 0) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": cal must be a split layer, got ${cal}`);
  const tauRaw = p.params.get('tau');
  const outliers = p.params.get('outliers') ?? 'f32';
  if (outliers !== 'f32' && outliers !== 'f16') throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": outliers must be f32 or f16`);
  const step = num(spec, 'step', p.params.get('step'));
  return {
    cal,
    mode: step !== undefined ? 'step' : 'eps',
    eps: num(spec, 'eps', p.params.get('eps')) ?? DEFAULT_TABQ_EC.eps,
    step: step ?? DEFAULT_TABQ_EC.step,
    tau: tauRaw === undefined ? DEFAULT_TABQ_EC.tau : tauRaw === 'none' ? Infinity : num(spec, 'tau', tauRaw)!,
    outliers,
  };
}

/**
 * The codec a spec names at a split: a bare `ts-tabq` is that split's calibrated default when there is
 * one, and a spec bound to a calibration (`cal=K`) follows the split to that split's context, so an edge
 * that moves its split keeps coding against the statistics of the layer it sends.
 */
export function codecAtSplit(spec: string, split: number, env: CodecEnv = {}): Codec {
  const bare = spec.trim().toLowerCase();
  if (bare === 'ts-tabq' || bare === 'default') {
    const chosen = env.defaultCodec?.(split);
    if (chosen) return createCodec(chosen, env);
    if (bare === 'default') throw new SplitLLMError('E_CODEC_SPEC', `no calibrated codec for split ${split}: run 'splitllm calibrate' or name a codec`);
  }
  const moved = /(^|[:,])cal=\d+/.test(spec) && env.context?.(split) ? spec.replace(/((?:^|[:,])cal=)\d+/, `$1${split}`) : spec;
  return createCodec(moved, env);
}

export function createCodec(spec: string, env: CodecEnv = {}): Codec {
  const p = parseSpec(spec);
  const positional = (key: string): number => {
    only(spec, p, [key]);
    const v = num(spec, key, p.arg ?? p.params.get(key));
    if (v === undefined) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}" needs its ${key}, e.g. ${p.name}:4`);
    return v;
  };
  switch (p.name) {
    case 'fp32':
    case 'fp16':
    case 'int8':
      only(spec, p, []);
      if (p.arg !== undefined) throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}" takes no parameters`);
      return p.name === 'fp32' ? new Fp32Codec() : p.name === 'fp16' ? new Fp16Codec() : new Int8Codec();
    case 'uniform': {
      const bits = positional('bits');
      return new TabqCodec(validateTabq({ ...DEFAULT_TABQ, mode: 'fixed', bits, tau: Infinity }, spec));
    }
    case 'topk':
      return new TopkCodec(positional('percent'));
    case 'lowrank':
      return new LowrankCodec(positional('rank'));
    case 'ts-tabq':
    case 'tstabq': {
      if (!p.params.has('cal')) return new TabqCodec(tabqParamsFrom(spec, p));
      const params = tabqEcParamsFrom(spec, p);
      const ctx = env.context?.(params.cal);
      if (!ctx) {
        throw new SplitLLMError('E_CODEC_CONTEXT', `codec "${spec}" needs the calibration of split ${params.cal}, which is not loaded: run 'splitllm calibrate' for this model (or pass --calibration FILE)`);
      }
      return new TabqEcCodec(params, ctx);
    }
    default:
      throw new SplitLLMError('E_CODEC_SPEC', `unknown codec "${p.name}": choose one of ${CODEC_NAMES.join(', ')}`);
  }
}

/** Decodes a message of any codec, by the id in its header. */
export function decodeMessage(bytes: Uint8Array, opts: DecodeOptions = {}): Decoded {
  const h = readHeader(bytes, opts.maxValues);
  switch (h.codec) {
    case CodecId.fp32:
      return new Fp32Codec().decode(bytes, opts);
    case CodecId.fp16:
      return new Fp16Codec().decode(bytes, opts);
    case CodecId.int8:
      return new Int8Codec().decode(bytes, opts);
    case CodecId.tabq:
      return decodeTabq(bytes, h.tokens, h.dim);
    case CodecId.topk:
      return decodeTopk(bytes, h.tokens, h.dim);
    case CodecId.lowrank:
      return decodeLowrank(bytes, h.tokens, h.dim);
    case CodecId.tabqEc:
      return decodeTabqEc(bytes, h.tokens, h.dim, opts.contexts);
    default:
      throw corrupt(`unknown codec id ${h.codec}`);
  }
}

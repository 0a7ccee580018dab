/**
 * Codec spec strings: a name and parameters, `uniform:4`, `ts-tabq:eps=0.03,tau=1.9`. Parsed here once;
 * each codec's definition reads its own parameters with the helpers below.
 */
import { SplitLLMError } from '../../shared/errors.js';

export interface ParsedSpec {
  /** the spec as given, for messages */
  spec: string;
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
  return { spec, name, arg, params };
}

export function specError(p: ParsedSpec, why: string): SplitLLMError {
  return new SplitLLMError('E_CODEC_SPEC', `codec "${p.spec}": ${why}`);
}

/** A numeric parameter, or undefined when absent. */
export function numParam(p: ParsedSpec, key: string, v: string | undefined = p.params.get(key)): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v === '' || !Number.isFinite(n)) throw specError(p, `${key} must be a number, got "${v}"`);
  return n;
}

/** Refuses parameters other than `allowed`. */
export function onlyParams(p: ParsedSpec, allowed: string[]): void {
  for (const k of p.params.keys()) {
    if (!allowed.includes(k)) throw specError(p, `unknown parameter "${k}" (allowed: ${allowed.join(', ') || 'none'})`);
  }
}

/** A codec that takes no parameters at all. */
export function noParams(p: ParsedSpec): void {
  onlyParams(p, []);
  if (p.arg !== undefined) throw specError(p, 'takes no parameters');
}

/** The one positional parameter of `uniform:4`, `topk:5`, `lowrank:8` (also as `bits=4` …). */
export function positionalParam(p: ParsedSpec, key: string): number {
  onlyParams(p, [key]);
  const v = numParam(p, key, p.arg ?? p.params.get(key));
  if (v === undefined) throw specError(p, `needs its ${key}, e.g. ${p.name}:4`);
  return v;
}

/** A string parameter restricted to `choices`. */
export function choiceParam<T extends string>(p: ParsedSpec, key: string, choices: readonly T[], fallback: T): T {
  const v = p.params.get(key) ?? fallback;
  const hit = choices.find((c) => c === v);
  if (hit === undefined) throw specError(p, `${key} must be ${choices.join(' or ')}, got "${v}"`);
  return hit;
}

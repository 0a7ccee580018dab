/**
 * Checked reads of an untrusted map — a decoded frame, a parsed JSON file — for the one place each
 * input is parsed. Every read checks its type and range and fails through the caller's `fail`, which
 * throws the caller's typed error (a `ProtocolError` with a wire code, a `SplitLLMError` naming the
 * file); callers build fresh objects from what they read, so nothing past the boundary casts.
 */

import { SplitLLMError, type ErrorCode } from './errors.js';

export type Raw = Record<string, unknown>;
/** Throws the caller's error for a message such as "where: field must be …". */
export type Fail = (message: string) => never;

/** The `Fail` of a file boundary: a typed error of `code`, with how to fix it appended when given. */
export function failWith(code: ErrorCode, fix?: string): Fail {
  return (message) => {
    throw new SplitLLMError(code, fix ? `${message}: ${fix}` : message);
  };
}

export function isPlainMap(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** A short description of a wrong value, for error messages (never the value itself when it is large). */
export function describe(v: unknown): string {
  if (v === undefined || v === null) return 'nothing';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return v.length <= 40 ? JSON.stringify(v) : `a string of ${v.length} characters`;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return `a ${typeof v}`;
}

function range(name: string, v: number, min: number, max: number): string {
  if (min === -Infinity) return `${name} must be at most ${max}, got ${v}`;
  if (max === Infinity) return `${name} must be at least ${min}, got ${v}`;
  return `${name} ${v} is outside ${min}..${max}`;
}

export class Fields {
  constructor(
    readonly raw: Raw,
    /** where these fields are: a message type, a file, a file and a key */
    readonly path: string,
    private readonly onFail: Fail,
  ) {}

  /** The fields of `v`, which must be a map. */
  static of(v: unknown, path: string, onFail: Fail, what = 'a map'): Fields {
    if (!isPlainMap(v)) onFail(`${path}: must be ${what}, got ${describe(v)}`);
    return new Fields(v, path, onFail);
  }

  fail(why: string): never {
    return this.onFail(`${this.path}: ${why}`);
  }

  has(name: string): boolean {
    return this.raw[name] !== undefined && this.raw[name] !== null;
  }

  value(name: string): unknown {
    return this.raw[name];
  }

  int(name: string, min: number, max: number, v: unknown = this.raw[name]): number {
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(`${name} must be an integer, got ${describe(v)}`);
    if (v < min || v > max) this.fail(`${name} ${v} is outside ${min}..${max}`);
    return v;
  }

  optInt(name: string, min: number, max: number): number | undefined {
    return this.has(name) ? this.int(name, min, max) : undefined;
  }

  num(name: string, min = -Infinity, max = Infinity, v: unknown = this.raw[name]): number {
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(`${name} must be a finite number, got ${describe(v)}`);
    if (v < min || v > max) this.fail(range(name, v, min, max));
    return v;
  }

  /** A finite number above zero. */
  positive(name: string): number {
    const v = this.num(name);
    return v > 0 ? v : this.fail(`${name} must be positive, got ${v}`);
  }

  optNum(name: string, min = -Infinity, max = Infinity): number | undefined {
    return this.has(name) ? this.num(name, min, max) : undefined;
  }

  str(name: string, maxLength = 1 << 20, minLength = 1): string {
    const v = this.raw[name];
    if (typeof v !== 'string') this.fail(`${name} must be a string, got ${describe(v)}`);
    if (v.length < minLength || v.length > maxLength) this.fail(`${name} must be ${minLength}..${maxLength} characters, got ${v.length}`);
    return v;
  }

  optStr(name: string, maxLength?: number): string | undefined {
    return this.has(name) ? this.str(name, maxLength) : undefined;
  }

  bool(name: string): boolean {
    const v = this.raw[name];
    if (typeof v !== 'boolean') this.fail(`${name} must be true or false, got ${describe(v)}`);
    return v;
  }

  optBool(name: string): boolean | undefined {
    return this.has(name) ? this.bool(name) : undefined;
  }

  intArray(name: string, maxLength: number, min: number, max: number): number[] {
    const v = this.array(name, maxLength);
    return v.map((x, i) => this.int(`${name}[${i}]`, min, max, x));
  }

  numArray(name: string, maxLength: number, min = -Infinity, max = Infinity): number[] {
    const v = this.array(name, maxLength);
    return v.map((x, i) => this.num(`${name}[${i}]`, min, max, x));
  }

  array(name: string, maxLength: number): unknown[] {
    const v = this.raw[name];
    if (!Array.isArray(v)) this.fail(`${name} must be an array, got ${describe(v)}`);
    if (v.length > maxLength) this.fail(`${name} holds ${v.length} entries, at most ${maxLength}`);
    return v;
  }

  map(name: string): Fields {
    const v = this.raw[name];
    if (!isPlainMap(v)) this.fail(`${name} must be a map, got ${describe(v)}`);
    return new Fields(v, `${this.path}.${name}`, this.onFail);
  }

  optMap(name: string): Fields | undefined {
    return this.has(name) ? this.map(name) : undefined;
  }

  /** The keys of this map (own, enumerable). */
  keys(): string[] {
    return Object.keys(this.raw);
  }

  /** A map of string keys to numbers, every value checked. */
  numberRecord(name: string, min = -Infinity, max = Infinity): Record<string, number> {
    const m = this.map(name);
    const out: Record<string, number> = {};
    for (const k of m.keys()) out[k] = m.num(k, min, max);
    return out;
  }
}

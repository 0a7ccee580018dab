/**
 * Settings beyond the command line, for commands that run as services (`splitllm cloud`): every option
 * can also come from an environment variable `SPLITLLM_<NAME>` (dashes as underscores) or from a config
 * file (`--config FILE`, YAML or JSON, keys as the flags are named or in camelCase). Precedence: flag >
 * environment > file > default. Values from the environment and the file go through the option's own
 * parser, so `maxFrameBytes: 16MiB` and `SPLITLLM_IDLE_MS=5m` mean what the flags mean; a wrong one is a
 * usage error naming where it came from.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { SplitLLMError } from '../shared/errors.js';
import { describe, isPlainMap } from '../shared/fields.js';

export type Source = 'flag' | 'env' | 'file' | 'default';

/** An option as the settings layer sees it: its name, whether it is a flag, and whether env may set it. */
export interface LayeredOption {
  flag: boolean;
  /** the environment never sets it (a secret with its own variable) */
  noEnv?: boolean;
}

export const envName = (option: string): string => `SPLITLLM_${option.toUpperCase().replace(/-/g, '_')}`;
const camel = (option: string): string => option.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Reads a config file: a map of option names (flag or camelCase spelling) to scalars or lists. */
export function readConfigFile(path: string, options: Record<string, LayeredOption>, didYouMean: (k: string) => string): Map<string, string | boolean> {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new SplitLLMError('E_BAD_CONFIG', `${path} is not valid YAML or JSON (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
  }
  if (raw === null || raw === undefined) return new Map();
  if (!isPlainMap(raw)) throw new SplitLLMError('E_BAD_CONFIG', `${path} must be a map of option names to values, got ${describe(raw)}`);
  const byKey = new Map<string, string>();
  for (const name of Object.keys(options)) {
    byKey.set(name, name);
    byKey.set(camel(name), name);
  }
  const out = new Map<string, string | boolean>();
  for (const [key, v] of Object.entries(raw)) {
    const name = byKey.get(key);
    if (name === undefined) throw new SplitLLMError('E_BAD_CONFIG', `${path}: unknown setting "${key}"${didYouMean(key)}`);
    const o = options[name];
    if (o?.flag) {
      if (typeof v !== 'boolean') throw new SplitLLMError('E_BAD_CONFIG', `${path}: ${key} must be true or false, got ${describe(v)}`);
      out.set(name, v);
    } else if (typeof v === 'string' || typeof v === 'number') out.set(name, String(v));
    else if (Array.isArray(v) && v.every((x) => typeof x === 'string' || typeof x === 'number')) out.set(name, v.join(','));
    else throw new SplitLLMError('E_BAD_CONFIG', `${path}: ${key} must be a string, a number or a list of them, got ${describe(v)}`);
  }
  return out;
}

/** A flag's value from the environment: 1/true/yes or 0/false/no. */
export function envFlag(name: string, raw: string): boolean {
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)?$/i.test(raw)) return false;
  throw new SplitLLMError('E_USAGE', `$${envName(name)} must be true or false, got "${raw}"`);
}

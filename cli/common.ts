/** What every subcommand shares: option parsing, --help, typed errors, progress on stderr. */
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { SplitLLMError } from '../shared/errors.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { openModel, type ModelPackage } from '../models/package.js';

export type OptionSpec = NonNullable<ParseArgsConfig['options']>[string] & { description: string; valueName?: string };

export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: Record<string, OptionSpec>;
  positionals?: boolean;
  run(values: Record<string, unknown>, positionals: string[]): Promise<number | void>;
}

export function helpText(cmd: Command): string {
  const lines = [`usage: ${cmd.usage}`, '', cmd.summary, '', 'options:'];
  const all = { ...cmd.options, help: { type: 'boolean', description: 'show this help' } as OptionSpec };
  for (const [name, o] of Object.entries(all)) {
    const flag = `--${name}${o.type === 'string' ? ` ${o.valueName ?? name.toUpperCase().replace(/-/g, '_')}` : ''}`;
    const def = o.default !== undefined && o.default !== '' && o.type === 'string' ? ` (default ${String(o.default)})` : '';
    lines.push(`  ${flag.padEnd(30)} ${o.description}${def}`);
  }
  return lines.join('\n');
}

export async function runCommand(cmd: Command, argv: string[]): Promise<number> {
  const options: ParseArgsConfig['options'] = { help: { type: 'boolean', short: 'h' } };
  for (const [k, o] of Object.entries(cmd.options)) {
    const { description: _d, valueName: _v, ...rest } = o;
    options[k] = rest;
  }
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: !!cmd.positionals, strict: true }) as typeof parsed;
  } catch (e) {
    throw new SplitLLMError('E_USAGE', `${(e as Error).message.split('\n')[0]} (see 'splitllm ${cmd.name} --help')`);
  }
  if (parsed.values['help']) {
    process.stdout.write(helpText(cmd) + '\n');
    return 0;
  }
  return (await cmd.run(parsed.values, parsed.positionals)) ?? 0;
}

export function requireString(values: Record<string, unknown>, name: string, cmd: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.length === 0) throw new SplitLLMError('E_USAGE', `--${name} is required (see 'splitllm ${cmd} --help')`);
  return v;
}

export function intOption(values: Record<string, unknown>, name: string, def?: number, min = 0): number | undefined {
  const v = values[name];
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new SplitLLMError('E_USAGE', `--${name} must be an integer ≥ ${min}, got "${String(v)}"`);
  return n;
}

export function numberOption(values: Record<string, unknown>, name: string, def?: number): number | undefined {
  const v = values[name];
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new SplitLLMError('E_USAGE', `--${name} must be a number, got "${String(v)}"`);
  return n;
}

/** A fraction given as "1%", "0.5 %" or "0.01". */
export function percentOption(values: Record<string, unknown>, name: string, def: number): number {
  const v = values[name];
  if (v === undefined) return def;
  const s = String(v).trim();
  const n = s.endsWith('%') ? Number(s.slice(0, -1)) / 100 : Number(s);
  if (!Number.isFinite(n) || n < 0) throw new SplitLLMError('E_USAGE', `--${name} must be a percentage like 1% or a fraction like 0.01, got "${s}"`);
  return n;
}

/** Progress lines on stderr, at most one every `everyMs` (always the last one). */
export function progress(label: string, everyMs = 2000): (done: number, total: number) => void {
  let last = 0;
  const t0 = Date.now();
  return (done, total) => {
    const now = Date.now();
    if (done < total && now - last < everyMs) return;
    last = now;
    const secs = ((now - t0) / 1000).toFixed(1);
    process.stderr.write(`${label}: ${done}/${total} (${secs}s)\n`);
  };
}

/** Prompt, length and sampling options shared by generate and edge. */
export const generationOptions: Record<string, OptionSpec> = {
  prompt: { type: 'string', short: 'p', description: 'prompt text (empty: generate from BOS alone)', default: '' },
  'max-tokens': { type: 'string', short: 'n', description: "most tokens to generate (default 256, or what the model's maximum sequence leaves after the prompt)", valueName: 'N' },
  temperature: { type: 'string', short: 't', description: 'sampling temperature, 0 = greedy', default: '0' },
  'top-k': { type: 'string', description: 'sample among the k most likely tokens (0 = off)', default: '0' },
  'top-p': { type: 'string', description: 'nucleus sampling mass', default: '1' },
  seed: { type: 'string', description: 'sampling seed' },
};

/** --max-tokens, or by default 256 capped to what the model's maximum sequence leaves after the prompt. */
export function maxTokensOption(values: Record<string, unknown>, maxSeq: number, promptTokens: number): number {
  return intOption(values, 'max-tokens') ?? Math.max(0, Math.min(256, maxSeq - promptTokens));
}

export function samplingFrom(values: Record<string, unknown>): { temperature?: number; topK?: number; topP?: number; seed?: number } {
  return {
    temperature: numberOption(values, 'temperature', 0),
    topK: intOption(values, 'top-k', 0),
    topP: numberOption(values, 'top-p', 1),
    seed: intOption(values, 'seed'),
  };
}

export const modelOptions: Record<string, OptionSpec> = {
  model: { type: 'string', short: 'm', description: 'model package directory, Hugging Face directory or llama2.c .bin (default: the bundled models/default)', valueName: 'PATH' },
  tokenizer: { type: 'string', description: 'llama2.c tok*.bin for a .bin checkpoint (default: tok<vocab>.bin next to it)', valueName: 'PATH' },
};

/** The --model option's path: the bundled default model when none is given. */
export function modelPath(values: Record<string, unknown>): string {
  const v = values['model'];
  return typeof v === 'string' && v.length > 0 ? v : DEFAULT_MODEL_DIR;
}

/** Opens the model the options name (--model, --tokenizer). */
export function openModelOption(values: Record<string, unknown>): Promise<ModelPackage> {
  return openModel(modelPath(values), { tokenizer: values['tokenizer'] as string | undefined });
}

/** Reads a JSON file; a missing file or bad JSON is a one-line typed error (`hint` says how to make one). */
export function readJsonFile(path: string, what: string, hint = 'check the path'): unknown {
  if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${what} ${path} does not exist: ${hint}`);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new SplitLLMError('E_BAD_CONFIG', `${path} is not valid JSON`);
  }
}

/** The --cloud option as the session endpoint: ws(s)://host:port[/v1/session]. */
export function sessionUrl(values: Record<string, unknown>, cmd: string): string {
  const url = requireString(values, 'cloud', cmd);
  if (!/^wss?:\/\//.test(url)) throw new SplitLLMError('E_USAGE', `--cloud ${url} is not a ws:// or wss:// URL`);
  return /\/v1\/session$/.test(url) ? url : url.replace(/\/$/, '') + '/v1/session';
}

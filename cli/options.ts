/**
 * The CLI's typed options and commands. An option says its kind (string, int, number, percent, bytes,
 * duration, bandwidth, list, existing file, choice, flag), its default once (shown in --help) and its
 * bounds; parsing turns argv into a typed object, so a command reads `v.port` as a number. Commands
 * may have subcommands (`splitllm profile device`); unknown commands and flags get a "did you mean".
 */
import { existsSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SplitLLMError } from '../shared/errors.js';
import { BLOCK_SIZES, isBlockSize } from '../shared/precision.js';
import { parseBandwidth, parseBytes, parseDuration, parsePercent } from './units.js';
import { envFlag, envName, readConfigFile, type Source } from './settings.js';

export interface Option<T, HasValue extends boolean = boolean> {
  readonly description: string;
  readonly short?: string;
  /** the placeholder in --help (`--port N`) */
  readonly valueName?: string;
  /** the default, as the command gets it */
  readonly default?: T;
  /** how the default reads in --help (set when it is not simply the value, or computed) */
  readonly defaultText?: string;
  /** must be given */
  readonly required?: boolean;
  readonly flag: boolean;
  /** with layered settings: the environment never sets it (a secret with a variable of its own) */
  readonly noEnv?: boolean;
  /** present in the parsed values whenever the option has a default or is required (type-level) */
  readonly hasValue?: HasValue;
  parse(raw: string, name: string): T;
}

export type Options = Record<string, Option<unknown>>;

export type Values<O extends Options> = {
  -readonly [K in keyof O]: O[K] extends Option<infer T, true> ? T : O[K] extends Option<infer T, boolean> ? T | undefined : never;
};

interface Spec<T> {
  description: string;
  short?: string;
  valueName?: string;
  defaultText?: string;
  noEnv?: boolean;
}
type WithDefault<T> = Spec<T> & { default: T };
type Required<T> = Spec<T> & { required: true };

function make<T>(spec: Spec<T> & { default?: T; required?: boolean }, parse: (raw: string, flag: string) => T, valueName: string): Option<T, boolean> {
  return { flag: false, valueName, ...spec, parse };
}

const flagName = (name: string) => `--${name}`;

function numberIn(min: number, max: number, integer = false) {
  return (raw: string, name: string): number => {
    const n = Number(raw);
    if (raw.trim() === '' || !(integer ? Number.isInteger(n) : Number.isFinite(n))) throw new SplitLLMError('E_USAGE', `${flagName(name)} must be ${integer ? 'an integer' : 'a number'}, got "${raw}"`);
    if (n < min || n > max) throw new SplitLLMError('E_USAGE', `${flagName(name)} ${n} is outside ${min}..${max}`);
    return n;
  };
}

const intIn = (min: number, max: number) => numberIn(min, max, true);

type Builder<T, X = object> = {
  (spec: WithDefault<T> & X): Option<T, true>;
  (spec: Required<T> & X): Option<T, true>;
  (spec: Spec<T> & X): Option<T, false>;
};

function builder<T, X = object>(valueName: string, parser: (spec: X) => (raw: string, flag: string) => T): Builder<T, X> {
  return ((spec: Spec<T> & X & { default?: T; required?: boolean }) => make(spec, parser(spec), valueName)) as Builder<T, X>;
}

export const opt = {
  string: builder<string>('S', () => (raw) => raw),
  int: builder<number, { min?: number; max?: number }>('N', (s) => intIn(s.min ?? 0, s.max ?? Number.MAX_SAFE_INTEGER)),
  number: builder<number, { min?: number; max?: number }>('X', (s) => numberIn(s.min ?? -Infinity, s.max ?? Infinity)),
  /** a TCP port (0 = any free one) */
  port: builder<number>('PORT', () => intIn(0, 65535)),
  /** a fraction written as a percentage: 1% */
  percent: builder<number>('P%', () => (raw, name) => parsePercent(raw, flagName(name))),
  /** bytes with a unit: 512MB, 64KiB (a bare number only where the flag names bytes: bare 'b') */
  bytes: builder<number, { bare?: 'b' }>('SIZE', (s) => (raw, name) => parseBytes(raw, flagName(name), s.bare)),
  /** milliseconds from 40ms, 2s, 1m (a bare number only where the flag names ms: bare 'ms') */
  duration: builder<number, { bare?: 'ms' }>('TIME', (s) => (raw, name) => parseDuration(raw, flagName(name), s.bare)),
  /** bytes per second from 10mbit, 2MB/s */
  bandwidth: builder<number>('RATE', () => (raw, name) => parseBandwidth(raw, flagName(name))),
  /** a path that must exist */
  file: builder<string, { hint?: string }>('FILE', (s) => (raw, name) => {
    if (!existsSync(raw)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${flagName(name)} ${raw} does not exist${s.hint ? `: ${s.hint}` : ': check the path'}`);
    if (statSync(raw).isDirectory()) throw new SplitLLMError('E_USAGE', `${flagName(name)} ${raw} is a directory, not a file`);
    return raw;
  }),
  choice,
  list,
  /** a boolean flag */
  flag(spec: { description: string; short?: string }): Option<boolean, true> {
    return { ...spec, flag: true, default: false, parse: () => true };
  },
};

/** One of a fixed set of words. */
function choice<C extends string>(spec: WithDefault<C> & { choices: readonly C[] }): Option<C, true>;
function choice<C extends string>(spec: Spec<C> & { choices: readonly C[] }): Option<C, false>;
function choice<C extends string>(spec: Spec<C> & { default?: C; choices: readonly C[] }): Option<C, boolean> {
  const parse = (raw: string, name: string): C => {
    const hit = spec.choices.find((c) => c === raw);
    if (hit === undefined) throw new SplitLLMError('E_USAGE', `${flagName(name)} must be ${spec.choices.join(', ')}; got "${raw}"${didYouMean(raw, spec.choices)}`);
    return hit;
  };
  return make<C>(spec, parse, spec.choices.join('|'));
}

/** A comma-separated list of items of one kind. */
function list<T>(spec: WithDefault<T[]> & { item: (raw: string, name: string) => T }): Option<T[], true>;
function list<T>(spec: Spec<T[]> & { item: (raw: string, name: string) => T }): Option<T[], false>;
function list<T>(spec: Spec<T[]> & { default?: T[]; item: (raw: string, name: string) => T }): Option<T[], boolean> {
  const parse = (raw: string, name: string): T[] => {
    const out = raw
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0)
      .map((s) => spec.item(s, name));
    if (out.length === 0) throw new SplitLLMError('E_USAGE', `${flagName(name)} needs at least one value`);
    return out;
  };
  return make<T[]>(spec, parse, 'A,B,…');
}

/** list item parsers */
export const items = {
  int: (min = 0, max = Number.MAX_SAFE_INTEGER) => intIn(min, max),
  /** a quantization block the runtime supports */
  blockSize: (raw: string, name: string): number => {
    const b = intIn(1, 1 << 16)(raw, name);
    if (!isBlockSize(b)) throw new SplitLLMError('E_USAGE', `${flagName(name)} ${b} is not a supported block: use ${BLOCK_SIZES.join(', ')}`);
    return b;
  },
  string: (raw: string) => raw,
};

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

/** ": did you mean X?" for the closest candidate within a few edits, else "". */
export function didYouMean(given: string, candidates: readonly string[], prefix = ''): string {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const dd = distance(given.toLowerCase(), c.toLowerCase());
    if (dd < bestD) {
      bestD = dd;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(given.length / 3)) ? `: did you mean ${prefix}${best}?` : '';
}

export interface CommandSpec<O extends Options> {
  /** the name as typed after its parent (`device` for `splitllm profile device`) */
  name: string;
  /** first sentence: the one-line summary in listings */
  summary: string;
  usage: string;
  examples: string[];
  options: O;
  /** what the positional arguments are, when the command takes any */
  positionals?: string;
  /**
   * options may also come from $SPLITLLM_<NAME> and from `--config FILE` (flag > env > file > default),
   * and `--print-config` prints the settings in effect with where each came from (cli/settings.ts)
   */
  layered?: boolean;
  run(values: Values<O>, positionals: string[]): Promise<number | void>;
}

/** A command as the dispatcher sees it: typed options inside, argv outside. */
export interface CliCommand {
  name: string;
  summary: string;
  help(path: string): string;
  execute(argv: string[], path: string): Promise<number>;
  subcommands?: CliCommand[];
}

function optionHelp(name: string, o: Option<unknown>): string {
  const flag = `--${name}${o.short ? `, -${o.short}` : ''}${o.flag ? '' : ` ${o.valueName ?? 'V'}`}`;
  const def = o.defaultText ?? (o.default !== undefined && !o.flag ? String(Array.isArray(o.default) ? o.default.join(',') : o.default) : undefined);
  const tail = o.required ? ' (required)' : def !== undefined && def !== '' ? ` (default ${def})` : '';
  return `  ${flag.padEnd(34)} ${o.description}${tail}`;
}

export function defineCommand<O extends Options>(spec: CommandSpec<O>): CliCommand {
  const help = (path: string) =>
    [
      `usage: ${spec.usage}`,
      '',
      spec.summary,
      '',
      'options:',
      ...Object.entries(spec.options).map(([n, o]) => optionHelp(n, o)),
      ...(spec.layered ? [optionHelp('config', opt.file({ description: 'YAML or JSON file of settings (keys as the options are named, or camelCase)' })), optionHelp('print-config', opt.flag({ description: 'print the settings in effect (and where each came from) as JSON, and exit' }))] : []),
      optionHelp('help', opt.flag({ description: 'show this help', short: 'h' })),
      ...(spec.layered ? ['', `Every option can also be set as $SPLITLLM_<NAME> (e.g. ${envName(Object.keys(spec.options)[0] ?? 'port')}) or in --config; a flag wins over the environment, which wins over the file.`] : []),
      '',
      'examples:',
      ...spec.examples.map((e) => `  ${e}`),
    ].join('\n');
  return {
    name: spec.name,
    summary: spec.summary,
    help,
    async execute(argv, path) {
      const config: NonNullable<Parameters<typeof parseArgs>[0]>['options'] = { help: { type: 'boolean', short: 'h' } };
      if (spec.layered) {
        config['config'] = { type: 'string' };
        config['print-config'] = { type: 'boolean' };
      }
      for (const [n, o] of Object.entries(spec.options)) config[n] = o.short ? { type: o.flag ? 'boolean' : 'string', short: o.short } : { type: o.flag ? 'boolean' : 'string' };
      let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
      try {
        const r = parseArgs({ args: argv, options: config, allowPositionals: spec.positionals !== undefined, strict: true });
        parsed = { values: r.values as Record<string, string | boolean | undefined>, positionals: r.positionals };
      } catch (e) {
        const msg = e instanceof Error ? e.message.split('\n')[0]! : String(e);
        const unknown = /Unknown option '(-{1,2})([^']+)'/.exec(msg);
        const hint = unknown ? didYouMean(unknown[2]!, Object.keys(spec.options), '--') : '';
        throw new SplitLLMError('E_USAGE', `${msg.replace(/\. To specify a positional argument.*$/, '')}${hint} (see '${path} --help')`);
      }
      if (parsed.values['help']) {
        process.stdout.write(help(path) + '\n');
        return 0;
      }
      const values: Record<string, unknown> = {};
      const sources: Record<string, Source> = {};
      const configPath = parsed.values['config'];
      const file =
        spec.layered && typeof configPath === 'string'
          ? readConfigFile(configPath, spec.options, (k) => didYouMean(k, Object.keys(spec.options)))
          : new Map<string, string | boolean>();
      for (const [n, o] of Object.entries(spec.options)) {
        let raw = parsed.values[n];
        let source: Source = 'flag';
        let where = '';
        const env = spec.layered && !o.noEnv ? process.env[envName(n)] : undefined;
        if (raw === undefined && env !== undefined) {
          raw = o.flag ? envFlag(n, env) : env;
          source = 'env';
          where = ` (from $${envName(n)})`;
        } else if (raw === undefined && file.has(n)) {
          raw = file.get(n);
          source = 'file';
          where = ` (from ${String(configPath)})`;
        }
        if (raw === undefined) {
          if (o.required) throw new SplitLLMError('E_USAGE', `--${n} is required (see '${path} --help')`);
          values[n] = o.default;
          sources[n] = 'default';
          continue;
        }
        sources[n] = source;
        if (typeof raw === 'boolean') values[n] = raw;
        else {
          try {
            values[n] = o.parse(raw, n);
          } catch (e) {
            if (e instanceof SplitLLMError && where) throw new SplitLLMError(e.code, `${e.message}${where}`);
            throw e;
          }
        }
      }
      if (spec.layered && parsed.values['print-config']) {
        const shown = Object.fromEntries(Object.entries(values).map(([n, v]) => [n, { value: spec.options[n]?.noEnv && v !== undefined ? '(set, not shown)' : (v ?? null), source: sources[n] }]));
        process.stdout.write(JSON.stringify({ command: path, config: configPath ?? null, settings: shown }, null, 2) + '\n');
        return 0;
      }
      // the spec's option kinds make `values` a Values<O>: each key was parsed by its own option
      return (await spec.run(values as Values<O>, parsed.positionals)) ?? 0;
    },
  };
}

/**
 * A command that holds subcommands (`splitllm profile device`). With `fallback`, arguments that do not
 * start with a subcommand's name go to that command (`splitllm edge --cloud …` runs the one-shot edge,
 * `splitllm edge serve …` the service), and its help lists the subcommands too.
 */
export function commandGroup(spec: { name: string; summary: string; subcommands: CliCommand[]; fallback?: CliCommand }): CliCommand {
  const list = ['subcommands:', ...spec.subcommands.map((c) => `  ${c.name.padEnd(12)} ${firstSentence(c.summary)}`)];
  const help = (path: string) =>
    spec.fallback
      ? [spec.fallback.help(path), '', ...list, '', `Run '${path} <subcommand> --help' for its options.`].join('\n')
      : [`usage: ${path} <subcommand> [options]`, '', spec.summary, '', ...list, '', `Run '${path} <subcommand> --help' for its options.`].join('\n');
  return {
    name: spec.name,
    summary: spec.summary,
    subcommands: spec.subcommands,
    help,
    async execute(argv, path) {
      const [name, ...rest] = argv;
      if (name === '--help' || name === '-h' || name === 'help') {
        process.stdout.write(help(path) + '\n');
        return 0;
      }
      if (spec.fallback && (name === undefined || name.startsWith('-'))) return spec.fallback.execute(argv, path);
      return dispatch(spec.subcommands, name, rest, path, help);
    },
  };
}

export function firstSentence(s: string): string {
  return s.split('. ')[0]!.replace(/\.$/, '');
}

/** Runs the named command of `list`, or says what was meant. */
export async function dispatch(list: CliCommand[], name: string | undefined, rest: string[], path: string, help: (path: string) => string): Promise<number> {
  if (!name) {
    process.stderr.write(help(path) + '\n');
    return 2;
  }
  const cmd = list.find((c) => c.name === name);
  if (!cmd) {
    throw new SplitLLMError('E_USAGE', `unknown command "${path} ${name}"${didYouMean(name, list.map((c) => c.name), `${path} `)} (run '${path} --help' for the list)`);
  }
  return cmd.execute(rest, `${path} ${name}`);
}

/** What the subcommands share: option groups (model, prompt, sampling, cloud), file readers, progress. */
import { DEFAULT_DEADLINES, type Deadlines } from '../edge/connection.js';
import { validatePlan, type Plan } from '../shared/plan.js';
import { proposerFor } from '../edge/draft/registry.js';
import type { DraftProposer } from '../edge/draft/proposer.js';
import { emittersFor, WEIGHT_STRATEGY_NAMES } from '../models/weights/registry.js';
import type { CalibrationContexts } from '../quantization/activations/calibration.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import { existsSync, readFileSync } from 'node:fs';
import { SplitLLMError } from '../shared/errors.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { openModel, type ModelPackage } from '../models/package.js';
import { TextStream } from '../models/tokenizer/text-stream.js';
import { opt } from './options.js';

export const modelOptions = {
  model: opt.string({ short: 'm', description: 'model package directory, Hugging Face directory or llama2.c .bin', valueName: 'PATH', defaultText: 'the bundled models/default' }),
  tokenizer: opt.string({ description: 'llama2.c tok*.bin for a .bin checkpoint', valueName: 'PATH', defaultText: 'tok<vocab>.bin next to it' }),
};

/** The --model option's path: the bundled default model when none is given. */
export function modelPath(v: { model?: string }): string {
  return v.model && v.model.length > 0 ? v.model : DEFAULT_MODEL_DIR;
}

/** Opens the model the options name (--model, --tokenizer). */
export async function openModelOption(v: { model?: string; tokenizer?: string }, opts: { withoutTokenizer?: boolean } = {}): Promise<ModelPackage> {
  const pkg = await openModel(modelPath(v), { tokenizer: v.tokenizer, ...opts });
  // an ONNX export opened as it is: what `splitllm import` would have said, said here once
  const warnings = pkg.manifest.weights === '(memory)' ? pkg.manifest.source?.['warnings'] : undefined;
  if (Array.isArray(warnings)) for (const w of warnings) process.stderr.write(`warning: ${String(w)}\n`);
  return pkg;
}

/** Prompt options of every command that takes a prompt. */
export const promptOptions = {
  prompt: opt.string({ short: 'p', description: "prompt text; '-' reads it from standard input", defaultText: 'empty: generate from BOS alone' }),
  'prompt-ids': opt.string({ description: 'the prompt as token ids, comma-separated and used as given (no BOS added), for a model without a tokenizer', valueName: 'ID,ID,…' }),
  'prompt-file': opt.file({ description: 'read the prompt from a file' }),
  truncate: opt.choice({ choices: ['none', 'left'] as const, default: 'none', description: "a prompt longer than the model's context: 'none' refuses it, 'left' keeps its last tokens" }),
};

/** Prompt, length and sampling options shared by generate, edge and demo. */
export const generationOptions = {
  ...promptOptions,
  'max-tokens': opt.int({ short: 'n', min: 0, description: 'most tokens to generate', defaultText: "256, or what the model's maximum sequence leaves after the prompt" }),
  temperature: opt.number({ short: 't', min: 0, max: 1000, default: 0, description: 'sampling temperature, 0 = greedy' }),
  'top-k': opt.int({ default: 0, description: 'sample among the k most likely tokens (0 = off)' }),
  'top-p': opt.number({ default: 1, min: Number.MIN_VALUE, max: 1, description: 'nucleus sampling mass' }),
  seed: opt.int({ description: 'sampling seed' }),
};

type PromptValues = { prompt?: string; 'prompt-file'?: string; 'prompt-ids'?: string; truncate: 'none' | 'left' };

/** --prompt-ids as ids inside the vocabulary (one-line E_USAGE naming the bad entry). */
export function parsePromptIds(spec: string, vocabSize: number): number[] {
  const parts = spec.split(',').map((x) => x.trim());
  const ids = parts.map((x) => (/^\d+$/.test(x) ? Number(x) : NaN));
  const bad = ids.findIndex((id) => !Number.isSafeInteger(id) || id >= vocabSize);
  if (spec.trim() === '' || bad >= 0) {
    throw new SplitLLMError('E_USAGE', `--prompt-ids ${JSON.stringify(spec)}: ${spec.trim() === '' ? 'give at least one id' : `entry ${bad + 1} (${JSON.stringify(parts[bad])}) is not a token id in 0..${vocabSize - 1}`}`);
  }
  return ids;
}

/**
 * The prompt of a command as text and ids: --prompt-ids as given, else the text of --prompt /
 * --prompt-file encoded with BOS; then fitted to the model as `promptAndLength` does.
 */
export function promptOf(pkg: ModelPackage, v: PromptValues & { 'max-tokens'?: number }, maxSeq = pkg.config.maxSeq, fallback = ''): { text: string; ids: number[]; maxTokens: number } {
  if (v['prompt-ids'] !== undefined) {
    if (v.prompt !== undefined || v['prompt-file'] !== undefined) throw new SplitLLMError('E_USAGE', 'give --prompt-ids or a text prompt (--prompt, --prompt-file), not both');
    const ids = parsePromptIds(v['prompt-ids'], pkg.config.vocabSize);
    return { text: '', ...promptAndLength({ encode: () => ids }, '', maxSeq, v) };
  }
  const text = readPrompt(v, fallback);
  return { text, ...promptAndLength(pkg.tokenizer(), text, maxSeq, v) };
}

/** Streams generated tokens as text (a model with a tokenizer) or as ids (one without). */
export function tokenPrinter(pkg: ModelPackage, promptIds: number[], prompt: string, write: ((s: string) => void) | undefined): { push(id: number): void; finish(): string } {
  if (pkg.hasTokenizer) return new TextStream(pkg.tokenizer(), promptIds, prompt, write);
  return { push: (id) => write?.(`${id} `), finish: () => '' };
}

/** The prompt text: --prompt, --prompt - (standard input) or --prompt-file. */
export function readPrompt(v: PromptValues, fallback = ''): string {
  if (v.prompt !== undefined && v['prompt-file'] !== undefined) throw new SplitLLMError('E_USAGE', 'give --prompt or --prompt-file, not both');
  if (v['prompt-file'] !== undefined) return readFileSync(v['prompt-file'], 'utf8');
  if (v.prompt === '-') return readFileSync(0, 'utf8');
  return v.prompt ?? fallback;
}

/**
 * The prompt's ids (BOS first) and how many tokens to generate. A prompt that does not leave room for
 * `maxTokens` (or, without it, for one token) is an error naming both lengths, or with --truncate left
 * loses its oldest tokens.
 */
export function promptAndLength(tok: { encode(text: string, bos?: boolean): number[] }, text: string, maxSeq: number, v: PromptValues & { 'max-tokens'?: number }): { ids: number[]; maxTokens: number } {
  let ids = tok.encode(text, true);
  const want = v['max-tokens'];
  const room = maxSeq - (want ?? 1);
  if (ids.length > room) {
    if (v.truncate !== 'left' || room < 2) {
      const fix = v.truncate === 'left' ? 'lower --max-tokens' : 'shorten it, lower --max-tokens, or pass --truncate left to keep its end';
      throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `the prompt is ${ids.length} tokens and the model holds ${maxSeq} positions${want !== undefined ? ` (${want} of them for --max-tokens)` : ''}: ${fix}`);
    }
    const dropped = ids.length - room;
    ids = [ids[0]!, ...ids.slice(dropped + 1)];
    process.stderr.write(`splitllm: the prompt was cut to its last ${ids.length - 1} tokens (--truncate left dropped ${dropped})\n`);
  }
  return { ids, maxTokens: want ?? Math.max(0, Math.min(256, maxSeq - ids.length)) };
}

export function samplingFrom(v: { temperature: number; 'top-k': number; 'top-p': number; seed?: number }): { temperature: number; topK: number; topP: number; seed?: number } {
  return { temperature: v.temperature, topK: v['top-k'], topP: v['top-p'], seed: v.seed };
}

/** Options of the commands that talk to a cloud server. */
export const cloudOptions = {
  cloud: opt.string({ required: true, description: 'the cloud server (ws://host:port, wss://…, or its /v1/session URL)', valueName: 'URL' }),
  token: opt.string({ description: 'bearer token the cloud requires (visible in ps: prefer --token-file)', valueName: 'SECRET', noEnv: true }),
  'token-file': opt.file({ description: 'read the bearer token from a file (its first line), e.g. a systemd credential' }),
  'ca-file': opt.file({ description: "PEM certificate(s) to trust for a wss:// cloud: its self-signed certificate or a private CA", defaultText: "the system's CAs" }),
};

/** How long the edge waits for the cloud (edge/connection.ts `Deadlines`; docs/PROTOCOL.md "Deadlines"). */
export const deadlineOptions = {
  'connect-timeout': opt.duration({ description: 'each connection attempt to the cloud: TCP connect through the WebSocket upgrade', defaultText: `${DEFAULT_DEADLINES.connectMs / 1000}s` }),
  'silence-timeout': opt.duration({ description: 'the cloud silent this long while the edge waits (no frame, no pong to its pings) is a dropped link: the edge resumes the session or fails', defaultText: `${DEFAULT_DEADLINES.silenceMs / 1000}s, or 20 measured round trips when longer` }),
  'answer-timeout': opt.duration({ description: 'floor of the wait for each token (a prompt gets it once per 512 positions); the deadline grows with the slowest answer so far (10×)', defaultText: `${DEFAULT_DEADLINES.answerMs / 1000}s` }),
  'ready-timeout': opt.duration({ description: "the wait for the cloud's ready after a hello or a re-split (it may build a back segment first)", defaultText: `${DEFAULT_DEADLINES.readyMs / 60_000}m` }),
};

/** The deadlines the flags set (the rest keep their defaults). */
export function deadlinesOf(v: { 'connect-timeout'?: number; 'silence-timeout'?: number; 'answer-timeout'?: number; 'ready-timeout'?: number }): Deadlines {
  return { connectMs: v['connect-timeout'], silenceMs: v['silence-timeout'], answerMs: v['answer-timeout'], readyMs: v['ready-timeout'] };
}

/** The CA certificates of --ca-file, when given. */
export function caOf(v: { 'ca-file'?: string }): Buffer | undefined {
  return v['ca-file'] !== undefined ? readFileSync(v['ca-file']) : undefined;
}

/** The bearer token of --token or --token-file (whose first line is the token); undefined when neither is given. */
export function tokenOf(v: { token?: string; 'token-file'?: string }): string | undefined {
  if (v.token !== undefined && v['token-file'] !== undefined) throw new SplitLLMError('E_USAGE', 'give --token or --token-file, not both');
  const t = v['token-file'] !== undefined ? (readFileSync(v['token-file'], 'utf8').split(/\r?\n/)[0] ?? '') : v.token;
  if (t !== undefined && t.trim() === '') {
    throw new SplitLLMError('E_USAGE', `${v['token-file'] !== undefined ? `--token-file ${v['token-file']} holds` : '--token is'} an empty token (an unset variable?): give the real token, or neither option`);
  }
  return t?.trim();
}

/** The --cloud option as the session endpoint: ws(s)://host:port[/v1/session]. */
export function sessionUrl(url: string): string {
  if (!/^wss?:\/\/[^/]+/.test(url)) throw new SplitLLMError('E_USAGE', `--cloud ${url} is not a ws:// or wss:// URL`);
  return /\/v1\/session$/.test(url) ? url : url.replace(/\/$/, '') + '/v1/session';
}

/** A plan file ('splitllm plan --out', `{plan}` or the plan itself), checked against the model it is for. */
export function readPlanFile(path: string, pkg: { hash: string; config: { nLayers: number } }): Plan {
  const raw = readJsonFile(path, 'plan', "make one with 'splitllm plan --out FILE'");
  const plan = validatePlan(typeof raw === 'object' && raw !== null && 'plan' in raw ? raw.plan : raw, path, WEIGHT_STRATEGY_NAMES);
  if (plan.model && plan.model !== pkg.hash) throw new SplitLLMError('E_BAD_CONFIG', `${path} was made for another model: plan for this one`);
  if (plan.split > pkg.config.nLayers) throw new SplitLLMError('E_SPLIT_RANGE', `${path}: split ${plan.split} is past the model's ${pkg.config.nLayers} layers`);
  return plan;
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

/**
 * Progress on stderr for long steps: what runs, how far (`done/total`, or bytes with `bytes`), the time so
 * far and an estimate of the rest. On a terminal one line updates in place; elsewhere a line at most every
 * `everyMs` (and always the last). `quiet` (a command's --json) says nothing.
 */
export function progress(label: string, opts: number | { everyMs?: number; bytes?: boolean; quiet?: boolean } = {}): (done: number, total: number) => void {
  const o = typeof opts === 'number' ? { everyMs: opts } : opts;
  if (o.quiet) return () => {};
  const tty = process.stderr.isTTY === true;
  const everyMs = o.everyMs ?? (tty ? 200 : 2000);
  let last = 0;
  const t0 = Date.now();
  const amount = (n: number): string => (o.bytes ? formatBytes(n) : String(n));
  return (done, total) => {
    const now = Date.now();
    if (done < total && now - last < everyMs) return;
    last = now;
    const secs = (now - t0) / 1000;
    const pct = total > 0 ? ` ${((100 * done) / total).toFixed(0)}%` : '';
    // an estimate only once a twentieth is done: the first steps (builds, warm-up) would make it absurd
    const eta = done >= total / 20 && done < total && secs >= 1 ? `, ~${Math.ceil((secs * (total - done)) / done)}s left` : '';
    const line = `${label}: ${amount(done)}/${amount(total)}${pct} (${secs.toFixed(1)}s${eta})`;
    if (tty) process.stderr.write(`\r\x1b[K${line}${done >= total ? '\n' : ''}`);
    else process.stderr.write(`${line}\n`);
  };
}

/** 1.23 GB, 45.6 MB, 789 kB: decimal units, three digits. */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toPrecision(3)} ${units[i]}`;
}

/** --speculate / --draft-tokens, else the plan's choice, as the agent's speculation (undefined: off). */
export async function speculationOf(
  v: { speculate?: string; 'draft-tokens'?: number; threads?: number; model?: string },
  pkg: ModelPackage,
  plan: Plan | undefined,
): Promise<{ proposer: DraftProposer; maxDraft: number } | undefined> {
  const fromPlan = v.speculate === undefined && plan?.speculate !== undefined;
  const proposer = await proposerFor(v.speculate ?? plan?.speculate ?? 'off', { pkg, threads: v.threads, ...(fromPlan ? { baseDir: modelPath(v) } : {}) });
  return proposer ? { proposer, maxDraft: v['draft-tokens'] ?? plan?.draftTokens ?? 4 } : undefined;
}

/** What `runEdge` needs to run a plan besides the prompt and the cloud: split, codec, the front's emitters (the plan's strategy, RTN by default) and every precision. */
export async function planEdgeSession(
  pkg: ModelPackage,
  plan: Plan,
  codecEnv: CalibrationContexts,
): Promise<{ split: number; codec: string; codecEnv: CalibrationContexts; linearFor?: (layer: number) => LinearEmitter; frontBits: number; backBits: number; headBits?: number; embedBits?: number; blockSize?: number; prefillChunk?: number }> {
  const blockSize = plan.blockSize ?? 32;
  const linearFor = plan.frontBits === 32 && plan.backBits === 32 ? undefined : await emittersFor(pkg, { split: plan.split, frontBits: plan.frontBits, backBits: plan.backBits, blockSize, strategy: plan.strategy ?? 'rtn' });
  return { split: plan.split, codec: plan.codec, codecEnv, linearFor, frontBits: plan.frontBits, backBits: plan.backBits, headBits: plan.headBits, embedBits: plan.embedBits, blockSize, prefillChunk: plan.prefillChunk };
}

/** Shared bench helpers: baselines measured in the same run, and fixture lookup. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
/** The checkout: two folders up from dist/bench, one up from bench/ when a test runs this source. */
export const REPO = existsSync(join(HERE, '..', 'package.json')) ? resolve(HERE, '..') : resolve(HERE, '..', '..');
export const FIXTURES = process.env['SPLITLLM_FIXTURES'] ?? resolve(REPO, '..', 'shared', 'fixtures');
export const haveFixtures = existsSync(resolve(FIXTURES, 'stories260K', 'stories260K.bin'));

/**
 * Memory bandwidth as a large copy sustains it (bytes read + bytes written per second), best of `reps`,
 * with `threads` threads each copying its own slice at once (worker threads over shared memory). This is
 * the roofline for decode, which streams every weight once per token: measure it with as many threads as
 * the onnxruntime session that decodes has, since one core alone does not saturate the memory bus (a
 * two-thread float32 decode ran at 1.03× a one-thread copy's bound).
 */
export async function memoryBandwidth(opts: { bytes?: number; reps?: number; threads?: number } = {}): Promise<number> {
  const bytes = opts.bytes ?? 256 * 1024 * 1024;
  const reps = opts.reps ?? 5;
  const threads = Math.max(1, opts.threads ?? 1);
  const n = bytes / 8;
  const src = new Float64Array(new SharedArrayBuffer(bytes));
  const dst = new Float64Array(new SharedArrayBuffer(bytes));
  for (let i = 0; i < n; i += 4096) src[i] = i;
  // ctrl[0]: the round (workers copy once per increment), ctrl[1]: workers done this round
  const ctrl = new Int32Array(new SharedArrayBuffer(8));
  const body = `
    const { workerData: w } = require('node:worker_threads');
    const src = new Float64Array(w.src), dst = new Float64Array(w.dst), ctrl = new Int32Array(w.ctrl);
    for (let round = 0; ; ) {
      Atomics.wait(ctrl, 0, round);
      round = Atomics.load(ctrl, 0);
      if (round < 0) break;
      dst.set(src.subarray(w.from, w.to), w.from);
      Atomics.add(ctrl, 1, 1);
      Atomics.notify(ctrl, 1);
    }`;
  const workers = Array.from({ length: threads }, (_, t) => {
    const from = Math.floor((t * n) / threads);
    const to = Math.floor(((t + 1) * n) / threads);
    return new Worker(body, { eval: true, workerData: { src: src.buffer, dst: dst.buffer, ctrl: ctrl.buffer, from, to } });
  });
  const exited = workers.map((w) => new Promise((res) => w.once('exit', res)));
  await Promise.all(workers.map((w) => new Promise((res, rej) => (w.once('online', res), w.once('error', rej)))));
  let best = Infinity;
  try {
    for (let r = 0; r < reps; r++) {
      Atomics.store(ctrl, 1, 0);
      const t0 = performance.now();
      Atomics.add(ctrl, 0, 1);
      Atomics.notify(ctrl, 0);
      for (let done = Atomics.load(ctrl, 1); done < threads; done = Atomics.load(ctrl, 1)) {
        // a worker that died never counts itself done
        if (performance.now() - t0 > 60_000) throw new Error(`memory bandwidth: ${threads - done} copy thread(s) did not finish within 60 s`);
        Atomics.wait(ctrl, 1, done, 1000);
      }
      best = Math.min(best, performance.now() - t0);
    }
  } finally {
    Atomics.store(ctrl, 0, -1);
    Atomics.notify(ctrl, 0);
    await Promise.all(exited);
  }
  const last = Math.floor((n - 1) / 4096) * 4096;
  if (dst[4096] !== 4096 || dst[last] !== last) throw new Error('copy failed');
  return (2 * bytes) / (best / 1000);
}

export function fmt(n: number, digits = 1): string {
  return n.toFixed(digits);
}

/** Min, median and max of several runs (the figures every bench reports). */
export function minMedMax(xs: number[]): { min: number; median: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0]!, median: s[Math.floor(s.length / 2)]!, max: s[s.length - 1]! };
}

/** The `splitllm` CLI of this checkout. */
export const BIN = join(REPO, 'bin', 'splitllm.js');

/** The environment of a user who set nothing: no SPLITLLM_* variables. */
export const cleanEnv = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SPLITLLM_')));

/** Runs `taskset -c CORE node ARGS` with a clean environment, resolving with its stdout (rejecting on a non-zero exit). */
export function pinnedRun(core: number, args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    const c = spawn('taskset', ['-c', String(core), process.execPath, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.once('exit', (code) => (code === 0 ? res(out) : rej(new Error(`${args.join(' ')} exited ${code}: ${err.slice(-500)}`))));
  });
}

/** `node ARGS` pinned to `core` with a clean environment, once it prints a JSON line with its `url`; `stop` kills it. */
export async function pinnedServer(core: number, args: string[]): Promise<{ url: string; stop: () => Promise<void> }> {
  const child = spawn('taskset', ['-c', String(core), process.execPath, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  const stop = async () => {
    child.kill('SIGKILL');
    await exited;
  };
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  for (let i = 0; i < 1200 && !out.includes('\n'); i++) await new Promise((r) => setTimeout(r, 50));
  try {
    return { url: (JSON.parse(out) as { url: string }).url, stop };
  } catch {
    await stop();
    throw new Error(`${args.join(' ')} did not start: ${out.slice(0, 200)}`);
  }
}

/** `splitllm cloud --model DIR` with default options (and `extra` flags) pinned to `core`, once it prints its URL; `stop` kills it. */
export function pinnedCloud(core: number, dir: string, extra: string[] = []): Promise<{ url: string; stop: () => Promise<void> }> {
  return pinnedServer(core, [BIN, 'cloud', '--model', dir, '--port', '0', '--json', '--log-level', 'silent', ...extra]);
}

/** A finished child: exit code, output, wall seconds and peak RSS in bytes (NaN unless it reported one). */
export interface ChildRun {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
  peakRss: number;
}

/** Runs `node ARGS` (in the checkout, `env` added), resolving when it exits, whatever its code. */
export function runNode(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ChildRun> {
  return new Promise((res) => {
    const t0 = performance.now();
    const c = spawn(process.execPath, args, { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.once('close', (code) => res({ code: code ?? -1, stdout, stderr, seconds: (performance.now() - t0) / 1000, peakRss: Number(/maxrss (\d+)/.exec(stderr)?.[1] ?? NaN) }));
  });
}

/** The CLI of this checkout in a child that reports its peak RSS (a `maxrss N` line on stderr). */
export function cliWithPeakRss(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ChildRun> {
  const main = join(REPO, 'dist', 'cli', 'main.js');
  const script = `const { main } = await import(${JSON.stringify(main)}); const code = await main(process.argv.slice(1)); process.stderr.write('\\nmaxrss ' + process.resourceUsage().maxRSS * 1024 + '\\n'); process.exitCode = code;`;
  return runNode(['--input-type=module', '-e', script, ...args], env);
}

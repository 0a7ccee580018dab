/**
 * How splitllm holds at the sizes people deploy: for each shape fixture (bench/shapes.ts: random bf16
 * weights in the exact Qwen2.5-0.5B, Llama-3.2-1B, Llama-3-8B layouts) and each weight precision —
 *   import: seconds and peak RSS of `splitllm import` (a child process), package bytes ÷ checkpoint bytes;
 *   the whole model as one segment at 32/8/4 bits (layers and LM head; embedding float32): first build into a
 *   fresh segment cache, then cached loads (hash check + onnxruntime session), the runtime's RSS ÷ the
 *   bytes of the weights it holds, prefill and decode tokens/s, and decode ÷ the memory-bandwidth bound
 *   measured in the same run with as many threads as the session (bytes of weights read per token ÷ the
 *   time of a token, over what a copy sustains);
 *   the split as users run it: `splitllm cloud` and `splitllm edge` as two processes (a 4-bit front and an
 *   8-bit back at the middle layer, fp32 hidden states, loopback), decode tokens/s ÷ local decode with the
 *   same segments in one process.
 * Every child runs alone (one at a time); min/median/max over --runs of the cached load and the speeds.
 *
 *   node dist/bench/scale.js [--shapes qwen2.5-0.5b,llama-3.2-1b] [--bits 32,8,4] [--runs 3] [--dir DIR] [--json]
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BIN, cliWithPeakRss, fmt, memoryBandwidth, minMedMax, runNode } from './common.js';
import { SHAPES, writeShapeModel } from './shapes.js';

const SELF = fileURLToPath(import.meta.url);

interface ChildResult {
  buildSeconds?: number;
  loadSeconds: number;
  cached: boolean;
  weightBytes: number;
  /** bytes of the weights that a token does not read whole (a float embedding's table) */
  gatheredBytes: number;
  rssBytes: number;
  baselineRssBytes: number;
  prefillTokensPerSec: number;
  decodeTokensPerSec: number;
  threads: number;
}

/** `node ARGS` (this file or the CLI), rejecting on a non-zero exit. */
async function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ out: string; err: string; peakRss: number; seconds: number }> {
  const r = await runNode(args, env);
  if (r.code !== 0) throw new Error(`node ${args.join(' ')} exited ${r.code}: ${r.stderr.slice(-800)}`);
  return { out: r.stdout, err: r.stderr, peakRss: r.peakRss, seconds: r.seconds };
}

/** The CLI with its peak RSS, rejecting on a non-zero exit. */
async function cliWithRss(args: string[]): Promise<{ seconds: number; peakRss: number }> {
  const r = await cliWithPeakRss(args);
  if (r.code !== 0) throw new Error(`splitllm ${args.join(' ')} exited ${r.code}: ${r.stderr.slice(-800)}`);
  return r;
}

async function child(): Promise<void> {
  const { values } = parseArgs({ options: { child: { type: 'string' }, bits: { type: 'string' }, prompt: { type: 'string' }, tokens: { type: 'string' }, split: { type: 'string' } }, allowPositionals: true });
  const { openModel } = await import('../models/package.js');
  const { TENSORS: W } = await import('../shared/decoder.js');
  const { cachedSegment } = await import('../models/runtime/segment-cache.js');
  const { SegmentRuntime } = await import('../models/runtime/segment-runtime.js');
  const { linearFor } = await import('../models/onnx/linear.js');
  const { threadPolicy } = await import('../models/runtime/threads.js');
  const { argmax } = await import('../models/runtime/sampler.js');
  const pkg = await openModel(values.child!);
  const c = pkg.config;
  const baselineRssBytes = process.memoryUsage().rss;
  const bits = Number(values.bits);
  const split = values.split === undefined ? undefined : values.split.split(',').map(Number);
  // [from, to, bits] of each segment: the whole model at `bits`, or a 4-bit front and an 8-bit back
  const parts: [number, number, number][] = split ? [[0, split[0]!, 4], [split[0]!, c.nLayers, 8]] : [[0, c.nLayers, bits]];
  let built = false;
  const t0 = performance.now();
  const segs = parts.map(([from, to, b]) =>
    // the whole model quantizes its head too; a split's back keeps it float, as `splitllm cloud` does by default
    cachedSegment(pkg, from, to, { embed: from === 0, head: to === c.nLayers, linearFor: () => linearFor(b, 32), ...(to === c.nLayers && b < 32 && !split ? { headLinear: linearFor(b, 32) } : {}) }, { building: () => (built = true) }),
  );
  const tBuilt = performance.now();
  const rts: Awaited<ReturnType<typeof SegmentRuntime.fromBuilt>>[] = [];
  for (const s of segs) rts.push(await SegmentRuntime.fromBuilt(c, s, { spin: parts.length === 1 ? 'alone' : 'turns' }));
  const tLoaded = performance.now();
  const forward = async (ids: number[]): Promise<Float32Array> => {
    let x: ArrayLike<number> | Float32Array = ids;
    for (const rt of rts) x = (await rt.run(x, ids.length)).data;
    return x as Float32Array;
  };
  const P = Number(values.prompt ?? 128);
  const prompt = Array.from({ length: P }, (_, i) => 3 + ((i * 7919) % (c.vocabSize - 3)));
  const tp = performance.now();
  let logits = await forward(prompt);
  const prefillSec = (performance.now() - tp) / 1000;
  const N = Number(values.tokens ?? 32);
  let next = argmax(logits, (P - 1) * c.vocabSize, c.vocabSize);
  const td = performance.now();
  for (let i = 0; i < N; i++) {
    logits = await forward([next]);
    next = argmax(logits, 0, c.vocabSize);
  }
  const decodeSec = (performance.now() - td) / 1000;
  const r: ChildResult = {
    ...(built ? { buildSeconds: (tBuilt - t0) / 1000 } : {}),
    loadSeconds: (tLoaded - t0) / 1000,
    cached: !built,
    weightBytes: segs.reduce((a, s) => a + s.weightBytes, 0),
    // a float embedding that no head shares is gathered a row a token, not read whole
    // (the table as the front holds it: the package's bf16/f16, or float32)
    gatheredBytes: !split && bits === 32 && c.tiedEmbeddings ? 0 : c.vocabSize * c.dim * (['BF16', 'F16'].includes(pkg.weights.stored?.(W.embed).dtype ?? 'F32') ? 2 : 4),
    rssBytes: process.memoryUsage().rss,
    baselineRssBytes,
    prefillTokensPerSec: P / prefillSec,
    decodeTokensPerSec: N / decodeSec,
    threads: threadPolicy().intraOpThreads,
  };
  process.stdout.write(JSON.stringify(r) + '\n');
  for (const rt of rts) rt.release();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      shapes: { type: 'string', default: 'qwen2.5-0.5b,llama-3.2-1b' },
      bits: { type: 'string', default: '32,8,4' },
      runs: { type: 'string', default: '3' },
      tokens: { type: 'string', default: '32' },
      prompt: { type: 'string', default: '128' },
      dir: { type: 'string', default: '/tmp/splitllm-scale' },
      'skip-split': { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node dist/bench/scale.js [--shapes S,S] [--bits 32,8,4] [--runs N] [--tokens N] [--prompt N] [--dir DIR] [--skip-split] [--json]\n' +
        `shapes: ${Object.keys(SHAPES).join(', ')} (fixtures are written to --dir once and kept)\n` +
        'examples:\n  node dist/bench/scale.js --shapes qwen2.5-0.5b --bits 4 --runs 1\n  node dist/bench/scale.js --shapes llama-3.2-1b --json > scale.json\n',
    );
    return;
  }
  const shapes = values.shapes.split(',');
  for (const s of shapes) if (!SHAPES[s]) throw new Error(`unknown shape ${s}: ${Object.keys(SHAPES).join(', ')}`);
  const bitsList = values.bits.split(',').map(Number);
  const runs = Math.max(1, Number(values.runs));
  const say = (m: string): void => void (values.json || process.stderr.write(m + '\n'));
  say(`bench/scale: load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const { threadPolicy } = await import('../models/runtime/threads.js');
  const threads = threadPolicy().intraOpThreads;
  const bandwidth = await memoryBandwidth({ threads });
  say(`memory bandwidth (${threads}-thread copy, as many threads as each session): ${fmt(bandwidth / 1e9)} GB/s`);
  const report: Record<string, unknown>[] = [];
  for (const shape of shapes) {
    const src = join(values.dir, 'src', shape);
    if (!existsSync(join(src, 'config.json'))) {
      say(`writing the ${shape} fixture to ${src}…`);
      writeShapeModel(shape, src, { seed: 1 });
    }
    const checkpoint = readdirSync(src).filter((f) => f.endsWith('.safetensors')).reduce((a, f) => a + statSync(join(src, f)).size, 0);
    const pkg = join(values.dir, 'pkg', shape);
    const imports: { seconds: number; peakRss: number }[] = [];
    for (let i = 0; i < runs; i++) {
      rmSync(pkg, { recursive: true, force: true });
      const r = await cliWithRss(['import', src, '--out', pkg, '--json']);
      imports.push({ seconds: r.seconds, peakRss: r.peakRss });
    }
    const packageBytes = statSync(join(pkg, 'model.safetensors')).size;
    say(`${shape}: import ${fmt(minMedMax(imports.map((x) => x.seconds)).median)} s (peak RSS ${fmt(Math.max(...imports.map((x) => x.peakRss)) / 1e6, 0)} MB), package ÷ checkpoint ${fmt(packageBytes / checkpoint, 3)}`);
    const rows: Record<string, unknown>[] = [];
    for (const bits of bitsList) {
      const cache = join(values.dir, 'cache', `${shape}-${bits}`);
      rmSync(cache, { recursive: true, force: true });
      mkdirSync(cache, { recursive: true });
      const env = { SPLITLLM_SEGMENT_CACHE: cache };
      const childArgs = [SELF, '--child', pkg, '--bits', String(bits), '--tokens', values.tokens, '--prompt', values.prompt];
      const first = JSON.parse((await run(childArgs, env)).out) as ChildResult;
      const again: ChildResult[] = [];
      for (let i = 0; i < runs; i++) again.push(JSON.parse((await run(childArgs, env)).out) as ChildResult);
      const decode = again.map((r) => r.decodeTokensPerSec);
      const row = {
        bits,
        firstBuildSeconds: first.buildSeconds ?? null,
        cachedLoadSeconds: minMedMax(again.map((r) => r.loadSeconds)),
        weightBytes: first.weightBytes,
        rssOverWeights: minMedMax(again.map((r) => r.rssBytes / r.weightBytes)),
        runtimeRssOverWeights: minMedMax(again.map((r) => (r.rssBytes - r.baselineRssBytes) / r.weightBytes)),
        prefillTokensPerSec: minMedMax(again.map((r) => r.prefillTokensPerSec)),
        decodeTokensPerSec: minMedMax(decode),
        bytesPerToken: first.weightBytes - first.gatheredBytes,
        decodeOverBandwidth: minMedMax(decode.map((t) => (t * (first.weightBytes - first.gatheredBytes)) / bandwidth)),
        threads: first.threads,
      };
      rows.push(row);
      say(
        `  ${String(bits).padStart(2)}-bit: weights ${fmt(first.weightBytes / 1e6, 0)} MB, first build ${fmt(first.buildSeconds ?? NaN)} s, cached load ${fmt(row.cachedLoadSeconds.median)} s, ` +
          `RSS ÷ weights ${fmt(row.rssOverWeights.median, 2)}, prefill ${fmt(row.prefillTokensPerSec.median)} tok/s, decode ${fmt(row.decodeTokensPerSec.median, 2)} tok/s ` +
          `(${fmt(100 * row.decodeOverBandwidth.median)}% of the bound)`,
      );
    }
    let split: Record<string, unknown> | undefined;
    if (!values['skip-split']) split = await splitVsLocal(pkg, runs, values.tokens, say);
    report.push({ shape, checkpointBytes: checkpoint, packageBytes, import: { seconds: minMedMax(imports.map((x) => x.seconds)), peakRssBytes: minMedMax(imports.map((x) => x.peakRss)) }, precisions: rows, split });
  }
  if (values.json) process.stdout.write(JSON.stringify({ load: loadavg(), bandwidthBytesPerSec: bandwidth, shapes: report }, null, 2) + '\n');
}

/** Edge and cloud as two processes (4-bit front, 8-bit back at the middle, fp32), against the same segments in one process. */
async function splitVsLocal(pkg: string, runs: number, tokens: string, say: (m: string) => void): Promise<Record<string, unknown>> {
  const { ModelPackage } = await import('../models/package.js');
  const L = ModelPackage.load(pkg).config.nLayers;
  const k = Math.floor(L / 2);
  const env = { SPLITLLM_SEGMENT_CACHE: join(pkg, '..', '..', 'cache', 'split') };
  // the local twin builds both segments into the cache the two processes then load
  const local: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    const r = JSON.parse((await run([SELF, '--child', pkg, '--bits', '0', '--split', String(k), '--tokens', tokens, '--prompt', '16'], env)).out) as ChildResult;
    if (i > 0) local.push(r.decodeTokensPerSec);
  }
  const cloud = spawn(process.execPath, [BIN, 'cloud', '--model', pkg, '--port', '0', '--json', '--log-level', 'silent'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((r) => cloud.once('exit', r));
  let out = '';
  cloud.stdout.on('data', (d: Buffer) => (out += d.toString()));
  while (!out.includes('\n')) {
    if (cloud.exitCode !== null) throw new Error('the cloud did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  const url = (JSON.parse(out) as { url: string }).url;
  const splitRates: number[] = [];
  try {
    const prompt = Array.from({ length: 16 }, (_, i) => 3 + i * 101).join(',');
    for (let i = 0; i < runs + 1; i++) {
      const r = await run([BIN, 'edge', '--model', pkg, '--cloud', url, '--split', String(k), '--front-bits', '4', '--back-bits', '8', '--prompt-ids', prompt, '--max-tokens', String(Number(tokens) + 1), '--json'], env);
      const s = (JSON.parse(r.out) as { stats: { decode: { steps: number; edgeMs: number; networkMs: number; cloudMs: number } } }).stats.decode;
      // the first session waits for the cloud to load its back segment: not counted
      if (i > 0) splitRates.push(1000 / (s.edgeMs + s.networkMs + s.cloudMs));
    }
  } finally {
    cloud.kill('SIGTERM');
    await exited;
  }
  const ratio = minMedMax(splitRates.map((s, i) => s / local[Math.min(i, local.length - 1)]!));
  say(`  split ${k}/${L} (4-bit front, 8-bit back, two processes): decode ${fmt(minMedMax(splitRates).median, 2)} tok/s vs ${fmt(minMedMax(local).median, 2)} local: ${fmt(ratio.min, 2)} / ${fmt(ratio.median, 2)} / ${fmt(ratio.max, 2)}`);
  return { split: k, layers: L, splitDecodeTokensPerSec: minMedMax(splitRates), localDecodeTokensPerSec: minMedMax(local), ratio };
}

if (process.argv.includes('--child')) await child();
else await main();

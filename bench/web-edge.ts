/**
 * bench/web-edge: the browser edge (headless Chromium, onnxruntime-web WebAssembly, one thread) against
 * the Node edge (onnxruntime-node, one intra-op thread: the same share of the machine), same machine, same
 * run, same cloud on loopback: the front segment's ms per decode token (the edge's own compute and
 * encoding) and the whole ms per token, for each weight precision of the front. Default model, split 3,
 * calibrated ts-tabq, greedy, 64 tokens from "ROMEO:" run on past EOS. min / median / max over the runs,
 * and the machine's load.
 *
 *   node dist/bench/web-edge.js [--runs 3] [--tokens 64] [--split 3] [--bits 32,4] [--json]
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { launchChromium } from './browser.js';
import { calibrationContexts } from '../cli/calibration-io.js';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { linearFor } from '../models/onnx/linear.js';
import { openModel } from '../models/package.js';
import { fmt, minMedMax } from './common.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    tokens: { type: 'string', default: '64' },
    split: { type: 'string', default: '3' },
    bits: { type: 'string', default: '32,4' },
    chromium: { type: 'string', default: process.env['SPLITLLM_CHROMIUM'] ?? '/usr/bin/chromium' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/web-edge.js [--runs N] [--tokens N] [--split K] [--bits 32,4] [--chromium PATH] [--json]\n');
  process.exit(0);
}
const runs = Number(values.runs);
const maxTokens = Number(values.tokens);
const split = Number(values.split);
const bitsList = values.bits!.split(',').map(Number);
const pkg = await openModel(DEFAULT_MODEL_DIR);
const codecEnv = calibrationContexts({}, pkg);
const cloud = await startCloud(pkg, { webEdge: true, calibration: codecEnv });
const http = cloud.url.replace(/^ws/, 'http');
const browser = await launchChromium(values.chromium!);
const page = await browser.newPage();
const prompt = 'ROMEO:';

interface Measure {
  edgeMs: number;
  totalMs: number;
}
async function inBrowser(bits: number): Promise<Measure> {
  const q = new URLSearchParams({ prompt, maxTokens: String(maxTokens), split: String(split), bits: String(bits), codec: 'ts-tabq', temperature: '0', stop: 'none', autorun: '1' });
  await page.goto(`${http}/edge/?${q}`);
  await page.waitForFunction(() => window.splitllmResult !== undefined, undefined, { timeout: 120_000 });
  const r = await page.evaluate(() => {
    const x = window.splitllmResult;
    return x && 'stats' in x ? { edgeMs: x.stats.decode.edgeMs, totalMs: x.stats.decode.edgeMs + x.stats.decode.networkMs + x.stats.decode.cloudMs } : { error: x && 'error' in x ? x.error.message : 'no result' };
  });
  if ('error' in r) throw new Error(`the page failed: ${r.error}`);
  return r;
}
async function inNode(bits: number): Promise<Measure> {
  const r = await runEdge(pkg, { url: `${cloud.url}/v1/session`, split, codec: 'ts-tabq', codecEnv, prompt, maxTokens, stopIds: [], frontBits: bits, threads: 1, ...(bits < 32 ? { linearFor: () => linearFor(bits, 32) } : {}) });
  const d = r.stats.decode;
  return { edgeMs: d.edgeMs, totalMs: d.edgeMs + d.networkMs + d.cloudMs };
}

const rows = [];
for (const bits of bitsList) {
  // one untimed run each: segments built and cached, wasm compiled
  await inBrowser(bits);
  await inNode(bits);
  const b: Measure[] = [];
  const n: Measure[] = [];
  for (let i = 0; i < runs; i++) {
    b.push(await inBrowser(bits));
    n.push(await inNode(bits));
  }
  const ratio = (k: keyof Measure) => minMedMax(b.map((x, i) => x[k] / n[i]![k]));
  rows.push({
    bits,
    browserEdgeMs: minMedMax(b.map((x) => x.edgeMs)),
    nodeEdgeMs: minMedMax(n.map((x) => x.edgeMs)),
    edgeRatio: ratio('edgeMs'),
    browserTotalMs: minMedMax(b.map((x) => x.totalMs)),
    nodeTotalMs: minMedMax(n.map((x) => x.totalMs)),
    totalRatio: ratio('totalMs'),
  });
}
await browser.close();
await cloud.close();
const load = loadavg()[0]!;
if (values.json) process.stdout.write(JSON.stringify({ rows, runs, maxTokens, split, load }) + '\n');
else {
  process.stdout.write(`browser edge (Chromium, onnxruntime-web wasm, 1 thread) vs Node edge (onnxruntime-node, 1 thread): split ${split}, ts-tabq, ${maxTokens} tokens, loopback, ${runs} runs (load ${fmt(load, 2)})\n`);
  const m = (x: { min: number; median: number; max: number }, d = 2) => `${fmt(x.min, d)} / ${fmt(x.median, d)} / ${fmt(x.max, d)}`;
  for (const r of rows) {
    process.stdout.write(`  ${String(r.bits).padStart(2)}-bit front: edge ms/token browser ${m(r.browserEdgeMs)}, Node ${m(r.nodeEdgeMs)}: ratio ${m(r.edgeRatio)}; whole ms/token browser ${m(r.browserTotalMs)}, Node ${m(r.nodeTotalMs)}: ratio ${m(r.totalRatio)}\n`);
  }
}

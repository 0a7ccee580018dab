/**
 * bench/planner: predicted vs measured edge memory and per-token latency for several plans, over a link
 * emulated on this machine: the cloud runs in its own network namespace behind a veth pair whose
 * bandwidth is shaped with `tc … tbf`; the round trip is added by a user-space delay relay on the edge
 * side (this kernel has no netem). Needs root and iproute2; prints what it measured next to what the
 * planner's cost model predicted from profiles measured in the same run.
 *
 *   node dist/bench/planner.js [--model PATH] [--rate 10mbit] [--rtt 40ms] [--tokens 48] [--json]
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { emulateLink } from '../cli/link-emulator.js';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openModel } from '../models/package.js';
import { predict } from '../planner/cost.js';
import { measureLink } from '../edge/measure-link.js';
import { parseDuration } from '../cli/units.js';
import type { ComputeProfile, Problem } from '../planner/types.js';
import { FIXTURES, fmt } from './common.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: resolve(FIXTURES, 'stories260K', 'stories260K.bin') },
    rate: { type: 'string', default: '10mbit' },
    rtt: { type: 'string', default: '40ms' },
    tokens: { type: 'string', default: '48' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/planner.js [--model PATH] [--rate 10mbit] [--rtt 40ms] [--tokens N] [--json]   (root, iproute2)\n');
  process.exit(0);
}
if (process.getuid?.() !== 0) {
  process.stderr.write('bench/planner needs root (it creates a network namespace): skipped\n');
  process.exit(0);
}
const NS = 'sllm-bench';
const bin = fileURLToPath(new URL('../../bin/splitllm.js', import.meta.url));
const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: 'pipe' });
const cleanup = () => {
  spawnSync('ip', ['link', 'del', 'sllm-e']);
  spawnSync('ip', ['netns', 'del', NS]);
};
cleanup();
sh(['ip', 'netns', 'add', NS]);
sh(['ip', 'link', 'add', 'sllm-e', 'type', 'veth', 'peer', 'name', 'sllm-c']);
sh(['ip', 'link', 'set', 'sllm-c', 'netns', NS]);
sh(['ip', 'addr', 'add', '10.77.0.1/24', 'dev', 'sllm-e']);
sh(['ip', 'link', 'set', 'sllm-e', 'up']);
sh(['ip', 'netns', 'exec', NS, 'ip', 'addr', 'add', '10.77.0.2/24', 'dev', 'sllm-c']);
sh(['ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'sllm-c', 'up']);
sh(['ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up']);
const rate = String(values.rate);
sh(['tc', 'qdisc', 'add', 'dev', 'sllm-e', 'root', 'tbf', 'rate', rate, 'burst', '32kbit', 'latency', '400ms']);
sh(['ip', 'netns', 'exec', NS, 'tc', 'qdisc', 'add', 'dev', 'sllm-c', 'root', 'tbf', 'rate', rate, 'burst', '32kbit', 'latency', '400ms']);

// delay relay: 127.0.0.1:relay.port → 10.77.0.2:8080, half the round trip each way, order kept (tbf shapes the rate)
const relay = await emulateLink({ host: '10.77.0.2', port: 8080 }, { rttMs: parseDuration(String(values.rtt)) });
const relayPort = relay.port;

// two machines on one: the edge side runs pinned to core 0 and the cloud to core 1, one onnxruntime
// thread each, so that neither takes CPU from the other (profiles are measured the same way)
const pinned = (core: number, args: string[]): [string, string[]] => ['taskset', ['-c', String(core), ...args]];
const oneThread = { ...process.env, SPLITLLM_THREADS: '1' };
const profile = (core: number, name: string) => {
  const path = join(mkdtempSync(join(tmpdir(), 'splitllm-bench-')), `${name}.json`);
  const [cmd, args] = pinned(core, [process.execPath, bin, 'profile', 'device', '--model', String(values.model), '--out', path, '--bits', '4,8,32', '--block-sizes', '32,128', '--steps', '20']);
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: oneThread });
  if (r.status !== 0) throw new Error(`profile device failed: ${r.stderr}`);
  return (JSON.parse(readFileSync(path, 'utf8')) as { data: ComputeProfile }).data;
};

/** A profile's per-layer decode ms at a precision and block (float layers and block 32: the top-level table). */
const layerAt = (c: ComputeProfile, bits: number, block: number) => (bits < 16 && block !== 32 ? c.blocks?.[String(block)]?.layerDecodeMs[String(bits)] : c.layerDecodeMs[String(bits)]) ?? NaN;

const cloud = spawn('ip', ['netns', 'exec', NS, 'taskset', '-c', '1', process.execPath, bin, 'cloud', '--model', String(values.model), '--host', '10.77.0.2', '--port', '8080', '--json'], { stdio: ['ignore', 'pipe', 'inherit'], env: oneThread });
try {
  await new Promise<void>((resolveReady, reject) => {
    cloud.stdout.once('data', () => resolveReady());
    cloud.once('exit', (c) => reject(new Error(`cloud exited with ${c}`)));
  });
  const url = `ws://127.0.0.1:${relayPort}/v1/session`;
  const pkg = await openModel(String(values.model));
  process.stderr.write('profiling the edge core and the cloud core (splitllm profile device, one thread each)…\n');
  const edgeProfile = profile(0, 'edge');
  const cloudProfile = profile(1, 'cloud');
  const link = await measureLink(url, undefined, { bytes: 256 * 1024 });
  process.stderr.write(`link: rtt ${fmt(link.rttMs, 1)} ms, up ${fmt((link.upBytesPerSec * 8) / 1e6, 2)} Mbit/s (shaped at ${rate})\n`);
  process.stderr.write(`edge baseline (profile device): ${fmt(edgeProfile.baselineBytes / 1e6, 1)} MB\n`);
  const compute = edgeProfile;
  const pr: Problem = {
    model: { ...pkg.config, hash: pkg.hash },
    edge: edgeProfile,
    cloud: cloudProfile,
    link,
    accuracy: { model: pkg.hash, weights: {}, codecs: {} },
    budgets: { edgeMemory: Infinity, latencyMs: Infinity, maxPplIncrease: Infinity },
    candidates: { splits: [], bits: [], codecs: [], seqLens: [] },
  };
  const n = Number(values.tokens);
  const plans = [
    { split: 1, frontBits: 32, backBits: 32, codec: 'fp32' },
    { split: 2, frontBits: 4, backBits: 32, codec: 'fp32' },
    { split: 3, frontBits: 8, backBits: 32, codec: 'fp16' },
    { split: 4, frontBits: 4, backBits: 8, codec: 'fp32' },
    { split: 2, frontBits: 32, backBits: 4, codec: 'fp16' },
    { split: 4, frontBits: 4, backBits: 8, codec: 'fp32', blockSize: 128 },
  ];
  const rows: Record<string, number | string>[] = [];
  for (const p of plans) {
    const bitsPerValue = p.codec === 'fp32' ? 32 : 16;
    pr.accuracy.codecs[`${p.split}/${p.codec}`] = { pplIncrease: 0, bitsPerValue: bitsPerValue + (8 * 15) / pkg.config.dim };
    const maxSeq = 1 + n + 8;
    const pred = predict(pr, { ...p, maxSeq });
    const block = p.blockSize ?? 32;
    const args = [bin, 'edge', '--cloud', url, '--model', String(values.model), '--split', String(p.split), '--front-bits', String(p.frontBits), '--back-bits', String(p.backBits), '--block-size', String(block), '--codec', p.codec, '--prompt', 'Once upon a time', '--max-tokens', String(n), '--json'];
    // asynchronous: the delay relay lives in this process and must keep running while the edge does
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((res) => {
      const child = spawn('/usr/bin/time', ['-f', '%M', 'taskset', '-c', '0', process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: oneThread });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (status) => res({ status, stdout, stderr }));
    });
    if (r.status !== 0) throw new Error(`edge failed: ${r.stderr}`);
    const maxRssKb = Number(r.stderr.trim().split('\n').pop());
    const stats = (JSON.parse(r.stdout) as { stats: { edgeMs: number; networkMs: number; cloudMs: number } }).stats;
    const measuredLatency = stats.edgeMs + stats.networkMs + stats.cloudMs;
    rows.push({
      plan: `split ${p.split}, ${p.frontBits}/${p.backBits} bits, ${p.codec}${block !== 32 ? `, block ${block}` : ''}`,
      predictedMemory: pred.memory,
      measuredMemory: maxRssKb * 1024,
      predictedLatency: pred.latency,
      measuredLatency,
      // where the time went, measured (edge / network / cloud ms per token) and predicted (edge / cloud)
      measuredSplit: `${fmt(stats.edgeMs, 1)}/${fmt(stats.networkMs, 1)}/${fmt(stats.cloudMs, 1)}`,
      predictedSplit: `${fmt(compute.embedMs + p.split * layerAt(compute, p.frontBits, block), 1)}/-/${fmt((pkg.config.nLayers - p.split) * layerAt(cloudProfile, p.backBits, block) + cloudProfile.headMs, 1)}`,
    });
  }
  if (values.json) process.stdout.write(JSON.stringify({ link, rows }) + '\n');
  else {
    process.stdout.write('plan                               predicted MB  measured MB  ratio   predicted ms/tok  measured ms/tok  ratio   edge/net/cloud ms: predicted   measured\n');
    for (const r of rows) {
      const pm = r['predictedMemory'] as number;
      const mm = r['measuredMemory'] as number;
      const pl = r['predictedLatency'] as number;
      const ml = r['measuredLatency'] as number;
      process.stdout.write(`${String(r['plan']).padEnd(34)} ${fmt(pm / 1e6).padStart(12)} ${fmt(mm / 1e6).padStart(12)} ${(mm / pm).toFixed(3).padStart(6)} ${fmt(pl, 2).padStart(18)} ${fmt(ml, 2).padStart(16)} ${(ml / pl).toFixed(3).padStart(6)}   ${String(r['predictedSplit']).padStart(26)} ${String(r['measuredSplit']).padStart(16)}\n`);
    }
  }
} finally {
  cloud.kill('SIGTERM');
  await relay.close();
  cleanup();
}
process.exit(0);

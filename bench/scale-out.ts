/**
 * bench/scale-out: 1, 2 and 3 `splitllm cloud` replicas behind the real HAProxy (deploy/haproxy/haproxy.cfg)
 * on loopback, N concurrent edge sessions through it; aggregate tokens/s and p50/p95 per-token latency,
 * each as a ratio against one replica measured in the same run. Configurations are interleaved run by
 * run (1, 2, 3, 1, 2, 3, …) so that the machine's drift hits them alike; min/median/max over the runs.
 *
 *   node dist/bench/scale-out.js [--sessions 24] [--tokens 64] [--runs 3] [--split 1] [--threads 1] [--replicas 1,2,3] [--json]
 *
 * Threads: each replica's onnxruntime sessions get --threads intra-op threads ($SPLITLLM_THREADS); the
 * edges run in this process (front segment [0, split), one thread each). The CPU seconds each side used
 * are printed, so a run limited by the edges or by the machine's cores shows as such.
 */
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { runEdge } from '../edge/agent.js';
import { openModel } from '../models/package.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { findHaproxy, freePort, startBalancer, startReplica, stopAll, type Replica } from './cluster.js';
import { fmt, minMedMax } from './common.js';

const { values } = parseArgs({
  options: {
    sessions: { type: 'string', default: '24' },
    tokens: { type: 'string', default: '64' },
    runs: { type: 'string', default: '3' },
    split: { type: 'string', default: '1' },
    threads: { type: 'string', default: '1' },
    replicas: { type: 'string', default: '1,2,3' },
    model: { type: 'string', default: DEFAULT_MODEL_DIR },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/scale-out.js [--sessions N] [--tokens N] [--runs N] [--split K] [--threads N] [--replicas 1,2,3] [--model PATH] [--json]\n');
  process.exit(0);
}
const haproxy = findHaproxy();
if (!haproxy) {
  process.stderr.write('bench/scale-out: needs HAProxy (apt-get install -y haproxy)\n');
  process.exit(1);
}
process.env['SPLITLLM_THREADS'] = values.threads;
const sessions = Number(values.sessions);
const tokens = Number(values.tokens);
const runs = Number(values.runs);
const split = Number(values.split);
const counts = values.replicas.split(',').map(Number);
if (!counts.length || counts.some((c) => !Number.isInteger(c) || c < 1 || c > 3)) {
  process.stderr.write('bench/scale-out: --replicas lists counts of 1 to 3 (the config names three servers), e.g. 1,2,3\n');
  process.exit(1);
}
const pkg = await openModel(values.model);
const PROMPTS = ['Once upon a time', 'The little dog', 'One day, a girl', 'Tom and Sam went', 'The sun was', 'A big red ball', 'Mom said', 'The cat sat'];

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};

interface RunResult {
  replicas: number;
  tokensPerSec: number;
  p50Ms: number;
  p95Ms: number;
  cloudCpuSeconds: number;
  edgeCpuSeconds: number;
  wallSeconds: number;
  perReplica: number[];
}

async function once(n: number): Promise<RunResult> {
  const replicas: Replica[] = [];
  const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
  for (let i = 0; i < n; i++) replicas.push(await startReplica(`cloud${i + 1}`, ports[i]!, ['--model', values.model, '--log-level', 'warn', '--max-sessions', String(sessions + 8)]));
  const lb = await startBalancer(haproxy!, ports);
  try {
    // warm every replica's back segment (one short session each, straight to it)
    await Promise.all(replicas.map((r) => runEdge(pkg, { url: `ws://127.0.0.1:${r.port}/v1/session`, split, prompt: 'hi', maxTokens: 2, stopIds: [] })));
    const cloud0 = replicas.map((r) => cpuSeconds(r.child.pid));
    const edge0 = process.cpuUsage();
    const gaps: number[] = [];
    const t0 = performance.now();
    const done = await Promise.all(
      Array.from({ length: sessions }, (_, i) => {
        let last = performance.now();
        return runEdge(pkg, {
          url: lb.url,
          split,
          prompt: PROMPTS[i % PROMPTS.length]!,
          maxTokens: tokens,
          stopIds: [],
          onToken: () => {
            const now = performance.now();
            gaps.push(now - last);
            last = now;
          },
        });
      }),
    );
    const wall = (performance.now() - t0) / 1000;
    const edgeCpu = process.cpuUsage(edge0);
    const total = done.reduce((a, r) => a + r.tokens.length, 0);
    const opened = await Promise.all(replicas.map(async (r) => Number(/^splitllm_sessions_total (\S+)$/m.exec(await r.metrics())?.[1] ?? NaN) - 1));
    return {
      replicas: n,
      tokensPerSec: total / wall,
      p50Ms: pct(gaps, 0.5),
      p95Ms: pct(gaps, 0.95),
      cloudCpuSeconds: replicas.reduce((a, r, i) => a + cpuSeconds(r.child.pid) - cloud0[i]!, 0),
      edgeCpuSeconds: (edgeCpu.user + edgeCpu.system) / 1e6,
      wallSeconds: wall,
      perReplica: opened,
    };
  } finally {
    await stopAll(replicas, lb);
  }
}

const results: RunResult[] = [];
for (let r = 0; r < runs; r++) {
  for (const n of counts) {
    const res = await once(n);
    results.push(res);
    if (!values.json) process.stderr.write(`run ${r + 1}/${runs}, ${n} replica(s): ${fmt(res.tokensPerSec)} tok/s, p50 ${fmt(res.p50Ms)} ms, p95 ${fmt(res.p95Ms)} ms, sessions per replica ${JSON.stringify(res.perReplica)}\n`);
  }
}
const by = (n: number) => results.filter((x) => x.replicas === n);
const base = minMedMax(by(counts[0]!).map((x) => x.tokensPerSec)).median;
const rows = counts.map((n) => {
  const xs = by(n);
  const tps = minMedMax(xs.map((x) => x.tokensPerSec));
  return {
    replicas: n,
    tokensPerSec: tps,
    ratio: tps.median / base,
    p50Ms: minMedMax(xs.map((x) => x.p50Ms)),
    p95Ms: minMedMax(xs.map((x) => x.p95Ms)),
    cloudCpuPerToken: minMedMax(xs.map((x) => (1000 * x.cloudCpuSeconds) / (sessions * tokens))),
    edgeCpuShare: minMedMax(xs.map((x) => x.edgeCpuSeconds / x.wallSeconds)),
    cloudCpuShare: minMedMax(xs.map((x) => x.cloudCpuSeconds / x.wallSeconds)),
  };
});
const machine = { cores: cpus().length, load: loadavg().map((l) => Number(l.toFixed(2))), threadsPerReplica: Number(values.threads) };
if (values.json) {
  process.stdout.write(JSON.stringify({ sessions, tokens, split, runs, machine, rows }, null, 2) + '\n');
} else {
  process.stdout.write(`bench/scale-out: ${sessions} sessions × ${tokens} tokens, split ${split}, ${pkg.manifest.name}; ${machine.cores} cores, load ${machine.load.join(' ')}, ${values.threads} onnxruntime thread(s) per replica, edges in this process\n`);
  process.stdout.write('replicas  tok/s min/median/max        × first  p50 ms (median)  p95 ms (median)  cloud CPU ms/token  edge CPU cores  cloud CPU cores\n');
  for (const r of rows) {
    process.stdout.write(
      `${String(r.replicas).padEnd(9)} ${`${fmt(r.tokensPerSec.min)} / ${fmt(r.tokensPerSec.median)} / ${fmt(r.tokensPerSec.max)}`.padEnd(26)} ${fmt(r.ratio, 2).padEnd(11)} ${fmt(r.p50Ms.median).padEnd(16)} ${fmt(r.p95Ms.median).padEnd(16)} ${fmt(r.cloudCpuPerToken.median, 2).padEnd(19)} ${fmt(r.edgeCpuShare.median, 2).padEnd(15)} ${fmt(r.cloudCpuShare.median, 2)}\n`,
    );
  }
}

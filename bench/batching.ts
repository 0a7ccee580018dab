/**
 * bench/batching: does one cloud serve many sessions better than one at a time? A `splitllm cloud`
 * (default options) pinned to core 1 serves light decode sessions (random fp32 hidden states sent as
 * soon as each token comes; no edge model runs) from a client process pinned to core 0: first one
 * session alone, then N at once, in the same run. Prints aggregate decode tokens/s at N ÷ one session's,
 * each session's ms per step ÷ the solo ms per step (the worst of them), and the mean batch the cloud
 * ran (from its /metrics), min/median/max over the runs.
 *
 *   node dist/bench/batching.js [--sessions 16] [--steps 128] [--positions 16] [--runs 3] [--kv-slab] [--skip-100m] [--json]
 *
 * --kv-slab: the cloud keeps each back segment's session caches in one slab (`splitllm cloud --kv-slab`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { openModel, writePackage } from '../models/package.js';
import { fmt, minMedMax, pinnedCloud, pinnedRun, REPO } from './common.js';
import { lightDecode } from './light-session.js';

const { values } = parseArgs({
  options: {
    sessions: { type: 'string', default: '16' },
    steps: { type: 'string', default: '128' },
    positions: { type: 'string', default: '16' },
    runs: { type: 'string', default: '3' },
    'skip-100m': { type: 'boolean' },
    'kv-slab': { type: 'boolean' },
    role: { type: 'string' },
    url: { type: 'string' },
    model: { type: 'string' },
    split: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/batching.js [--sessions N] [--steps N] [--positions P] [--runs N] [--kv-slab] [--skip-100m] [--json]\n');
  process.exit(0);
}
const steps = Number(values.steps);
const positions = Number(values.positions);

interface Phase {
  /** sessions at once */
  sessions: number;
  /** from the first decode step sent to the last token received, over all sessions */
  wallMs: number;
  /** each session's mean ms per step */
  sessionStepMs: number[];
}

/** --role clients (a child, pinned): N light decode sessions at once against --url, as JSON. */
if (values.role === 'clients') {
  const pkg = await openModel(values.model!);
  const n = Number(values.sessions);
  const got = await Promise.all(Array.from({ length: n }, (_, i) => lightDecode(values.url!, pkg, Number(values.split), positions, steps, i + 1)));
  const wallMs = Math.max(...got.map((g) => g.decodeEnd)) - Math.min(...got.map((g) => g.decodeStart));
  const phase: Phase = { sessions: n, wallMs, sessionStepMs: got.map((g) => g.stepMs.reduce((a, b) => a + b, 0) / g.stepMs.length) };
  process.stdout.write(JSON.stringify(phase) + '\n');
  process.exit(0);
}

async function clients(url: string, dir: string, split: number, sessions: number): Promise<Phase> {
  const out = await pinnedRun(0, [join(REPO, 'dist', 'bench', 'batching.js'), '--role', 'clients', '--url', url, '--model', dir, '--split', String(split), '--sessions', String(sessions), '--steps', String(steps), '--positions', String(positions)]);
  return JSON.parse(out) as Phase;
}

/** batches and the steps in them, from the cloud's /metrics */
async function batchCounters(base: string): Promise<{ batches: number; steps: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  return { batches: read('splitllm_step_batches_total'), steps: read('splitllm_batched_steps_total') };
}

interface Row {
  model: string;
  split: number;
  sessions: number;
  soloTokensPerSec: { min: number; median: number; max: number };
  aggregateTokensPerSec: { min: number; median: number; max: number };
  ratio: { min: number; median: number; max: number };
  worstLatencyRatio: { min: number; median: number; max: number };
  meanBatch: { min: number; median: number; max: number };
}

async function measure(name: string, dir: string, split: number): Promise<Row> {
  const n = Number(values.sessions);
  const cloud = await pinnedCloud(1, dir, values['kv-slab'] ? ['--kv-slab'] : []);
  try {
    const url = cloud.url;
    const base = url.replace(/^ws/, 'http').replace(/\/v1\/session$/, '');
    await clients(url, dir, split, 1); // the back segment built and warm
    const got: { solo: number; agg: number; worst: number; batch: number }[] = [];
    for (let r = 0; r < Number(values.runs); r++) {
      const solo = await clients(url, dir, split, 1);
      const soloMs = solo.sessionStepMs[0]!;
      const before = await batchCounters(base);
      const many = await clients(url, dir, split, n);
      const after = await batchCounters(base);
      const g = { solo: 1000 / soloMs, agg: (n * steps) / (many.wallMs / 1000), worst: Math.max(...many.sessionStepMs) / soloMs, batch: (after.steps - before.steps) / Math.max(1, after.batches - before.batches) };
      got.push(g);
      if (!values.json) process.stderr.write(`  ${name} run ${r + 1}: solo ${fmt(g.solo)} tok/s, ${n} sessions ${fmt(g.agg)} tok/s (×${fmt(g.agg / g.solo, 2)}), worst session ×${fmt(g.worst, 2)} solo latency, mean batch ${fmt(g.batch, 1)}\n`);
    }
    return {
      model: name,
      split,
      sessions: n,
      soloTokensPerSec: minMedMax(got.map((g) => g.solo)),
      aggregateTokensPerSec: minMedMax(got.map((g) => g.agg)),
      ratio: minMedMax(got.map((g) => g.agg / g.solo)),
      worstLatencyRatio: minMedMax(got.map((g) => g.worst)),
      meanBatch: minMedMax(got.map((g) => g.batch)),
    };
  } finally {
    await cloud.stop();
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-batching-'));
try {
  const rows: Row[] = [await measure('default', DEFAULT_MODEL_DIR, 3)];
  if (!values['skip-100m']) {
    process.stderr.write('writing the llama-100m synthetic preset to a temporary package…\n');
    await writePackage(join(tmp, 'llama-100m'), syntheticModel('llama-100m'));
    rows.push(await measure('synthetic llama-100m', join(tmp, 'llama-100m'), 6));
  }
  if (values.json) process.stdout.write(JSON.stringify({ rows }) + '\n');
  else {
    const t = (x: { min: number; median: number; max: number }, d = 1) => `${fmt(x.min, d)} / ${fmt(x.median, d)} / ${fmt(x.max, d)}`;
    process.stdout.write(`bench/batching: cloud on core 1 (${values['kv-slab'] ? '--kv-slab' : 'default options'}), light clients on core 0, ${steps} steps after a ${positions}-position prefill, ${values.runs} runs; load ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);
    process.stdout.write('model                  split  sessions  solo tok/s (min/med/max)   aggregate tok/s            × solo (min/med/max)  worst latency × solo  mean batch\n');
    for (const r of rows) {
      process.stdout.write(`${r.model.padEnd(22)} ${String(r.split).padStart(5)} ${String(r.sessions).padStart(9)}  ${t(r.soloTokensPerSec).padEnd(26)} ${t(r.aggregateTokensPerSec).padEnd(26)} ${t(r.ratio, 2).padEnd(21)} ${t(r.worstLatencyRatio, 2).padEnd(21)} ${t(r.meanBatch)}\n`);
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
process.exit(0);

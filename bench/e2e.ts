/**
 * bench/e2e: split generation (edge agent ⇄ cloud server over loopback WebSocket, in one process) against
 * local full-model generation on the same machine, same run: tokens/s, per-token latency and their ratio,
 * with the edge's per-token split into edge compute, network and cloud compute.
 *
 *   node dist/bench/e2e.js [--tokens 64] [--split 2] [--codec fp32] [--skip-100m] [--json]
 *   node dist/bench/e2e.js --pinned [--runs 3] [--tokens 128] [--skip-100m] [--json]
 *
 * --pinned: the fair stand-in for two machines — `splitllm cloud` and `splitllm edge` as separate
 * processes, pinned to core 1 and core 0 (taskset), started with default options and no SPLITLLM_*
 * variables, against a local whole-model generation pinned to core 0; decode tokens/s (after the first
 * token) of each, min/median/max of the ratio over the runs. Beside it, the ceiling the transport sets:
 * a bare `ws` echo between two processes pinned the same way, each side busy for the split's measured
 * edge and cloud ms per step and sending frames of the step's and the token's sizes, gives the network
 * time no split over this socket can go below, and so the highest ratio this machine allows:
 * local ms per token ÷ (edge + cloud + echo network).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { writePackage } from '../models/package.js';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { once } from 'node:events';
import { WebSocket, WebSocketServer } from 'ws';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage, openModel } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { BIN, FIXTURES, fmt, haveFixtures, minMedMax, pinnedCloud, pinnedRun, pinnedServer, REPO } from './common.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '64' },
    split: { type: 'string' },
    codec: { type: 'string', default: 'fp32' },
    'skip-100m': { type: 'boolean' },
    pinned: { type: 'boolean' },
    runs: { type: 'string', default: '3' },
    role: { type: 'string' },
    model: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
    'work-ms': { type: 'string', default: '0' },
    'edge-ms': { type: 'string', default: '0' },
    bytes: { type: 'string', default: '789' },
    url: { type: 'string' },
  },
});
if (values.help) {
  process.stdout.write(
    [
      'usage: node dist/bench/e2e.js [--tokens N] [--split K] [--codec SPEC] [--skip-100m] [--json]',
      '       node dist/bench/e2e.js --pinned [--runs N] [--tokens N] [--skip-100m] [--json]',
      '',
      '  one process (default): split generation over loopback against local generation, same run',
      '  --pinned: edge and cloud as two processes pinned to a core each against local pinned to one,',
      '            with the transport ceiling of a bare ws echo pinned the same way',
      '',
      'example: node dist/bench/e2e.js --pinned --runs 3 --tokens 128 --skip-100m',
      '',
    ].join('\n'),
  );
  process.exit(0);
}
const n = Number(values.tokens);
const PROMPT = 'Once upon a time';

/** Keeps the core busy for `ms` (a stand-in for a segment's run). */
const busy = (ms: number) => {
  const until = performance.now() + ms;
  while (performance.now() < until);
};

/** --role echo-server (a child of --pinned): a ws server answering each message with a 14-byte frame after --work-ms of busy time. */
if (values.role === 'echo-server') {
  const work = Number(values['work-ms']);
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  const reply = new Uint8Array(14);
  wss.on('connection', (ws) =>
    ws.on('message', () => {
      busy(work);
      ws.send(reply);
    }),
  );
  const addr = wss.address();
  process.stdout.write(JSON.stringify({ url: `ws://127.0.0.1:${addr && typeof addr === 'object' ? addr.port : 0}` }) + '\n');
  await new Promise(() => {}); // serves until --pinned kills it
}

/** --role echo-client: --tokens rounds of (--edge-ms busy, a --bytes message, the reply); the mean round less the server's --work-ms, as JSON. */
if (values.role === 'echo-client') {
  const ws = new WebSocket(values.url!);
  await once(ws, 'open');
  const payload = new Uint8Array(Number(values.bytes));
  const work = Number(values['work-ms']);
  const edge = Number(values['edge-ms']);
  let total = 0;
  for (let i = -8; i < n; i++) {
    busy(edge);
    const t0 = performance.now();
    const got = once(ws, 'message');
    ws.send(payload);
    await got;
    if (i >= 0) total += performance.now() - t0 - work;
  }
  ws.close();
  process.stdout.write(JSON.stringify({ networkMs: total / n }) + '\n');
  process.exit(0);
}

/** --role local (a child of --pinned): whole-model decode tokens/s after the first token, as JSON. */
if (values.role === 'local') {
  const pkg = await openModel(values.model ?? DEFAULT_MODEL_DIR);
  const p = await Pipeline.create(pkg);
  const ids = pkg.tokenizer().encode(PROMPT, true);
  await generate(p, ids, { maxTokens: 4, stopIds: [] });
  const times: number[] = [];
  await generate(p, ids, { maxTokens: n, stopIds: [], onToken: () => void times.push(performance.now()) });
  process.stdout.write(JSON.stringify({ decodeTokensPerSec: (times.length - 1) / ((times[times.length - 1]! - times[0]!) / 1000) }) + '\n');
  process.exit(0);
}

/** The network ms per step of a bare ws echo between core 0 and core 1, each side busy for the split's own ms per step. */
async function echoFloor(edgeMs: number, cloudMs: number, bytes: number): Promise<number> {
  const e2e = join(REPO, 'dist', 'bench', 'e2e.js');
  const server = await pinnedServer(1, [e2e, '--role', 'echo-server', '--work-ms', String(cloudMs)]);
  try {
    const out = await pinnedRun(0, [e2e, '--role', 'echo-client', '--url', server.url, '--work-ms', String(cloudMs), '--edge-ms', String(edgeMs), '--bytes', String(bytes), '--tokens', String(n)]);
    return (JSON.parse(out) as { networkMs: number }).networkMs;
  } finally {
    await server.stop();
  }
}

async function pinnedOnce(dir: string, split: number): Promise<{ local: number; split: number; edgeMs: number; networkMs: number; cloudMs: number; echoNetworkMs: number; ceiling: number }> {
  const local = (JSON.parse(await pinnedRun(0, [join(REPO, 'dist', 'bench', 'e2e.js'), '--role', 'local', '--model', dir, '--tokens', String(n)])) as { decodeTokensPerSec: number }).decodeTokensPerSec;
  const cloud = await pinnedCloud(1, dir);
  let d: { edgeMs: number; networkMs: number; cloudMs: number; wireBytes: number };
  try {
    const url = cloud.url;
    const edgeArgs = [BIN, 'edge', '--cloud', url, '--model', dir, '--split', String(split), '--codec', 'fp32', '--prompt', PROMPT, '--max-tokens', String(n), '--json'];
    await pinnedRun(0, [...edgeArgs.slice(0, -3), '--max-tokens', '4', '--json']); // the cloud's back segment warm
    d = (JSON.parse(await pinnedRun(0, edgeArgs)) as { stats: { decode: typeof d } }).stats.decode;
  } finally {
    await cloud.stop();
  }
  // the echo runs on the same cores once the cloud is gone
  const echoNetworkMs = await echoFloor(d.edgeMs, d.cloudMs, Math.round(d.wireBytes));
  return { local, split: 1000 / (d.edgeMs + d.networkMs + d.cloudMs), edgeMs: d.edgeMs, networkMs: d.networkMs, cloudMs: d.cloudMs, echoNetworkMs, ceiling: 1000 / (d.edgeMs + d.cloudMs + echoNetworkMs) / local };
}

if (values.pinned) {
  const runs = Number(values.runs);
  const models: { name: string; dir: string; split: number }[] = [{ name: 'default', dir: DEFAULT_MODEL_DIR, split: 3 }];
  const tmp = mkdtempSync(join(tmpdir(), 'splitllm-e2e-'));
  try {
    if (!values['skip-100m']) {
      process.stderr.write('writing the llama-100m synthetic preset to a temporary package…\n');
      await writePackage(join(tmp, 'llama-100m'), syntheticModel('llama-100m'));
      models.push({ name: 'synthetic llama-100m', dir: join(tmp, 'llama-100m'), split: 6 });
    }
    const rows = [];
    for (const m of models) {
      const got: Awaited<ReturnType<typeof pinnedOnce>>[] = [];
      for (let i = 0; i < runs; i++) {
        const g = await pinnedOnce(m.dir, m.split);
        got.push(g);
        if (!values.json) process.stderr.write(`  ${m.name} run ${i + 1}/${runs}: local ${fmt(g.local)} tok/s, split ${fmt(g.split)} tok/s (edge ${fmt(g.edgeMs, 3)} + network ${fmt(g.networkMs, 3)} + cloud ${fmt(g.cloudMs, 3)} ms; a bare ws echo: ${fmt(g.echoNetworkMs, 3)} ms)\n`);
      }
      const of = (f: (g: (typeof got)[number]) => number) => minMedMax(got.map(f));
      rows.push({
        model: m.name,
        split: m.split,
        tokens: n,
        ratio: of((g) => g.split / g.local),
        ceiling: of((g) => g.ceiling),
        localTokensPerSec: of((g) => g.local),
        splitTokensPerSec: of((g) => g.split),
        edgeMs: of((g) => g.edgeMs),
        networkMs: of((g) => g.networkMs),
        cloudMs: of((g) => g.cloudMs),
        echoNetworkMs: of((g) => g.echoNetworkMs),
      });
    }
    if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
    else {
      process.stdout.write(`bench/e2e --pinned: edge on core 0, cloud on core 1, local on core 0, default options, fp32 codec, ${n} tokens, ${runs} runs; load ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);
      process.stdout.write('model                  split  local decode tok/s (min/med/max)  split decode tok/s (min/med/max)  ratio (min/med/max)  ceiling (min/med/max)  network / bare echo ms (medians)\n');
      for (const r of rows) {
        const t = (x: { min: number; median: number; max: number }, d = 1) => `${fmt(x.min, d)} / ${fmt(x.median, d)} / ${fmt(x.max, d)}`;
        process.stdout.write(`${r.model.padEnd(22)} ${String(r.split).padStart(5)}  ${t(r.localTokensPerSec).padEnd(33)} ${t(r.splitTokensPerSec).padEnd(33)} ${t(r.ratio, 2).padEnd(20)} ${t(r.ceiling, 2).padEnd(22)} ${fmt(r.networkMs.median, 3)} / ${fmt(r.echoNetworkMs.median, 3)}\n`);
      }
      process.stdout.write('ceiling: local ms per token ÷ (the split\'s edge + cloud ms + a bare ws echo\'s network ms between the same two cores)\n');
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(0);
}

async function measure(name: string, pkg: ModelPackage): Promise<Record<string, number | string>> {
  const split = values.split ? Number(values.split) : Math.floor(pkg.config.nLayers / 2);
  const prompt = PROMPT;
  const stopIds: number[] = [];
  const p = await Pipeline.create(pkg);
  await generate(p, pkg.tokenizer().encode(prompt), { maxTokens: 4, stopIds }); // warm-up
  const t0 = performance.now();
  const localIds = await generate(p, pkg.tokenizer().encode(prompt), { maxTokens: n, stopIds });
  const localS = (performance.now() - t0) / 1000;
  await p.release();
  const server = await startCloud(pkg);
  try {
    await runEdge(pkg, { url: `${server.url}/v1/session`, split, codec: values.codec, prompt, maxTokens: 4, stopIds }); // warm-up
    const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split, codec: values.codec, prompt, maxTokens: n, stopIds });
    const same = r.tokens.every((t, i) => t === localIds[i]);
    return {
      model: name,
      split,
      codec: values.codec!,
      localTokensPerSec: localIds.length / localS,
      splitTokensPerSec: r.stats.tokensPerSec,
      ratio: r.stats.tokensPerSec / (localIds.length / localS),
      localMsPerToken: (1000 * localS) / localIds.length,
      splitMsPerToken: (1000 * r.stats.seconds) / r.stats.tokens,
      edgeMs: r.stats.edgeMs,
      networkMs: r.stats.networkMs,
      cloudMs: r.stats.cloudMs,
      bytesUpPerToken: r.stats.bytesUpPerToken,
      sameTokens: same ? 'yes' : 'no',
    };
  } finally {
    await server.close();
  }
}

const rows: Record<string, number | string>[] = [];
if (haveFixtures) rows.push(await measure('stories260K', await openModel(resolve(FIXTURES, 'stories260K', 'stories260K.bin'))));
else process.stderr.write(`stories260K skipped: fixtures not found at ${FIXTURES}\n`);
if (!values['skip-100m']) {
  process.stderr.write('building the llama-100m synthetic preset in memory…\n');
  rows.push(await measure('synthetic llama-100m', ModelPackage.fromImported(syntheticModel('llama-100m'))));
}
if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
else {
  process.stdout.write('model                  split codec  local tok/s  split tok/s  ratio  local ms/tok  split ms/tok (edge+net+cloud)  B up/tok  same tokens\n');
  for (const r of rows) {
    const num = (k: string, d = 1) => fmt(r[k] as number, d);
    process.stdout.write(
      `${String(r['model']).padEnd(22)} ${String(r['split']).padStart(5)} ${String(r['codec']).padEnd(6)} ${num('localTokensPerSec').padStart(11)} ${num('splitTokensPerSec').padStart(12)} ${num('ratio', 2).padStart(6)} ${num('localMsPerToken', 2).padStart(13)} ${num('splitMsPerToken', 2).padStart(13)} (${num('edgeMs', 2)}+${num('networkMs', 2)}+${num('cloudMs', 2)}) ${num('bytesUpPerToken', 0).padStart(9)} ${String(r['sameTokens']).padStart(12)}\n`,
    );
  }
}

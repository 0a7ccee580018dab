/**
 * bench/abuse: does one abusive client slow the others down? A healthy session's time per token on a
 * cloud alone, then on the same cloud while two hostile clients run beside it (issue 35):
 *   - a flooder streaming tiny valid frames (probes of 0 bytes) as fast as its socket takes them, reading
 *     the replies so that backpressure never stops it;
 *   - a bomber that says hello and sends prefills of 16 KB claiming 67M values (a topk decompression bomb),
 *     reconnecting whenever the cloud closes it (too_many_errors after 100).
 * /healthz is asked every 100 ms meanwhile. The cloud runs alone on core 1; this process (the healthy edge)
 * on core 0, the attackers on core 0 too at nice 19 (what they take is what the edge leaves idle).
 * Prints min/median/max of `--runs` runs of each, the ratio of medians, /healthz's worst latency and
 * failures, and the machine's load.
 *
 *   taskset -c 0 node dist/bench/abuse.js [--model DIR] [--tokens 128] [--runs 5] [--json]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runEdge } from '../edge/agent.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { openModel } from '../models/package.js';
import { HEADER_BYTES, writeHeader } from '../quantization/activations/format.js';
import { TOPK_ID } from '../quantization/activations/sparse.js';
import { encodeFrame, PROTOCOL_VERSION } from '../shared/protocol/index.js';
import { cleanEnv, fmt, minMedMax, pinnedCloud, REPO } from './common.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: DEFAULT_MODEL_DIR },
    tokens: { type: 'string', default: '128' },
    runs: { type: 'string', default: '5' },
    split: { type: 'string', default: '2' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: taskset -c 0 node dist/bench/abuse.js [--model DIR] [--tokens N] [--runs R] [--split K] [--json]\n');
  process.exit(0);
}
const tokens = Number(values.tokens);
const runs = Number(values.runs);
const split = Number(values.split);
const pkg = await openModel(values.model!);
const cloud = await pinnedCloud(1, values.model!);
const url = cloud.url;
const http = url.replace(/^ws/, 'http').replace(/\/v1\/session$/, '');
const prompt = 'ROMEO:';

/** ms per generated token after the first (decode), one run */
async function perToken(): Promise<number> {
  const r = await runEdge(pkg, { url, split, prompt, maxTokens: tokens, stopIds: [], threads: 1 });
  if (r.tokens.length !== tokens) throw new Error(`the healthy session got ${r.tokens.length} tokens, not ${tokens}`);
  return (r.stats.seconds * 1000 - r.stats.prefill.firstTokenMs) / (tokens - 1);
}

/** A child at nice 19 on core 0 running `code` (CommonJS, with `ws` and the frames it needs as hex). */
function attacker(code: string): ChildProcess {
  const child = spawn('nice', ['-n', '19', 'taskset', '-c', '0', process.execPath, '-e', code], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout!.on('data', () => undefined);
  return child;
}
const WS = JSON.stringify(join(REPO, 'node_modules', 'ws'));
const hex = (b: Uint8Array) => JSON.stringify(Buffer.from(b).toString('hex'));

/**
 * A child's code: connect (again whenever the cloud closes it), send `first` once, then `frame` as fast as the
 * socket takes it (its send buffer kept under 1 MiB, 4096 frames an event-loop turn), reading and dropping what comes back; prints how many it sent.
 */
const pumper = (frame: Uint8Array, first?: Uint8Array) => `
  const WebSocket = require(${WS});
  const first = ${first ? `Buffer.from(${hex(first)}, 'hex')` : 'undefined'};
  const frame = Buffer.from(${hex(frame)}, 'hex');
  let sent = 0;
  const open = () => {
    const ws = new WebSocket(${JSON.stringify(url)});
    ws.on('error', () => {});
    ws.on('close', () => setTimeout(open, 50));
    ws.on('message', () => {});
    ws.on('open', () => {
      if (first) ws.send(first);
      const pump = () => {
        if (ws.readyState !== 1) return;
        // at most 4096 a turn: a loop the kernel keeps draining would never let the child report (or reconnect)
        for (let n = 0; n < 4096 && ws.bufferedAmount < 1 << 20; n++) { ws.send(frame); sent++; }
        setImmediate(pump);
      };
      pump();
    });
  };
  open();
  setInterval(() => console.log(JSON.stringify({ sent })), 1000);`;

// the flooder: probes of 0 bytes, valid without a session and never an error
const flooder = pumper(encodeFrame({ type: 'probe', id: 1, reply: 0 }));

// the bomber: a hello for a real session, then prefills whose payload claims [T, dim] values in 16 KB
const D = pkg.config.dim;
const bomb = new Uint8Array(16 * 1024);
writeHeader(bomb, TOPK_ID, Math.ceil((1 << 26) / D) - 1, D);
new DataView(bomb.buffer).setUint32(HEADER_BYTES + 4, 1000, true);
const hello = encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, modelHash: pkg.hash, split, codec: 'fp32', maxTokens: 8 });
const bomber = pumper(encodeFrame({ type: 'prefill', tokens: 1 }, bomb), hello);

/** /healthz every 100 ms until stopped: worst latency and failures (a 2 s timeout counts as one). */
function watchHealth(): { stop: () => Promise<{ asked: number; failed: number; worstMs: number }> } {
  let stop = false;
  const done = (async () => {
    let asked = 0;
    let failed = 0;
    let worstMs = 0;
    while (!stop) {
      const t0 = performance.now();
      asked++;
      try {
        const r = await fetch(`${http}/healthz`, { signal: AbortSignal.timeout(2000) });
        if (r.status !== 200) failed++;
      } catch {
        failed++;
      }
      worstMs = Math.max(worstMs, performance.now() - t0);
      await new Promise((r) => setTimeout(r, 100));
    }
    return { asked, failed, worstMs };
  })();
  return {
    stop: async () => {
      stop = true;
      return done;
    },
  };
}

try {
  await perToken(); // warm: the back segment, onnxruntime's arenas
  const solo: number[] = [];
  for (let i = 0; i < runs; i++) solo.push(await perToken());
  const soloHealth = watchHealth();
  await perToken();
  const soloH = await soloHealth.stop();
  const kids = [attacker(flooder), attacker(bomber)];
  const sentBy = kids.map(() => 0);
  kids.forEach((k, i) => k.stdout!.on('data', (d: Buffer) => (sentBy[i] = Number(/"sent":(\d+)/.exec(d.toString().trim().split('\n').pop() ?? '')?.[1] ?? sentBy[i]))));
  await new Promise((r) => setTimeout(r, 1500));
  const health = watchHealth();
  const attacked: number[] = [];
  for (let i = 0; i < runs; i++) attacked.push(await perToken());
  const h = await health.stop();
  for (const k of kids) k.kill('SIGKILL');
  const metrics = await (await fetch(`${http}/metrics`)).text();
  const metric = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? 0);
  const s = minMedMax(solo);
  const a = minMedMax(attacked);
  const out = {
    model: pkg.manifest.name,
    tokens,
    runs,
    soloMsPerToken: s,
    attackedMsPerToken: a,
    ratio: a.median / s.median,
    healthz: { solo: soloH, attacked: h },
    attackers: { flooderFramesSent: sentBy[0], bomberFramesSent: sentBy[1] },
    cloud: {
      throttledSeconds: metric(/^splitllm_throttled_seconds_total ([\d.e+-]+)/m),
      badTensor: metric(/^splitllm_errors_total\{code="bad_tensor"\} (\d+)/m),
      tooManyErrors: metric(/^splitllm_errors_total\{code="too_many_errors"\} (\d+)/m),
    },
    load: loadavg(),
  };
  if (values.json) process.stdout.write(JSON.stringify(out) + '\n');
  else {
    process.stdout.write(`bench/abuse: ${pkg.manifest.name}, split ${split}, ${tokens} tokens × ${runs} runs; cloud on core 1, edge and attackers (nice 19) on core 0; load ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);
    process.stdout.write(`  healthy session alone:     ${fmt(s.min, 2)} / ${fmt(s.median, 2)} / ${fmt(s.max, 2)} ms per token (min/median/max)\n`);
    process.stdout.write(`  beside flooder and bomber: ${fmt(a.min, 2)} / ${fmt(a.median, 2)} / ${fmt(a.max, 2)} ms per token — ${fmt(out.ratio, 2)}× alone (median)\n`);
    process.stdout.write(`  /healthz: alone worst ${fmt(soloH.worstMs, 1)} ms; attacked ${h.asked} asked, ${h.failed} failed, worst ${fmt(h.worstMs, 1)} ms\n`);
    process.stdout.write(`  attackers sent ${sentBy[0]} probe frames and ${sentBy[1]} bomb frames; the cloud throttled ${fmt(out.cloud.throttledSeconds, 1)} s, answered ${out.cloud.badTensor} bad_tensor, closed ${out.cloud.tooManyErrors} connections for too_many_errors\n`);
  }
} finally {
  await cloud.stop();
}

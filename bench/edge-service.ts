/**
 * bench/edge-service: time to first token of a request to the warm edge service (model, front segment
 * and onnxruntime session loaded; one HTTP request, streamed) against a cold `splitllm edge` process for
 * the same prompt (node start, model load, segment build, session, connect, prefill), same run, same
 * cloud. Prints min/median/max of each and the ratio of the medians, with the machine's load.
 *
 *   node dist/bench/edge-service.js [--runs 7] [--model PATH] [--split 2] [--prompt TEXT] [--json]
 *
 * onnxruntime threads: every session (the cloud's back segments, the service's front segment, the
 * cold process's) gets $SPLITLLM_THREADS intra-op threads; the bench sets it to 1 unless given.
 */
import { spawn } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startCloud } from '../cloud/server.js';
import { EdgeAgent } from '../edge/edge-agent.js';
import { startEdgeService } from '../edge/service.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { openModel } from '../models/package.js';
import { fmt, minMedMax, REPO } from './common.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '7' },
    model: { type: 'string', default: DEFAULT_MODEL_DIR },
    split: { type: 'string', default: '2' },
    prompt: { type: 'string', default: 'ROMEO:' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/edge-service.js [--runs N] [--model PATH] [--split K] [--prompt TEXT] [--json]\n');
  process.exit(0);
}
process.env['SPLITLLM_THREADS'] ??= '1';
const runs = Number(values.runs);
const split = Number(values.split);
const prompt = values.prompt;

const stats = (xs: number[]) => ({ ...minMedMax(xs), runs: xs.length });

/** ms from sending the request to the first streamed text of the reply. */
async function warmTtft(url: string): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: 4, temperature: 0, stream: true }),
  });
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let first = NaN;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    if (Number.isNaN(first) && /"text":"[^"]/.test(buf)) first = performance.now() - t0;
  }
  if (Number.isNaN(first)) throw new Error(`no text streamed: ${buf.slice(0, 200)}`);
  return first;
}

/** ms from spawning `splitllm edge` to the first text on its stdout (the prompt, printed with the first token). */
function coldTtft(cloudUrl: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'edge', '--cloud', cloudUrl, '--model', values.model, '--split', String(split), '--prompt', prompt, '--max-tokens', '4'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let first = NaN;
    let err = '';
    child.stdout.once('data', () => (first = performance.now() - t0));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', (code) => (code === 0 && !Number.isNaN(first) ? resolve(first) : reject(new Error(`splitllm edge exited ${code}: ${err}`))));
  });
}

const pkg = await openModel(values.model);
const cloud = await startCloud(pkg);
const t0 = performance.now();
const agent = await EdgeAgent.create({ model: pkg, cloud: cloud.url, split, maxConcurrent: 1 });
const service = await startEdgeService(agent, { port: 0 });
const startupMs = performance.now() - t0;
try {
  // one of each first: the cloud builds its back segment on the first hello, which neither side should pay
  await warmTtft(service.url);
  await coldTtft(cloud.url);
  const warm: number[] = [];
  const cold: number[] = [];
  for (let i = 0; i < runs; i++) {
    // interleaved, so that a change in the machine's load hits both alike
    warm.push(await warmTtft(service.url));
    cold.push(await coldTtft(cloud.url));
  }
  const w = stats(warm);
  const c = stats(cold);
  const out = {
    model: pkg.manifest.name,
    split,
    prompt,
    threadsPerSession: Number(process.env['SPLITLLM_THREADS']),
    cpus: cpus().length,
    loadavg: loadavg().map((x) => Number(x.toFixed(2))),
    serviceStartupMs: startupMs,
    warmServiceTtftMs: w,
    coldProcessTtftMs: c,
    ratioColdOverWarm: c.median / w.median,
  };
  if (values.json) process.stdout.write(JSON.stringify(out) + '\n');
  else {
    const line = (name: string, s: ReturnType<typeof stats>) => `${name.padEnd(28)} min ${fmt(s.min)}  median ${fmt(s.median)}  max ${fmt(s.max)} ms (${s.runs} runs)`;
    process.stdout.write(
      [
        `edge service, time to first token: ${out.model}, split ${split}, prompt ${JSON.stringify(prompt)}; ${out.threadsPerSession} onnxruntime thread(s) per session, ${out.cpus} CPUs, load ${out.loadavg.join(' ')}`,
        line('warm service (HTTP, SSE)', w),
        line('cold `splitllm edge` process', c),
        `cold / warm (medians): ${fmt(out.ratioColdOverWarm)}×   (the service itself started in ${fmt(startupMs)} ms, once)`,
      ].join('\n') + '\n',
    );
  }
} finally {
  await service.close();
  await agent.close();
  await cloud.close();
}

/**
 * bench/ttft: time to first token of a 200-token prompt over the project's link emulator (10 Mbit/s,
 * 40 ms RTT by default), default model, split 3, in the same run:
 * - ts-tabq (the split's calibrated default, as `splitllm edge --codec ts-tabq` uses) against fp16 hidden
 *   states, each with the prompt in chunks (the edge's default chunk, or --chunk) and as one message;
 * - the stages that cannot overlap: the RTT plus the slowest of edge prefill, transfer (the bytes the
 *   run sent ÷ bandwidth) and cloud prefill (each prefill timed alone on this machine), against which the
 *   pipelined TTFT is compared.
 * TTFT counts from the session's hello (the connection open, as the edge service keeps one) to the first
 * token; min/median/max over the runs. `--codec SPEC` puts another codec in ts-tabq's place (e.g. a coarser
 * step of the calibrated context: `ts-tabq:cal=3,step=0.84`), to see what the bytes buy.
 *
 *   node dist/bench/ttft.js [--runs 7] [--rtt 40] [--bandwidth 1250000] [--split 3] [--chunk N] [--codec SPEC] [--json]
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { calibrationContexts } from '../cli/calibration-io.js';
import { emulateLink } from '../cli/link-emulator.js';
import { startCloud } from '../cloud/server.js';
import { DEFAULT_PREFILL_CHUNK, runEdge } from '../edge/agent.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { openModel } from '../models/package.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { fmt, minMedMax } from './common.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '7' },
    rtt: { type: 'string', default: '40' },
    bandwidth: { type: 'string', default: '1250000' },
    split: { type: 'string', default: '3' },
    chunk: { type: 'string', default: String(DEFAULT_PREFILL_CHUNK) },
    codec: { type: 'string', default: 'ts-tabq' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write(
    [
      'usage: node dist/bench/ttft.js [--runs N] [--rtt MS] [--bandwidth BYTES_PER_S] [--split K] [--chunk N] [--codec SPEC] [--json]',
      '',
      '  --codec SPEC   the codec compared with fp16 (default ts-tabq: the split\'s calibrated default)',
      '',
      'example: node dist/bench/ttft.js --runs 7',
      '         node dist/bench/ttft.js --runs 7 --codec ts-tabq:cal=3,step=0.84',
      '',
    ].join('\n'),
  );
  process.exit(0);
}
const split = Number(values.split);
const rttMs = Number(values.rtt);
const bytesPerSec = Number(values.bandwidth);
const chunk = Number(values.chunk);
const pkg = await openModel(DEFAULT_MODEL_DIR);
const codecEnv = calibrationContexts({}, pkg);
const cloud = await startCloud(pkg, { calibration: codecEnv });
const link = await emulateLink({ host: '127.0.0.1', port: Number(new URL(cloud.url).port) }, { rttMs, bytesPerSec });
const url = `ws://127.0.0.1:${link.port}/v1/session`;
const ids = pkg.tokenizer().encode('Once upon a time there was a little girl who liked to play in the park with her dog. '.repeat(12), true).slice(0, 200);

/** ms of a prefill of the prompt through layers [from, to) alone, median of 5 */
async function prefillMs(from: number, to: number): Promise<number> {
  const rt = await SegmentRuntime.create(pkg, from, to, { embed: from === 0, head: to === pkg.config.nLayers });
  const input = from === 0 ? ids : new Float32Array(ids.length * pkg.config.dim).fill(0.01);
  const ms: number[] = [];
  for (let i = 0; i < 6; i++) {
    rt.reset();
    const t0 = performance.now();
    await rt.run(input, ids.length);
    if (i > 0) ms.push(performance.now() - t0);
  }
  await rt.release();
  return minMedMax(ms).median;
}

try {
  const variants = [
    { name: 'fp16', codec: 'fp16', chunk },
    { name: 'ts-tabq', codec: values.codec, chunk },
    { name: 'fp16, one message', codec: 'fp16', chunk: ids.length },
    { name: 'ts-tabq, one message', codec: values.codec, chunk: ids.length },
  ];
  const ttft = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  const bytes = new Map<string, number>();
  const run = (v: (typeof variants)[number]) => runEdge(pkg, { url, split, codec: v.codec, codecEnv, prompt: '', promptIds: ids, maxTokens: 1, stopIds: [], prefillChunk: v.chunk });
  for (const v of variants) await run(v); // warm
  // interleaved, so that drift hits all alike
  for (let i = 0; i < Number(values.runs); i++) {
    for (const v of variants) {
      const r = await run(v);
      ttft.get(v.name)!.push(r.stats.prefill.firstTokenMs);
      bytes.set(v.name, r.stats.bytesUp);
    }
  }
  const edgeMs = await prefillMs(0, split);
  const cloudMs = await prefillMs(split, pkg.config.nLayers);
  const transferMs = (1000 * bytes.get('ts-tabq')!) / bytesPerSec;
  const floorMs = rttMs + Math.max(edgeMs, transferMs, cloudMs);
  const of = (name: string) => ttft.get(name)!;
  const ratio = (a: string, b: string) => minMedMax(of(a).map((t, i) => t / of(b)[i]!));
  const out = {
    promptTokens: ids.length,
    rttMs,
    bytesPerSec,
    chunk,
    fp16: minMedMax(of('fp16')),
    tsTabq: minMedMax(of('ts-tabq')),
    ratio: ratio('ts-tabq', 'fp16'),
    oneMessage: { fp16: minMedMax(of('fp16, one message')), tsTabq: minMedMax(of('ts-tabq, one message')), ratio: ratio('ts-tabq, one message', 'fp16, one message') },
    bytesUp: Object.fromEntries(bytes),
    stages: { edgePrefillMs: edgeMs, transferMs, cloudPrefillMs: cloudMs, floorMs },
    tsTabqOverFloor: minMedMax(of('ts-tabq').map((t) => t / floorMs)),
    load: loadavg().map((l) => Number(l.toFixed(2))),
  };
  if (values.json) process.stdout.write(JSON.stringify(out) + '\n');
  else {
    const t = (x: { min: number; median: number; max: number }, d = 1) => `${fmt(x.min, d)} / ${fmt(x.median, d)} / ${fmt(x.max, d)}`;
    process.stdout.write(`bench/ttft: ${ids.length}-token prompt, ${rttMs} ms RTT, ${fmt((bytesPerSec * 8) / 1e6)} Mbit/s, split ${split}, chunks of ${chunk}, "ts-tabq" = ${values.codec}; ${values.runs} runs; load ${out.load.join(' ')}\n`);
    process.stdout.write(`TTFT ms min/median/max, chunked:     fp16 ${t(out.fp16)}, ts-tabq ${t(out.tsTabq)}; ts-tabq ÷ fp16 ${t(out.ratio, 2)}\n`);
    process.stdout.write(`TTFT ms min/median/max, one message: fp16 ${t(out.oneMessage.fp16)}, ts-tabq ${t(out.oneMessage.tsTabq)}; ts-tabq ÷ fp16 ${t(out.oneMessage.ratio, 2)}\n`);
    process.stdout.write(`bytes up: ${[...bytes].map(([k, b]) => `${k} ${b}`).join(', ')}\n`);
    process.stdout.write(`stages (ts-tabq): edge prefill ${fmt(edgeMs)} ms, transfer ${fmt(transferMs)} ms, cloud prefill ${fmt(cloudMs)} ms; RTT + slowest ${fmt(floorMs)} ms; chunked ts-tabq TTFT ÷ that ${t(out.tsTabqOverFloor, 2)}\n`);
  }
} finally {
  await link.close();
  await cloud.close();
}

/**
 * bench/ttft: time to first token of a 200-token prompt over the project's link emulator (10 Mbit/s,
 * 40 ms RTT by default), default model, split 3: ts-tabq against fp16 hidden states in the same run
 * (their ratio), min/median/max of several runs. TTFT counts from the edge's start (connect included)
 * to the first token.
 *
 *   node dist/bench/ttft.js [--runs 7] [--rtt 40] [--bandwidth 1250000] [--split 3] [--json]
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { emulateLink } from '../cli/link-emulator.js';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { openModel } from '../models/package.js';
import { fmt, minMedMax } from './common.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '7' },
    rtt: { type: 'string', default: '40' },
    bandwidth: { type: 'string', default: '1250000' },
    split: { type: 'string', default: '3' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/ttft.js [--runs N] [--rtt MS] [--bandwidth BYTES_PER_S] [--split K] [--json]\n');
  process.exit(0);
}
const pkg = await openModel(DEFAULT_MODEL_DIR);
const cloud = await startCloud(pkg);
const link = await emulateLink({ host: '127.0.0.1', port: Number(new URL(cloud.url).port) }, { rttMs: Number(values.rtt), bytesPerSec: Number(values.bandwidth) });
const url = `ws://127.0.0.1:${link.port}/v1/session`;
const ids = pkg.tokenizer().encode('Once upon a time there was a little girl who liked to play in the park with her dog. '.repeat(12), true).slice(0, 200);
try {
  const codecs = ['fp16', 'ts-tabq'];
  const ttft = new Map<string, number[]>(codecs.map((c) => [c, []]));
  await runEdge(pkg, { url, split: Number(values.split), codec: 'fp16', prompt: '', promptIds: ids, maxTokens: 1, stopIds: [] }); // warm
  // interleaved, so that drift hits both alike
  for (let i = 0; i < Number(values.runs); i++) {
    for (const codec of codecs) {
      const r = await runEdge(pkg, { url, split: Number(values.split), codec, prompt: '', promptIds: ids, maxTokens: 1, stopIds: [] });
      ttft.get(codec)!.push(r.stats.prefill.firstTokenMs);
    }
  }
  const fp16 = ttft.get('fp16')!;
  const tabq = ttft.get('ts-tabq')!;
  const out = { promptTokens: ids.length, rttMs: Number(values.rtt), bytesPerSec: Number(values.bandwidth), fp16: minMedMax(fp16), tsTabq: minMedMax(tabq), ratio: minMedMax(tabq.map((t, i) => t / fp16[i]!)), load: loadavg().map((l) => Number(l.toFixed(2))) };
  if (values.json) process.stdout.write(JSON.stringify(out) + '\n');
  else {
    const t = (x: { min: number; median: number; max: number }, d = 1) => `${fmt(x.min, d)} / ${fmt(x.median, d)} / ${fmt(x.max, d)}`;
    process.stdout.write(`bench/ttft: ${ids.length}-token prompt, ${values.rtt} ms RTT, ${fmt(Number(values.bandwidth) * 8 / 1e6)} Mbit/s, split ${values.split}; load ${out.load.join(' ')}\n`);
    process.stdout.write(`TTFT ms min/median/max: fp16 ${t(out.fp16)}, ts-tabq ${t(out.tsTabq)}; ts-tabq ÷ fp16 ${t(out.ratio, 2)}\n`);
  }
} finally {
  await link.close();
  await cloud.close();
}

/**
 * Decode cost against the position in the sequence: ms per token at a short and a long position on the
 * ~100M synthetic preset (2,048 positions), the long one as a ratio to the short one measured in the
 * same run. With the KV cache written in place the ratio is the attention's own O(position) reads; with
 * a cache copied every step (the reference graph) it grows with the copies too.
 *
 *   node dist/bench/kv-position.js [--positions 16,1000] [--steps 16] [--runs 3] [--attention resident,reference] [--json]
 */
import { parseArgs } from 'node:util';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage } from '../models/package.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { argmax } from '../models/runtime/sampler.js';
import { ATTENTION_KINDS, type AttentionKind } from '../models/onnx/segment.js';
import { fmt, minMedMax } from './common.js';
import { loadavg } from 'node:os';

const { values } = parseArgs({
  options: {
    positions: { type: 'string', default: '16,1000' },
    steps: { type: 'string', default: '16' },
    runs: { type: 'string', default: '3' },
    attention: { type: 'string', default: 'resident,reference' },
    bits: { type: 'string', default: '32' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write(
    'usage: node dist/bench/kv-position.js [--positions 16,1000] [--steps N] [--runs N] [--attention resident,reference] [--json]\n' +
      'example: node dist/bench/kv-position.js --positions 16,500,1000 --runs 5\n',
  );
  process.exit(0);
}
const positions = values.positions.split(',').map(Number);
const steps = Number(values.steps);
const runs = Number(values.runs);
const kinds = values.attention.split(',').map((k) => {
  if (!(ATTENTION_KINDS as readonly string[]).includes(k)) throw new Error(`--attention takes ${ATTENTION_KINDS.join(', ')}, not ${k}`);
  return k as AttentionKind;
});

process.stderr.write(`building the llama-100m synthetic preset in memory… (load ${loadavg().map((l) => l.toFixed(2)).join(' ')})\n`);
const pkg = ModelPackage.fromImported(syntheticModel('llama-100m'));
const c = pkg.config;
const V = c.vocabSize;

/** ms per decode step after a prefill to `position`. */
async function msAt(rt: SegmentRuntime, position: number): Promise<number> {
  rt.reset();
  const prompt = Array.from({ length: position }, (_, i) => 3 + ((i * 31) % (V - 3)));
  let out = await rt.run(prompt, prompt.length);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    const next = argmax(out.data, (out.tokens - 1) * V, V);
    out = await rt.run([next], 1);
  }
  return (performance.now() - t0) / steps;
}

const rows: { attention: AttentionKind; position: number; msPerToken: { min: number; median: number; max: number }; vsFirst: number }[] = [];
for (const attention of kinds) {
  const rt = await SegmentRuntime.create(pkg, 0, c.nLayers, { attention });
  await msAt(rt, 8); // warm-up
  const per = new Map<number, number[]>(positions.map((p) => [p, []]));
  for (let r = 0; r < runs; r++) for (const p of positions) per.get(p)!.push(await msAt(rt, p));
  await rt.release();
  const first = minMedMax(per.get(positions[0]!)!).median;
  for (const p of positions) {
    const m = minMedMax(per.get(p)!);
    rows.push({ attention, position: p, msPerToken: m, vsFirst: m.median / first });
  }
}
if (values.json) {
  process.stdout.write(JSON.stringify({ model: 'synthetic llama-100m', steps, runs, load: loadavg()[0], rows }) + '\n');
} else {
  process.stdout.write(`synthetic llama-100m, fp32, ${steps} decode steps per run, ${runs} runs (load ${loadavg()[0]!.toFixed(2)})\n`);
  process.stdout.write('attention   position   ms/token min / median / max   × position ' + positions[0] + '\n');
  for (const r of rows) {
    const m = r.msPerToken;
    process.stdout.write(`${r.attention.padEnd(11)} ${String(r.position).padStart(8)}   ${fmt(m.min, 2)} / ${fmt(m.median, 2)} / ${fmt(m.max, 2)}`.padEnd(52) + `${fmt(r.vsFirst, 2)}\n`);
  }
}

/**
 * bench/weights: for the ~100M synthetic preset,
 *  - memory: predicted bytes of the front segment [0, L/2) at 4 bits (block 32, embedding float32) next
 *    to the measured resident memory of a process holding it, minus the measured baseline of a process
 *    holding a trivial session (both measured in this run);
 *  - speed: decode tokens/s with SmoothQuant W8A8 (integer kernels) and 4-bit MatMulNBits, each as a ratio
 *    to float32 measured in the same run.
 *
 *   node dist/bench/weights.js [--json] [--tokens 32]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import onnxProto from 'onnx-proto';
import ort from 'onnxruntime-node';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage } from '../models/package.js';
import { DT, GraphBuilder } from '../models/onnx/graph.js';
import { linearFor } from '../models/onnx/linear.js';
import { buildSegment } from '../models/onnx/segment.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { emittersFor } from '../models/weights/registry.js';
import { argmax } from '../models/runtime/sampler.js';
import { segmentBytes } from '../quantization/weights/memory.js';
import { fmt } from './common.js';

const { values } = parseArgs({ options: { json: { type: 'boolean' }, tokens: { type: 'string', default: '32' }, help: { type: 'boolean' } } });
if (values.help) {
  process.stdout.write('usage: node dist/bench/weights.js [--json] [--tokens N]\n');
  process.exit(0);
}
const steps = Number(values.tokens);
const tmp = mkdtempSync(join(tmpdir(), 'splitllm-bench-w-'));
const holder = fileURLToPath(new URL('./hold-segment.js', import.meta.url));

process.stderr.write('building the llama-100m synthetic preset in memory…\n');
const pkg = ModelPackage.fromImported(syntheticModel('llama-100m'));
const c = pkg.config;
const half = c.nLayers / 2;

function holdRss(model: Uint8Array, inputs: { name: string; type: 'int64' | 'float32'; dims: number[] }[]): number {
  const path = join(tmp, `m${Math.random().toString(36).slice(2)}.onnx`);
  writeFileSync(path, model);
  const out = execFileSync(process.execPath, ['--expose-gc', holder, path, JSON.stringify(inputs)], {
    encoding: 'utf8',
    // a fixed mmap threshold makes glibc hand freed model-loading buffers back to the OS, so RSS shows what
    // the session keeps rather than what the loader once touched
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_TRIM_THRESHOLD_: '131072' },
  });
  rmSync(path);
  return (JSON.parse(out) as { rss: number }).rss;
}
const kvInputs = (from: number, to: number) =>
  Array.from({ length: to - from }, (_, j) => [
    { name: `past_key_${from + j}`, type: 'float32' as const, dims: [1, c.nKvHeads, 0, c.headDim] },
    { name: `past_value_${from + j}`, type: 'float32' as const, dims: [1, c.nKvHeads, 0, c.headDim] },
  ]).flat();

// baseline: onnxruntime with a trivial one-node session
const g = new GraphBuilder('baseline');
g.input('x', DT.FLOAT, [1]);
g.op('Identity', ['x'], {}, { outputs: ['y'] });
g.output('y', DT.FLOAT, [1]);
const baseline = holdRss(g.serialize(), [{ name: 'x', type: 'float32', dims: [1] }]);

const memRows: Record<string, number | string>[] = [];
for (const bits of [32, 4]) {
  const seg = buildSegment(c, pkg.weights, 0, half, { linearFor: () => linearFor(bits, 32), embed: true, head: false, attention: 'reference' });
  const predicted = segmentBytes(c, 0, half, { bitsOf: () => bits, blockSize: 32, embed: true, head: false });
  const rss = holdRss(seg.model!, [
    { name: 'input_ids', type: 'int64', dims: [1, 1] },
    { name: 'position_ids', type: 'int64', dims: [1, 1] },
    ...kvInputs(0, half),
  ]);
  memRows.push({
    segment: `[0,${half}) ${bits === 32 ? 'float32' : '4-bit rtn, block 32'}`,
    linearBytes: predicted.linear,
    embeddingBytes: predicted.embedding,
    predictedBytes: predicted.total,
    measuredBytes: rss - baseline,
    ratio: (rss - baseline) / predicted.total,
  });
}

async function tokensPerSec(linear: Parameters<typeof Pipeline.create>[2]): Promise<number> {
  const p = await Pipeline.create(pkg, [], linear);
  const V = c.vocabSize;
  await p.forward([1, 5, 6, 7]);
  p.reset();
  let out = await p.forward([1, 5, 6, 7, 8, 9, 10, 11]);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) out = await p.forward([argmax(out.data, (out.tokens - 1) * V, V)]);
  const s = (performance.now() - t0) / 1000;
  await p.release();
  return steps / s;
}
const calib = [Array.from({ length: 256 }, (_, i) => 3 + ((i * 131) % (c.vocabSize - 3)))];
const f32 = await tokensPerSec({});
const w8a8 = await tokensPerSec({ linearFor: await emittersFor(pkg, { split: 0, frontBits: 8, backBits: 8, blockSize: 32, strategy: 'smoothquant' }, calib) });
const q4 = await tokensPerSec({ linearFor: () => linearFor(4, 32) });
const speed = { float32: f32, smoothquantW8A8: w8a8, rtn4bit: q4, w8a8Ratio: w8a8 / f32, q4Ratio: q4 / f32 };

// which kernels a W8A8 layer runs after onnxruntime's optimizations (one layer of the same model)
const sqOne = await emittersFor(pkg, { split: 0, frontBits: 8, backBits: 8, blockSize: 32, strategy: 'smoothquant' }, calib);
const optPath = join(tmp, 'w8a8-opt.onnx');
await ort.InferenceSession.create(buildSegment(c, pkg.weights, 0, 1, { linearFor: sqOne, embed: true, head: false }).model!, { optimizedModelFilePath: optPath, graphOptimizationLevel: 'all' });
const ops: Record<string, number> = {};
for (const n of onnxProto.onnx.ModelProto.decode(readFileSync(optPath)).graph!.node!) ops[n.opType!] = (ops[n.opType!] ?? 0) + 1;
rmSync(tmp, { recursive: true, force: true });

if (values.json) process.stdout.write(JSON.stringify({ baselineRss: baseline, memory: memRows, speed, w8a8LayerOps: ops }) + '\n');
else {
  process.stdout.write(`runtime baseline RSS: ${fmt(baseline / 1e6)} MB\n`);
  process.stdout.write('segment                           linear MB  embedding MB  predicted MB  measured MB  measured/predicted\n');
  for (const r of memRows) {
    process.stdout.write(
      `${String(r['segment']).padEnd(33)} ${fmt((r['linearBytes'] as number) / 1e6).padStart(9)} ${fmt((r['embeddingBytes'] as number) / 1e6).padStart(13)} ${fmt((r['predictedBytes'] as number) / 1e6).padStart(13)} ${fmt((r['measuredBytes'] as number) / 1e6).padStart(12)} ${(r['ratio'] as number).toFixed(3).padStart(19)}\n`,
    );
  }
  process.stdout.write(`ops of one W8A8 layer after optimization: ${Object.entries(ops).map(([k, v]) => `${k}×${v}`).join(' ')}\n`);
  process.stdout.write(`decode tokens/s (llama-100m, full model): float32 ${fmt(f32)}, smoothquant W8A8 ${fmt(w8a8)} (${speed.w8a8Ratio.toFixed(2)}×), 4-bit MatMulNBits ${fmt(q4)} (${speed.q4Ratio.toFixed(2)}×)\n`);
}

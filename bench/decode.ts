/**
 * bench/decode: decode tokens/s of the full model (one segment) at each weight precision (every linear
 * layer at B bits, RTN blockwise, block 32 unless --block-size says otherwise; the LM head at B bits too
 * unless --head-bits says otherwise; the embedding stays float32), next to the roofline bound measured in the same run: memory bandwidth
 * (a copy by as many threads as the decoding session has, the better of one before and one after the models) ÷
 * weight bytes read per token (every initializer but the embedding table, of which a step reads one row,
 * unless the table is also the float32 head); and each precision's speed as a ratio to float32's in the
 * same run.
 *
 * Beside each row, the ceiling the kernels set: the model's linear layers alone (the same shapes,
 * precisions and stacking as the runtime's graph — q/k/v and gate/up as one MatMul each — every one
 * reading its own input, no attention, norms or KV), one onnxruntime run per token: its ms per token
 * and its own fraction of the bound. No runtime built on these kernels decodes faster than that.
 *
 *   node dist/bench/decode.js [--tokens 64] [--bits 32,8,4] [--head-bits same|32|8|4] [--block-size 32] [--json] [--skip-100m] [--skip-ceiling]
 */
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
import { threadPolicy } from '../models/runtime/threads.js';
import { resolve } from 'node:path';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage, openModel } from '../models/package.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { linearFor } from '../models/onnx/linear.js';
import { float32Linear, type LinearEmitter } from '../models/onnx/segment.js';
import { headEmitterFor } from '../models/weights/registry.js';
import { argmax } from '../models/runtime/sampler.js';
import { nodeBackend } from '../models/runtime/backend-node.js';
import { DT, GraphBuilder } from '../models/onnx/graph.js';
import { layerLayout, layerLinears, normGroups } from '../shared/decoder.js';
import type { ModelConfig } from '../models/manifest.js';
import { FIXTURES, fmt, haveFixtures, memoryBandwidth, minMedMax } from './common.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '64' },
    bits: { type: 'string', default: '32,8,4' },
    'head-bits': { type: 'string', default: 'same' },
    json: { type: 'boolean' },
    'skip-100m': { type: 'boolean' },
    'skip-ceiling': { type: 'boolean' },
    'block-size': { type: 'string', default: '32' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write(
    [
      'usage: node dist/bench/decode.js [--tokens N] [--bits 32,8,4] [--head-bits same|32|8|4] [--block-size N] [--json] [--skip-100m] [--skip-ceiling]',
      '',
      '  --tokens N       decode steps timed per precision (default 64)',
      '  --bits LIST      weight precisions (default 32,8,4)',
      '  --head-bits B    the LM head at B bits, or `same` as the layers (default)',
      '  --block-size N   quantization block of the layers and the head: 16, 32 (default), 64 or 128',
      '  --skip-100m      stories260K only (the ~100M synthetic preset takes ~1 min to build)',
      '  --skip-ceiling   no kernel ceiling (the linears alone) beside each row',
      '  --json           {"memoryBandwidthGBs", "bandwidthRunsGBs", "bandwidthThreads", "rows": [{model, bits, tokensPerSec, boundTokensPerSec, fractionOfBound, kernelTokensPerSec, kernelFractionOfBound, …}]}',
      '',
      'The bound: memory bandwidth (a copy by as many threads as the decoding session has, before and after the',
      'models, the better of the two) ÷ the weight bytes a decode step reads.',
      '',
      'example: node dist/bench/decode.js --skip-100m --bits 32,4 --json',
      '',
    ].join('\n'),
  );
  process.exit(0);
}
const steps = Number(values.tokens);
const precisions = values.bits.split(',').map(Number);
const blockSize = Number(values['block-size']);

async function measure(name: string, pkg: ModelPackage, bits: number): Promise<Record<string, number | string>> {
  const lin = linearFor(bits, blockSize);
  const headBits = values['head-bits'] === 'same' ? bits : Number(values['head-bits']);
  const headLinear = headEmitterFor({ headBits, blockSize });
  const p = await Pipeline.create(pkg, [], { linearFor: () => lin, headLinear });
  const { vocabSize: V, dim: D, tiedEmbeddings } = pkg.config;
  // the embedding table is read in full per step only when it is also the float32 head
  const table = headLinear === undefined && tiedEmbeddings ? 0 : (V - 1) * D * 4;
  const readBytes = p.segments.reduce((a, s) => a + s.segment.weightBytes, 0) - table;
  const prompt = [pkg.config.bosId, ...Array.from({ length: 15 }, (_, i) => 3 + ((i * 31) % (V - 3)))];
  // warm-up
  await p.forward(prompt);
  await p.forward([3]);
  p.reset();
  let out = await p.forward(prompt);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    const next = argmax(out.data, (out.tokens - 1) * V, V);
    out = await p.forward([next]);
  }
  const secs = (performance.now() - t0) / 1000;
  await p.release();
  const row: Record<string, number | string> = { model: name, bits, headBits, blockSize, readBytes, tokensPerSec: steps / secs, msPerToken: (1000 * secs) / steps };
  if (!values['skip-ceiling']) {
    const k = await kernelCeiling(pkg.config, lin, headLinear ?? float32Linear);
    Object.assign(row, { kernelMsPerToken: k.msPerToken, kernelBytes: k.bytes, kernelTokensPerSec: 1000 / k.msPerToken });
  }
  return row;
}

/**
 * The linears of a model alone, as the runtime's graph stacks them, each reading its own input vector and
 * each an output (so none is pruned): ms per run (the median of 5 runs of `steps`) and the bytes they hold.
 */
async function kernelCeiling(c: ModelConfig, lin: LinearEmitter, head: LinearEmitter): Promise<{ msPerToken: number; bytes: number }> {
  const g = new GraphBuilder('linears');
  let seed = 1;
  const data = (n: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5) * 0.1;
    return a;
  };
  const inputs = new Map<number, string>();
  const inputOf = (width: number) => inputs.get(width) ?? (inputs.set(width, g.input(`x${width}`, DT.FLOAT, [1, width])), `x${width}`);
  let n = 0;
  const emit = (e: LinearEmitter, name: string, inDim: number, outDim: number, layer: number) => {
    const y = e.linear(g, inputOf(inDim), { name, data: data(outDim * inDim), outDim, inDim, layer });
    g.op('Identity', [y], {}, { outputs: [`y${n}`] });
    g.output(`y${n++}`, DT.FLOAT, [1, outDim]);
  };
  for (let i = 0; i < c.nLayers; i++) {
    // stacked as the graph stacks them: the linears reading one norm together, o and down alone
    const L = layerLayout(c, i).linears;
    const groups = lin.stackable ? [...normGroups(c, i).map((n) => n.linears), [L.o], [L.down]] : layerLinears(c, i).map((l) => [l]);
    for (const grp of groups) emit(lin, grp.map((l) => l.name).join('+'), grp[0]!.in, grp.reduce((a, l) => a + l.out, 0), i);
  }
  emit(head, 'lm_head', c.dim, c.vocabSize, c.nLayers);
  const bytes = g.initializerBytes();
  const session = await nodeBackend.createSession(g.serialize(), { spin: 'alone' });
  const feeds = Object.fromEntries([...inputs.keys()].map((w) => [`x${w}`, nodeBackend.float32(data(w), [1, w])]));
  for (let i = 0; i < 3; i++) await session.run(feeds);
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) await session.run(feeds);
    runs.push((performance.now() - t0) / steps);
  }
  await session.release();
  return { msPerToken: minMedMax(runs).median, bytes };
}

// the bound: a copy with as many threads as the decoding session has, before and after the models (the
// better of the two: a roofline is what the machine can do, and this machine's bandwidth moves)
const threads = threadPolicy(undefined, 'alone').intraOpThreads;
const bwBefore = await memoryBandwidth({ threads });
const rows: Record<string, number | string>[] = [];
const models: [string, ModelPackage][] = [];
if (haveFixtures) models.push(['stories260K', await openModel(resolve(FIXTURES, 'stories260K', 'stories260K.bin'))]);
else process.stderr.write(`stories260K skipped: fixtures not found at ${FIXTURES}\n`);
if (!values['skip-100m']) {
  process.stderr.write('building the llama-100m synthetic preset in memory…\n');
  models.push(['synthetic llama-100m', ModelPackage.fromImported(syntheticModel('llama-100m'))]);
}
for (const [name, pkg] of models) {
  const own: Record<string, number | string>[] = [];
  for (const bits of precisions) own.push(await measure(name, pkg, bits));
  const f32 = own.find((r) => r['bits'] === 32);
  for (const r of own) if (f32) r['vsFloat32'] = (r['tokensPerSec'] as number) / (f32['tokensPerSec'] as number);
  rows.push(...own);
}
const bwAfter = await memoryBandwidth({ threads });
const bw = Math.max(bwBefore, bwAfter);
for (const r of rows) {
  const bound = bw / (r['readBytes'] as number);
  r['boundTokensPerSec'] = bound;
  r['fractionOfBound'] = (r['tokensPerSec'] as number) / bound;
  const kb = r['kernelBytes'];
  if (typeof kb === 'number') {
    r['kernelFractionOfBound'] = (r['kernelTokensPerSec'] as number) / (bw / kb);
    // how much of a decode step the linear layers alone take
    r['kernelShareOfStep'] = (r['kernelMsPerToken'] as number) / (r['msPerToken'] as number);
  }
}
if (values.json) {
  process.stdout.write(JSON.stringify({ memoryBandwidthGBs: bw / 1e9, bandwidthRunsGBs: [bwBefore / 1e9, bwAfter / 1e9], bandwidthThreads: threads, rows }) + '\n');
} else {
  process.stdout.write(`memory bandwidth (copy, read+write, ${threads} thread(s) as the sessions have): ${fmt(bw / 1e9, 2)} GB/s (before the models ${fmt(bwBefore / 1e9, 2)}, after ${fmt(bwAfter / 1e9, 2)}: the better is the bound)\n`);
  process.stdout.write('model                  bits  head   read MB/token   tokens/s   bound tokens/s   of bound   × float32   linears alone: tokens/s  of bound  share of step\n');
  const pct = (v: unknown) => (typeof v === 'number' ? `${(100 * v).toFixed(1)}%` : '-');
  for (const r of rows) {
    const vs = r['vsFloat32'];
    const kt = r['kernelTokensPerSec'];
    process.stdout.write(
      `${String(r['model']).padEnd(22)} ${String(r['bits']).padStart(4)} ${String(r['headBits']).padStart(5)} ${fmt((r['readBytes'] as number) / 1e6, 1).padStart(15)} ${fmt(r['tokensPerSec'] as number).padStart(10)} ${fmt(r['boundTokensPerSec'] as number).padStart(16)} ${pct(r['fractionOfBound']).padStart(10)}   ${(typeof vs === 'number' ? fmt(vs, 2) : '-').padStart(9)}   ${(typeof kt === 'number' ? fmt(kt) : '-').padStart(23)} ${pct(r['kernelFractionOfBound']).padStart(9)} ${pct(r['kernelShareOfStep']).padStart(14)}\n`,
    );
  }
  process.stdout.write(`load ${loadavg().map((l) => l.toFixed(2)).join(' ')}; onnxruntime intra-op threads per session: ${threads}\n`);
}

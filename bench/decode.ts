/**
 * bench/decode: decode tokens/s of the full model (one segment) at each weight precision (every linear
 * layer at B bits, RTN blockwise, block 32; the LM head at B bits too unless --head-bits says otherwise;
 * the embedding stays float32), next to the roofline bound measured in the same run: memory bandwidth ÷
 * weight bytes read per token (every initializer but the embedding table, of which a step reads one row,
 * unless the table is also the float32 head); and each precision's speed as a ratio to float32's in the
 * same run.
 *
 *   node dist/bench/decode.js [--tokens 64] [--bits 32,8,4] [--head-bits same|32|8|4] [--json] [--skip-100m]
 */
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage, openModel } from '../models/package.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { linearFor } from '../models/onnx/linear.js';
import { headEmitterFor } from '../models/weights/registry.js';
import { argmax } from '../models/runtime/sampler.js';
import { FIXTURES, fmt, haveFixtures, memoryBandwidth } from './common.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '64' },
    bits: { type: 'string', default: '32,8,4' },
    'head-bits': { type: 'string', default: 'same' },
    json: { type: 'boolean' },
    'skip-100m': { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/decode.js [--tokens N] [--bits 32,8,4] [--head-bits same|32|8|4] [--json] [--skip-100m]\n');
  process.exit(0);
}
const steps = Number(values.tokens);
const precisions = values.bits.split(',').map(Number);

async function measure(name: string, pkg: ModelPackage, bits: number): Promise<Record<string, number | string>> {
  const lin = linearFor(bits, 32);
  const headBits = values['head-bits'] === 'same' ? bits : Number(values['head-bits']);
  const headLinear = headEmitterFor({ headBits, blockSize: 32 });
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
  return { model: name, bits, headBits, readBytes, tokensPerSec: steps / secs, msPerToken: (1000 * secs) / steps };
}

const bw = memoryBandwidth();
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
for (const r of rows) {
  const bound = bw / (r['readBytes'] as number);
  r['boundTokensPerSec'] = bound;
  r['fractionOfBound'] = (r['tokensPerSec'] as number) / bound;
}
if (values.json) {
  process.stdout.write(JSON.stringify({ memoryBandwidthGBs: bw / 1e9, rows }) + '\n');
} else {
  process.stdout.write(`memory bandwidth (copy, read+write): ${fmt(bw / 1e9, 2)} GB/s\n`);
  process.stdout.write('model                  bits  head   read MB/token   tokens/s   bound tokens/s   of bound   × float32\n');
  for (const r of rows) {
    const vs = r['vsFloat32'];
    process.stdout.write(
      `${String(r['model']).padEnd(22)} ${String(r['bits']).padStart(4)} ${String(r['headBits']).padStart(5)} ${fmt((r['readBytes'] as number) / 1e6, 1).padStart(15)} ${fmt(r['tokensPerSec'] as number).padStart(10)} ${fmt(r['boundTokensPerSec'] as number).padStart(16)} ${(100 * (r['fractionOfBound'] as number)).toFixed(1).padStart(9)}%   ${typeof vs === 'number' ? fmt(vs, 2) : '-'}\n`,
    );
  }
}

/**
 * bench/decode: decode tokens/s of the full model (one segment, float32 weights), next to the roofline
 * bound measured in the same run: memory bandwidth ÷ weight bytes read per token.
 *
 *   node dist/bench/decode.js [--tokens 64] [--json] [--skip-100m]
 */
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage, openModel } from '../models/package.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { argmax } from '../models/runtime/sampler.js';
import { FIXTURES, fmt, haveFixtures, memoryBandwidth } from './common.js';

const { values } = parseArgs({
  options: { tokens: { type: 'string', default: '64' }, json: { type: 'boolean' }, 'skip-100m': { type: 'boolean' }, help: { type: 'boolean' } },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/decode.js [--tokens N] [--json] [--skip-100m]\n');
  process.exit(0);
}
const steps = Number(values.tokens);

async function measure(name: string, pkg: ModelPackage): Promise<Record<string, number | string>> {
  const p = await Pipeline.create(pkg);
  const weightBytes = p.segments.reduce((a, s) => a + s.segment.weightBytes, 0);
  const V = pkg.config.vocabSize;
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
  return { model: name, weightBytes, tokensPerSec: steps / secs, msPerToken: (1000 * secs) / steps };
}

const bw = memoryBandwidth();
const rows: Record<string, number | string>[] = [];
if (haveFixtures) {
  rows.push(await measure('stories260K', await openModel(resolve(FIXTURES, 'stories260K', 'stories260K.bin'))));
} else {
  process.stderr.write(`stories260K skipped: fixtures not found at ${FIXTURES}\n`);
}
if (!values['skip-100m']) {
  process.stderr.write('building the llama-100m synthetic preset in memory…\n');
  rows.push(await measure('synthetic llama-100m', ModelPackage.fromImported(syntheticModel('llama-100m'))));
}
for (const r of rows) {
  const bound = bw / (r['weightBytes'] as number);
  r['boundTokensPerSec'] = bound;
  r['fractionOfBound'] = (r['tokensPerSec'] as number) / bound;
}
if (values.json) {
  process.stdout.write(JSON.stringify({ memoryBandwidthGBs: bw / 1e9, rows }) + '\n');
} else {
  process.stdout.write(`memory bandwidth (copy, read+write): ${fmt(bw / 1e9, 2)} GB/s\n`);
  process.stdout.write('model                   weights MB   tokens/s   bound tokens/s   of bound\n');
  for (const r of rows) {
    process.stdout.write(
      `${String(r['model']).padEnd(22)} ${fmt((r['weightBytes'] as number) / 1e6, 1).padStart(10)} ${fmt(r['tokensPerSec'] as number).padStart(10)} ${fmt(r['boundTokensPerSec'] as number).padStart(16)} ${(100 * (r['fractionOfBound'] as number)).toFixed(1).padStart(9)}%\n`,
    );
  }
}

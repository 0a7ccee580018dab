/**
 * Writes a shape fixture (bench/shapes.ts): a Hugging Face folder with random bf16 weights in the exact
 * layout of Qwen2.5-0.5B, Llama-3.2-1B or Llama-3-8B, for `splitllm import` and the benches.
 *
 *   node dist/bench/shape-model.js --shape llama-3.2-1b --out /tmp/shapes/llama-3.2-1b [--seed 1] [--layers N] [--json]
 */
import { existsSync, readdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { formatBytes, progress } from '../cli/common.js';
import { SHAPES, writeShapeModel } from './shapes.js';

const { values } = parseArgs({
  options: {
    shape: { type: 'string' },
    out: { type: 'string' },
    seed: { type: 'string', default: '1' },
    layers: { type: 'string' },
    force: { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help || !values.shape || !values.out) {
  const shapes = Object.entries(SHAPES)
    .map(([k, s]) => `  ${k.padEnd(14)} ${s.description}`)
    .join('\n');
  process.stdout.write(
    'usage: node dist/bench/shape-model.js --shape NAME --out DIR [--seed N] [--layers N] [--force] [--json]\n' +
      'Writes a Hugging Face model folder with deterministic random bf16 weights in a published layout.\n' +
      `shapes:\n${shapes}\n` +
      'examples:\n' +
      '  node dist/bench/shape-model.js --shape qwen2.5-0.5b --out /tmp/shapes/qwen2.5-0.5b\n' +
      '  node dist/bench/shape-model.js --shape llama-3.2-1b --out /tmp/shapes/llama-3.2-1b && npx splitllm import /tmp/shapes/llama-3.2-1b --out /tmp/llama-1b\n' +
      '  node dist/bench/shape-model.js --shape llama-3-8b --out /tmp/shapes/llama-3-8b --layers 4\n',
  );
  process.exit(values.help ? 0 : 2);
}
const fail = (m: string): never => {
  process.stderr.write(`shape-model: ${m}\n`);
  process.exit(2);
};
if (!SHAPES[values.shape]) fail(`unknown --shape ${values.shape}: choose one of ${Object.keys(SHAPES).join(', ')}`);
const seed = Number(values.seed);
if (!Number.isInteger(seed)) fail(`--seed must be an integer, got ${values.seed}`);
const layers = values.layers === undefined ? undefined : Number(values.layers);
if (layers !== undefined && !(Number.isInteger(layers) && layers >= 1)) fail(`--layers must be a positive integer, got ${values.layers}`);
if (existsSync(values.out) && readdirSync(values.out).length > 0 && !values.force) fail(`--out ${values.out} is not empty: choose another folder or pass --force`);

const t0 = performance.now();
const bytes = writeShapeModel(values.shape, values.out, { seed, layers, progress: progress(`writing ${values.shape}`, { bytes: true, quiet: values.json }) });
const seconds = (performance.now() - t0) / 1000;
if (values.json) process.stdout.write(JSON.stringify({ shape: values.shape, out: values.out, seed, layers: layers ?? null, weightBytes: bytes, seconds }) + '\n');
else process.stdout.write(`wrote ${values.out}: ${values.shape}, ${formatBytes(bytes)} of bf16 weights in ${seconds.toFixed(1)} s\n`);

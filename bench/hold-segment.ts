/**
 * Child process of bench/weights: loads one ONNX file into an onnxruntime session, runs one token
 * through it (so that weight prepacking has happened) and prints its resident set size as JSON.
 */
import { readFileSync } from 'node:fs';
import ort from 'onnxruntime-node';

const [path, inputsJson] = process.argv.slice(2);
const session = await ort.InferenceSession.create(path!, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
const feeds: Record<string, ort.Tensor> = {};
const spec = JSON.parse(inputsJson ?? readFileSync(0, 'utf8')) as { name: string; type: 'int64' | 'float32'; dims: number[] }[];
for (const i of spec) {
  const n = i.dims.reduce((a, b) => a * b, 1);
  feeds[i.name] = i.type === 'int64' ? new ort.Tensor('int64', new BigInt64Array(n), i.dims) : new ort.Tensor('float32', new Float32Array(n), i.dims);
}
await session.run(feeds);
if (globalThis.gc) globalThis.gc();
const status = readFileSync('/proc/self/status', 'utf8');
const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
process.stdout.write(JSON.stringify({ rss }) + '\n');

import ort from 'onnxruntime-node';
import { expect, it } from 'vitest';
import { syntheticModel, SYNTHETIC_PRESETS } from '../models/importers/synthetic.js';
import { ModelPackage } from '../models/package.js';
import { DT, GraphBuilder } from '../models/onnx/graph.js';
import { linearFor, nbitsLinear } from '../models/onnx/linear.js';
import { buildSegment, float32Linear } from '../models/onnx/segment.js';
import { rng } from '../models/runtime/sampler.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { emittersFor, weightStrategy } from '../models/weights/registry.js';
import { blockwiseBytes, dequantizeBlockwise, quantizeBlockwise } from '../quantization/weights/blockwise.js';
import { awqTransform } from '../quantization/weights/awq.js';
import { linearBytes, segmentBytes } from '../quantization/weights/memory.js';
import { maxAbsDiff } from '../shared/tensor.js';

function randn(n: number, seed: number): Float32Array {
  const next = rng(seed);
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next()) * 0.05);
}

it('blockwise quantization: deterministic, within half a step, K not a multiple of the block (172)', () => {
  const N = 24;
  const K = 172;
  const w = randn(N * K, 1);
  for (const bits of [2, 3, 4, 8]) {
    for (const bs of [16, 32, 64, 128]) {
      const a = quantizeBlockwise(w, N, K, bits, bs);
      const b = quantizeBlockwise(w, N, K, bits, bs);
      expect(a.packed).toEqual(b.packed);
      expect(a.scales).toEqual(b.scales);
      expect(a.zeroPoints).toEqual(b.zeroPoints);
      expect(a.packed.length + a.scales.length * 4 + a.zeroPoints.length).toBe(blockwiseBytes(N, K, bits, bs));
      const d = dequantizeBlockwise(a);
      for (let n = 0; n < N; n++) {
        for (let k = 0; k < K; k++) {
          const s = a.scales[n * Math.ceil(K / bs) + Math.floor(k / bs)]!;
          expect(Math.abs(d[n * K + k]! - w[n * K + k]!)).toBeLessThanOrEqual(s / 2 + 1e-7);
        }
      }
    }
  }
});

it('bad bit widths and block sizes are typed errors', () => {
  const w = randn(64, 2);
  for (const [bits, bs] of [[5, 32], [1, 32], [4, 24], [4, 256], [16, 32]] as const) {
    expect(() => quantizeBlockwise(w, 2, 32, bits, bs), `${bits}/${bs}`).toThrow(expect.objectContaining({ code: 'E_BAD_ARGUMENT' }) as unknown as Error);
  }
  expect(() => linearFor(6)).toThrow(/weight bits 6 are not supported/);
});

it('MatMulNBits (2, 3-in-4, 4, 8 bits) at accuracy level 0 computes what the dequantized weights compute, at level 4 within 1% of the output range; half precision too', async () => {
  const N = 40;
  const K = 172;
  const w = randn(N * K, 3);
  const x = randn(5 * K, 4).map((v) => v * 20);
  const run = async (emit: (g: GraphBuilder) => string) => {
    const g = new GraphBuilder('t');
    g.input('x', DT.FLOAT, [1, 5, K]);
    g.op('Identity', [emit(g)], {}, { outputs: ['y'] });
    g.output('y', DT.FLOAT, [1, 5, N]);
    const s = await ort.InferenceSession.create(g.serialize());
    return (await s.run({ x: new ort.Tensor('float32', x, [1, 5, K]) }))['y']!.data as Float32Array;
  };
  for (const bits of [2, 3, 4, 8]) {
    const deq = dequantizeBlockwise(quantizeBlockwise(w, N, K, bits, 32));
    const weight = { name: 'w', data: w, outDim: N, inDim: K, layer: 0 };
    const ref = await run((g) => float32Linear.linear(g, 'x', { ...weight, data: deq }));
    // accuracy level 0: exactly the dequantized product (the packing is right)
    const exact = await run((g) => nbitsLinear(bits, 32, undefined, 0).linear(g, 'x', weight));
    expect(maxAbsDiff(exact, ref), `${bits} bits, level 0`).toBeLessThan(1e-4);
    // the default, level 4 (int8 activations per block): within the activations' quantization error
    const fast = await run((g) => linearFor(bits, 32).linear(g, 'x', weight));
    const scale = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const err = maxAbsDiff(fast, ref) / scale;
    process.stderr.write(`[weights] MatMulNBits ${bits} bits at accuracy level 4: max error ${err.toExponential(2)} of the output's range\n`);
    expect(err, `${bits} bits, level 4`).toBeLessThan(1e-2);
    expect(err, `${bits} bits, level 4 is not level 0`).toBeGreaterThan(0);
  }
  const half = await run((g) => linearFor(16).linear(g, 'x', { name: 'w', data: w, outDim: N, inDim: K, layer: 0 }));
  const full = await run((g) => float32Linear.linear(g, 'x', { name: 'w', data: w, outDim: N, inDim: K, layer: 0 }));
  expect(maxAbsDiff(half, full)).toBeLessThan(2e-3);
});

it('segment memory accounting equals the bytes the builder lays out', () => {
  const pkg = ModelPackage.fromImported(syntheticModel('tiny', 3, { qkvBias: true, architecture: 'qwen2' }));
  const c = pkg.config;
  for (const [from, to] of [[0, 2], [2, 4], [0, 4], [0, 0], [4, 4]] as const) {
    for (const bits of [32, 16, 8, 4, 3, 2]) {
      for (const bs of [16, 32, 64]) {
        const seg = buildSegment(c, pkg.weights, from, to, { linearFor: () => linearFor(bits, bs) });
        const predicted = segmentBytes(c, from, to, { bitsOf: () => bits, blockSize: bs });
        // the builder adds a few shape constants (int64 vectors, float scalars) beside the weights
        expect(seg.weightBytes - predicted.total, `[${from},${to}) ${bits} bits, block ${bs}`).toBeGreaterThanOrEqual(0);
        expect(seg.weightBytes - predicted.total, `[${from},${to}) ${bits} bits, block ${bs}`).toBeLessThan(1024);
      }
    }
  }
  expect(segmentBytes(c, 1, 3, { bitsOf: () => 32 }).kvPerToken).toBe(2 * 2 * c.nKvHeads * c.headDim * 4);
});

it('memory accounting holds for awq (input scales) and smoothquant (W8A8, smoothing folded into the norms)', async () => {
  const pkg = ModelPackage.fromImported(syntheticModel('tiny', 4));
  const calib = [Array.from({ length: 40 }, (_, i) => 3 + ((i * 7) % 300))];
  for (const [strategy, bits] of [['awq', 4], ['awq', 3], ['smoothquant', 8]] as const) {
    const lf = await emittersFor(pkg, { split: 0, frontBits: bits, backBits: bits, blockSize: 32, strategy }, calib);
    const seg = buildSegment(pkg.config, pkg.weights, 0, 4, { linearFor: lf });
    const predicted = segmentBytes(pkg.config, 0, 4, { bitsOf: () => bits, blockSize: 32, quantized: weightStrategy(strategy).linearBytes });
    expect(seg.weightBytes - predicted.total, `${strategy} ${bits}`).toBeGreaterThanOrEqual(0);
    expect(seg.weightBytes - predicted.total, `${strategy} ${bits}`).toBeLessThan(1024);
  }
});

it('SmoothQuant W8A8 keeps the model close to float32 and runs on integer kernels', async () => {
  const pkg = ModelPackage.fromImported(syntheticModel('tiny', 8));
  const calib = [Array.from({ length: 60 }, (_, i) => 3 + ((i * 11) % 300))];
  const ids = [1, 40, 41, 42, 50, 60, 70, 80];
  const lf = await emittersFor(pkg, { split: 0, frontBits: 8, backBits: 8, blockSize: 32, strategy: 'smoothquant' }, calib);
  const seg = buildSegment(pkg.config, pkg.weights, 0, 4, { linearFor: lf });
  const ops = new Set((await import('onnx-proto')).default.onnx.ModelProto.decode(seg.model!).graph!.node!.map((n) => n.opType));
  expect(ops.has('MatMulInteger')).toBe(true);
  expect(ops.has('DynamicQuantizeLinear')).toBe(true);
  const a = await (await Pipeline.create(pkg, [], { linearFor: lf })).forward(ids);
  const b = await (await Pipeline.create(pkg)).forward(ids);
  let e = 0;
  let n = 0;
  for (let i = 0; i < a.data.length; i++) {
    e += (a.data[i]! - b.data[i]!) ** 2;
    n += b.data[i]! ** 2;
  }
  expect(Math.sqrt(e / n)).toBeLessThan(0.05);
});

it('the ~100M preset: 4-bit block-32 linear weights take ≤ 0.17× their float32 bytes', () => {
  const c = SYNTHETIC_PRESETS['llama-100m']!.config;
  const half = c.nLayers / 2;
  const q = segmentBytes(c, 0, half, { bitsOf: () => 4, blockSize: 32 });
  const f = segmentBytes(c, 0, half, { bitsOf: () => 32 });
  expect(q.linear / f.linear).toBeLessThanOrEqual(0.17);
  expect(q.linear / f.linear).toBeGreaterThan(0.15);
  expect(linearBytes(2048, 768, 4, 32)).toBe(2048 * 24 * 16 + 2048 * 24 * 4 + 2048 * 12);
});

it('AWQ never does worse than round-to-nearest on its calibration rows', () => {
  const N = 32;
  const K = 64;
  const w = randn(N * K, 5);
  const T = 128;
  const X = randn(T * K, 6);
  for (let t = 0; t < T; t++) for (const k of [3, 17, 40]) X[t * K + k] = X[t * K + k]! * 40; // activation outlier channels
  for (const bits of [3, 4]) {
    const r = awqTransform(w, N, K, X, T, bits, 32);
    expect(r.awqError).toBeLessThanOrEqual(r.rtnError);
    expect(r.awqError).toBeLessThan(r.rtnError * 0.9);
  }
});

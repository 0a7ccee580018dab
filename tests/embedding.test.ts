/**
 * The token embedding at 8 and 4 bits (models/onnx/embedding.ts): the graph gathers exactly the rows of
 * the dequantized table, holds the bytes the accounting says, and a split run with it equals the local
 * pipeline with it; the planner takes it where memory binds and its ppl cost fits.
 */
import { describe, expect, it } from 'vitest';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { checkEmbedBits, quantizedEmbedding } from '../models/onnx/embedding.js';
import { GraphBuilder } from '../models/onnx/graph.js';
import { nbitsLinear } from '../models/onnx/linear.js';
import { buildSegment } from '../models/onnx/segment.js';
import { linearFor } from '../models/onnx/linear.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { SYNTHETIC_PRESETS } from '../models/importers/synthetic.js';
import { exhaustive } from '../planner/strategies/index.js';
import { syntheticProblem } from '../planner/synthetic.js';
import { dequantizeBlockwise, quantizeBlockwise } from '../quantization/weights/blockwise.js';
import { embeddingBytes, segmentBytes } from '../quantization/weights/memory.js';
import { defaultModel } from './helpers/models.js';

it('a table quantized a piece of rows at a time (as it is streamed from the package) gives the same graph as the whole table', () => {
  const V = 1000;
  const D = 70; // a last block of 6 values past 64
  const table = Float32Array.from({ length: V * D }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 13)));
  for (const bits of [8, 4]) {
    const whole = new GraphBuilder('whole');
    quantizedEmbedding(whole, 'e', table, V, D, bits, 32, 'ids');
    const pieces = new GraphBuilder('pieces');
    const seen: number[] = [];
    // pieces of 333 rows: 333, 333, 333, 1
    quantizedEmbedding(pieces, 'e', () => (function* () {
      for (let r = 0; r < V; r += 333) {
        seen.push(Math.min(333, V - r));
        yield table.slice(r * D, Math.min(V, r + 333) * D);
      }
    })(), V, D, bits, 32, 'ids');
    expect(seen).toEqual([333, 333, 333, 1]);
    expect(pieces.initializers.map((t) => [t.name, Buffer.from(t.bytes).toString('base64')])).toEqual(whole.initializers.map((t) => [t.name, Buffer.from(t.bytes).toString('base64')]));
    // a quantized head (MatMulNBits) from row pieces: the same initializers as from the whole weight
    const lin = nbitsLinear(bits, 32);
    const headWhole = new GraphBuilder('head-whole');
    lin.linear(headWhole, 'h', { name: 'lm_head.weight', data: table, outDim: V, inDim: D, layer: 3 });
    const headPieces = new GraphBuilder('head-pieces');
    lin.linearRows!(headPieces, 'h', { name: 'lm_head.weight', rows: (n) => (function* () {
      for (let r = 0; r < V; r += Math.min(n, 333)) yield table.slice(r * D, Math.min(V, r + Math.min(n, 333)) * D);
    })(), outDim: V, inDim: D, layer: 3 });
    expect(headPieces.initializers.map((t) => [t.name, Buffer.from(t.bytes).toString('base64')])).toEqual(headWhole.initializers.map((t) => [t.name, Buffer.from(t.bytes).toString('base64')]));
    expect(headPieces.nodes.map((n) => [n.opType, JSON.stringify(n.attribute)])).toEqual(headWhole.nodes.map((n) => [n.opType, JSON.stringify(n.attribute)]));
    // a piece that does not hold whole rows, or too few rows in all, is a package error
    expect(() => quantizedEmbedding(new GraphBuilder('x'), 'e', () => [table.subarray(0, D + 1)], V, D, bits, 32, 'ids')).toThrow(/does not hold whole rows/);
    expect(() => quantizedEmbedding(new GraphBuilder('x'), 'e', () => [table.subarray(0, 10 * D)], V, D, bits, 32, 'ids')).toThrow(/holds 10 rows, the model 1000/);
  }
});

it('an 8- or 4-bit embedding gathers exactly the dequantized rows, and holds the bytes the accounting counts', async () => {
  const pkg = await defaultModel();
  const c = pkg.config;
  const table = pkg.weights.get('model.embed_tokens.weight');
  const ids = [0, 1, 5, 17, 300, 511, 17];
  for (const bits of [8, 4]) {
    const rt = await SegmentRuntime.create(pkg, 0, 0, { embed: true, head: false, embedBits: bits });
    const out = (await rt.run(ids, ids.length)).data;
    const deq = dequantizeBlockwise(quantizeBlockwise(table, c.vocabSize, c.dim, bits, 32));
    let max = 0;
    let moved = 0;
    ids.forEach((id, t) => {
      for (let d = 0; d < c.dim; d++) {
        max = Math.max(max, Math.abs(out[t * c.dim + d]! - deq[id * c.dim + d]!));
        moved = Math.max(moved, Math.abs(out[t * c.dim + d]! - table[id * c.dim + d]!));
      }
    });
    expect(max, `${bits}-bit`).toBe(0);
    expect(moved, `${bits}-bit`).toBeGreaterThan(0);
    // codes + scales + zero points: 512 × 6 blocks × (32·bits/8 + 4 + 1) bytes, and a few bytes of constants
    expect(embeddingBytes(c.vocabSize, c.dim, bits, 32)).toBe(512 * 6 * ((32 * bits) / 8 + 5));
    expect(rt.segment.weightBytes - embeddingBytes(c.vocabSize, c.dim, bits, 32)).toBeGreaterThanOrEqual(0);
    expect(rt.segment.weightBytes - embeddingBytes(c.vocabSize, c.dim, bits, 32)).toBeLessThan(128);
    await rt.release();
  }
  // the front's accounting: the float table replaced by the codes
  const f = segmentBytes(c, 0, 3, { embed: true, head: false, bitsOf: () => 32 });
  const q = segmentBytes(c, 0, 3, { embed: true, head: false, bitsOf: () => 32, embedBits: 4 });
  expect(f.embedding - q.embedding).toBe(c.vocabSize * c.dim * 4 - embeddingBytes(c.vocabSize, c.dim, 4, 32));
  // a whole model with a tied head keeps a float table for the head beside the codes
  const whole = buildSegment(c, pkg.weights, 0, c.nLayers, { embed: true, head: true, embedBits: 8 });
  expect(whole.weightBytes).toBeGreaterThan(buildSegment(c, pkg.weights, 0, c.nLayers, { embed: true, head: true }).weightBytes);
  // embedding and tied head both quantized in one segment (the whole model on a device): each has its own
  // initializers (they once collided on a name), and the accounting counts codes for both, no float table
  for (const [eb, hb] of [[8, 8], [4, 8], [8, 4], [32, 4], [8, 32]] as const) {
    const seg = buildSegment(c, pkg.weights, 0, c.nLayers, { embed: true, head: true, embedBits: eb, headLinear: hb === 32 ? undefined : linearFor(hb, 32) });
    const predicted = segmentBytes(c, 0, c.nLayers, { embed: true, head: true, bitsOf: () => 32, embedBits: eb, headBits: hb }).total;
    expect(seg.weightBytes - predicted, `embedding ${eb}, head ${hb}`).toBeGreaterThanOrEqual(0);
    expect(seg.weightBytes - predicted, `embedding ${eb}, head ${hb}`).toBeLessThan(1024);
  }
  const both = await Pipeline.create(pkg, [], { embedBits: 8, headLinear: linearFor(8, 32) });
  const plain = await Pipeline.create(pkg);
  const prompt = pkg.tokenizer().encode('ROMEO:\nBut soft,', true);
  const [a, b] = [(await both.forward(prompt)).data, (await plain.forward(prompt)).data];
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
  expect(diff).toBeGreaterThan(0);
  expect(diff).toBeLessThan(0.5);
  await both.release();
  await plain.release();
  expect(() => checkEmbedBits(6)).toThrow(/embedding bits 6 are not supported: use one of 4, 8, 32/);
});

it('edge against cloud with a 4-bit embedding gives the local pipeline\'s tokens with the same embedding, at every split', async () => {
  const pkg = await defaultModel();
  const ids = pkg.tokenizer().encode('ROMEO:\nBut soft,', true);
  const p = await Pipeline.create(pkg, [], { embedBits: 4 });
  const local = await generate(p, ids, { maxTokens: 24, stopIds: [] });
  await p.release();
  const plain = await Pipeline.create(pkg);
  const float = await generate(plain, ids, { maxTokens: 24, stopIds: [] });
  await plain.release();
  const server = await startCloud(pkg);
  try {
    for (let k = 1; k < pkg.config.nLayers; k++) {
      const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split: k, codec: 'fp32', promptIds: ids, prompt: '', maxTokens: 24, stopIds: [], embedBits: 4 });
      expect(r.tokens, `split ${k}`).toEqual(local);
    }
  } finally {
    await server.close();
  }
  process.stderr.write(`[embedding] 4-bit embedding: ${local.filter((t, i) => t === float[i]).length}/24 greedy tokens as with the float one\n`);
});

it('the planner quantizes the embedding where the edge memory binds and its measured ppl cost fits, not where it does not', () => {
  const tiny = { ...SYNTHETIC_PRESETS['tinyllama-1.1b']!.config, hash: 'tinyllama-shaped' };
  const pr = syntheticProblem(tiny, 4);
  pr.accuracy = { ...pr.accuracy, embeds: { '8': 0.0001, '4': 0.002 } };
  pr.candidates = { ...pr.candidates, embedBits: [32, 8, 4] };
  const free = exhaustive.solve(pr, 1).plans[0]!;
  // the embedding is 32000 × 2048 floats (262 MB): at 8 bits it frees ~190 MB of the edge's budget
  const at8 = segmentBytes(tiny, 0, free.plan.split, { embed: true, head: false, bitsOf: () => free.plan.frontBits, embedBits: 8 });
  expect(at8.embedding).toBe(embeddingBytes(32000, 2048, 8, 32));
  // tight memory: a plan that only fits with a quantized embedding
  pr.budgets = { ...pr.budgets, edgeMemory: free.predicted.memory - 150e6 };
  const tight = exhaustive.solve(pr, 1).plans[0]!;
  expect(tight.plan.embedBits === 8 || tight.plan.embedBits === 4).toBe(true);
  expect(tight.predicted.memory).toBeLessThanOrEqual(pr.budgets.edgeMemory);
  // its ppl cost past the budget: not taken, whatever the memory
  pr.accuracy = { ...pr.accuracy, embeds: { '8': 0.5, '4': 0.9 } };
  const r = exhaustive.solve(pr, 1);
  expect(r.plans[0]?.plan.embedBits).toBeUndefined();
});

describe('a bf16 package keeps its float embedding in bf16', () => {
  it('the front gathers the bf16 table and casts it: half the bytes, the same hidden states as a float32 table, bit for bit', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { writePackage, ModelPackage: Pkg } = await import('../models/package.js');
    const { syntheticModel } = await import('../models/importers/synthetic.js');
    const { buildSegment } = await import('../models/onnx/segment.js');
    const { SegmentRuntime } = await import('../models/runtime/segment-runtime.js');
    const dir = mkdtempSync(join(tmpdir(), 'splitllm-bf16emb-'));
    try {
      await writePackage(dir, syntheticModel('tiny', 3), 'BF16');
      const pkg = Pkg.load(dir);
      const c = pkg.config;
      const half = buildSegment(c, pkg.weights, 0, 2, { embed: true, head: false });
      const float = buildSegment(c, pkg.weights, 0, 2, { embed: true, head: false, embedAsStored: false });
      expect(float.weightBytes - half.weightBytes).toBe(c.vocabSize * c.dim * 2);
      // the memory accounting counts what the builder holds: 2 bytes a value for the package's table (the
      // builder adds a few shape constants beside the weights)
      expect(pkg.memoryShape.embedValueBytes).toBe(2);
      for (const [seg, shape] of [[half, pkg.memoryShape], [float, c]] as const) {
        const counted = segmentBytes(shape, 0, 2, { embed: true, head: false, bitsOf: () => 32 }).total;
        expect(seg.weightBytes - counted).toBeGreaterThanOrEqual(0);
        expect(seg.weightBytes - counted).toBeLessThan(1024);
      }
      const out = async (seg: typeof half): Promise<Float32Array> => {
        const rt = await SegmentRuntime.fromBuilt(c, seg);
        const r = await rt.run([1, 50, 300, 7, 120], 5);
        rt.release();
        return r.data;
      };
      expect(await out(half)).toEqual(await out(float));
      // a whole model whose float32 head is tied to the embedding shares one float32 table, as before
      const tiedDir = join(dir, 'tied');
      await writePackage(tiedDir, syntheticModel('tiny', 3, { tiedEmbeddings: true }), 'BF16');
      const tied = Pkg.load(tiedDir);
      const whole = buildSegment(tied.config, tied.weights, 0, c.nLayers, { embed: true, head: true });
      expect(whole.weightBytes).toBe(buildSegment(tied.config, tied.weights, 0, c.nLayers, { embed: true, head: true, embedAsStored: false }).weightBytes);
      const counted = segmentBytes(tied.memoryShape, 0, c.nLayers, { embed: true, head: true, bitsOf: () => 32 }).total;
      expect(whole.weightBytes - counted).toBeGreaterThanOrEqual(0);
      expect(whole.weightBytes - counted).toBeLessThan(1024);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

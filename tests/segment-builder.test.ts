import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { syntheticModel } from '../models/importers/synthetic.js';
import { parameterCount } from '../models/manifest.js';
import { ModelPackage, openModel, writePackage } from '../models/package.js';
import { buildSegment, segmentIO } from '../models/onnx/segment.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { maxAbsDiff } from '../shared/tensor.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-seg-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const pkg = ModelPackage.fromImported(syntheticModel('tiny', 5));
const ids = [1, 70, 71, 72, 90, 91, 100, 120, 33, 34];

it('segment inputs and outputs name only their own layers', () => {
  const io = segmentIO(pkg.config, 1, 3);
  expect(io.inputNames).toEqual(['hidden_states', 'position_ids', 'past_key_1', 'past_value_1', 'past_key_2', 'past_value_2']);
  expect(io.outputNames).toEqual(['hidden_out', 'new_key_1', 'new_value_1', 'new_key_2', 'new_value_2']);
  const ref = segmentIO(pkg.config, 1, 3, { attention: 'reference', keyPositions: true });
  expect(ref.inputNames).toEqual(['hidden_states', 'position_ids', 'key_positions', 'past_key_1', 'past_value_1', 'past_key_2', 'past_value_2']);
  expect(ref.outputNames).toEqual(['hidden_out', 'present_key_1', 'present_value_1', 'present_key_2', 'present_value_2']);
  expect(segmentIO(pkg.config, 0, 0).inputNames).toEqual(['input_ids']);
  expect(segmentIO(pkg.config, 4, 4, { embed: false }).outputNames).toEqual(['logits']);
  expect(() => segmentIO(pkg.config, 2, 5)).toThrow(/outside the model's 4 layers/);
  expect(() => segmentIO(pkg.config, 3, 2)).toThrow(/outside/);
});

it('weights past the threshold go to ONNX external data and run the same', async () => {
  const inline = await Pipeline.create(pkg);
  const ref = await inline.forward(ids);
  const seg = buildSegment(pkg.config, pkg.weights, 0, 4, { externalDataThreshold: 0, dir: tmp });
  expect(seg.model).toBeUndefined();
  expect(existsSync(seg.modelPath!)).toBe(true);
  const data = `${seg.modelPath}.data`;
  expect(statSync(data).size).toBeGreaterThanOrEqual(parameterCount(pkg.config) * 4 * 0.9);
  expect(statSync(seg.modelPath!).size).toBeLessThan(200_000);
  const rt = await SegmentRuntime.fromBuilt(pkg.config, seg);
  const got = await rt.run(ids, ids.length);
  expect(maxAbsDiff(got.data, ref.data)).toBe(0);
});

it('KV handover: export from one segment, import into a fresh one, decoding continues identically', async () => {
  const a = await SegmentRuntime.create(pkg, 0, 4);
  await a.run(ids, ids.length);
  const kv = a.exportKV();
  expect(kv.map((e) => e.layer)).toEqual([0, 1, 2, 3]);
  expect(kv[0]!.key.length).toBe(pkg.config.nKvHeads * ids.length * pkg.config.headDim);
  const b = await SegmentRuntime.create(pkg, 0, 4);
  b.importKV(kv);
  expect(b.length).toBe(ids.length);
  const x = await a.run([5], 1);
  const y = await b.run([5], 1);
  expect(maxAbsDiff(x.data, y.data)).toBe(0);
  expect(() => b.importKV(kv.slice(1))).toThrow(/layer 0 is missing/);
});

it('synthetic packages write, load and run; import is deterministic', async () => {
  const m = syntheticModel('tiny', 99);
  const m1 = await writePackage(join(tmp, 'p1'), m);
  const m2 = await writePackage(join(tmp, 'p2'), syntheticModel('tiny', 99));
  expect(m1.weightsSha256).toBe(m2.weightsSha256);
  const loaded = await openModel(join(tmp, 'p1'));
  const a = await (await Pipeline.create(loaded)).forward(ids);
  const b = await (await Pipeline.create(ModelPackage.fromImported(m))).forward(ids);
  expect(maxAbsDiff(a.data, b.data)).toBe(0);
  expect(loaded.tokenizer().decode(loaded.tokenizer().encode('Hello, world!'))).toBe('Hello, world!');
});

it('a batch of decode steps over caches of different lengths equals running each alone', async () => {
  const model = ModelPackage.fromImported(syntheticModel('tiny', 21));
  const c = model.config;
  const front = await SegmentRuntime.create(model, 0, 1, { embed: true, head: false });
  const built = buildSegment(c, model.weights, 1, 4, { embed: false, head: true, keyPositions: true });
  const session = await SegmentRuntime.openSession(built);
  const prompts = [[1, 40, 41], [1, 50, 51, 52, 53, 54, 55], [1, 60]];
  const solo: SegmentRuntime[] = [];
  const batched: SegmentRuntime[] = [];
  const hiddenOf = async (ids: number[]) => (await front.run(ids, ids.length, { keepCache: false })).data;
  for (const p of prompts) {
    for (const list of [solo, batched]) {
      const rt = SegmentRuntime.withSession(c, built, session);
      await rt.run(await hiddenOf(p), p.length);
      list.push(rt);
    }
  }
  for (let step = 0; step < 3; step++) {
    const xs = await Promise.all(prompts.map(async (_, i) => (await hiddenOf([70 + i + step])).slice(0, c.dim)));
    const together = await SegmentRuntime.runBatch(batched, xs);
    for (let i = 0; i < prompts.length; i++) {
      const alone = await solo[i]!.run(xs[i]!, 1);
      expect(maxAbsDiff(together[i]!.data, alone.data), `step ${step} row ${i}`).toBeLessThan(1e-4);
      expect(batched[i]!.length).toBe(solo[i]!.length);
    }
  }
  await session.session.release();
});

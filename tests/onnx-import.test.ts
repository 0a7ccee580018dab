import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DT as GDT, GraphBuilder } from '../models/onnx/graph.js';
import { analyzeExport, type ExportIO } from '../models/onnx-import/analyze.js';
import { cutExport } from '../models/onnx-import/cut.js';
import { loadOnnx, type OnnxGraph } from '../models/onnx-import/load.js';
import { ImportedSegmentRunner, wholeIO, type SegmentInput } from '../models/onnx-import/runner.js';
import { SplitLLMError } from '../shared/errors.js';
import { userErrorOf } from './helpers/errors.js';
import { FIXTURES } from './helpers/fixtures.js';

const GENAI = join(FIXTURES, 'onnx', 'ortgenai-tiny-random-llama-fp16', 'model.onnx');
const GPT2 = join(FIXTURES, 'onnx', 'optimum-gpt2-tiny-decoder', 'gpt2-tiny-decoder.onnx');
const tmp = mkdtempSync(join(tmpdir(), 'splitllm-onnx-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const have = existsSync(GENAI) && existsSync(GPT2);
if (!have) process.stderr.write(`[splitllm tests] SKIPPED "ONNX export surgery": ${join(FIXTURES, 'onnx')} not found (set SPLITLLM_FIXTURES)\n`);
const describeOnnx = have ? describe : describe.skip;

const PREFILL = 16;
const DECODE = 16;

interface Trace {
  logits: Float32Array[];
  tokens: number[];
}

/** A 16-token prefill then 16 greedy decode steps through `step`, every step's logits kept. */
async function trace(io: ExportIO, step: (x: SegmentInput) => Promise<Float32Array>): Promise<Trace> {
  const prompt = Array.from({ length: PREFILL }, (_, i) => (i * 7919 + 11) % io.vocabSize);
  const logits: Float32Array[] = [];
  const tokens: number[] = [];
  let l = await step({ ids: prompt });
  logits.push(l);
  for (let s = 0; s < DECODE; s++) {
    const last = l.subarray(l.length - io.vocabSize);
    let best = 0;
    for (let v = 1; v < io.vocabSize; v++) if (last[v]! > last[best]!) best = v;
    tokens.push(best);
    l = await step({ ids: [best] });
    logits.push(l);
  }
  return { logits, tokens };
}

function maxDiff(a: Trace, b: Trace): number {
  let m = 0;
  a.logits.forEach((l, i) => {
    const r = b.logits[i]!;
    expect(l.length).toBe(r.length);
    for (let j = 0; j < l.length; j++) m = Math.max(m, Math.abs(l[j]! - r[j]!));
  });
  return m;
}

describeOnnx('ONNX export surgery: every cut of a third-party export equals the export', () => {
  for (const [label, path, tol, expected] of [
    ['onnxruntime-genai Llama, fp16, contrib ops', GENAI, 2e-3, { nLayers: 2, hiddenSize: 16, vocabSize: 32000, floatType: 'float16', kvHeads: 1, headDim: 16 }],
    ['optimum GPT-2, fp32, plain ops, no past inputs', GPT2, 1e-4, { nLayers: 5, hiddenSize: 32, vocabSize: 1000, floatType: 'float32', kvHeads: 4, headDim: 8 }],
  ] as const) {
    it(`${label}: front then back = the unsplit export (run from its own file), at every K`, async () => {
      const g: OnnxGraph = loadOnnx(path);
      const io = analyzeExport(g, path);
      expect(io).toMatchObject({ ...expected, inputIds: { name: 'input_ids', dtype: 'int64' }, attentionMask: { name: 'attention_mask', dtype: 'int64' }, logits: 'logits' });
      expect(io.past === undefined).toBe(path === GPT2);
      if (io.past) expect(io.past.key).toEqual(['past_key_values.0.key', 'past_key_values.1.key']);
      expect(io.present?.value[io.nLayers - 1]).toBe(`present.${io.nLayers - 1}.value`);

      const whole = await ImportedSegmentRunner.create(path, wholeIO(io), io);
      const ref = await trace(io, async (x) => (await whole.run(x)).data);
      await whole.release();
      expect(new Set(ref.tokens).size).toBeGreaterThan(path === GENAI ? 4 : 0);
      for (let K = 0; K <= io.nLayers; K++) {
        const { front, back } = cutExport(g, io, K, path);
        expect(front.io).toMatchObject({ from: 0, to: K, hiddenOut: 'hidden_out', ids: { shapeOnly: false } });
        expect(back.io).toMatchObject({ from: K, to: io.nLayers, hiddenIn: 'hidden_states', logits: 'logits' });
        // the back never gets the ids' values: at most a zero tensor of their shape
        if (back.io.ids) expect(back.io.ids.shapeOnly).toBe(true);
        // each side has exactly its own layers' caches
        expect(front.io.past.key).toEqual(io.past ? io.past.key.slice(0, K) : []);
        expect(back.io.past.key).toEqual(io.past ? io.past.key.slice(K) : []);
        const f = await ImportedSegmentRunner.create(front.graph, front.io, io);
        const b = await ImportedSegmentRunner.create(back.graph, back.io, io);
        const got = await trace(io, async (x) => {
          const h = await f.run(x);
          expect(h.data.length).toBe(h.tokens * io.hiddenSize);
          return (await b.run({ hidden: h.data, tokens: h.tokens })).data;
        });
        await f.release();
        await b.release();
        const d = maxDiff(got, ref);
        expect(d, `K=${K}`).toBeLessThanOrEqual(tol);
        expect(got.tokens, `K=${K}`).toEqual(ref.tokens);
      }
    }, 120_000);
  }

  it('a split outside 0..L is refused', () => {
    const g = loadOnnx(GENAI);
    const io = analyzeExport(g, GENAI);
    expect(userErrorOf(() => cutExport(g, io, 3)).code).toBe('E_SPLIT_RANGE');
  });
});

function expectRefusal(f: () => unknown, code: string, message: RegExp): void {
  const e = userErrorOf(f);
  expect(e).toBeInstanceOf(SplitLLMError);
  expect([e.code, e.message]).toEqual([code, expect.stringMatching(message)]);
  expect(e.message).not.toMatch(/\n/);
}

/** A tiny graph: ids → Gather → `outName`, plus whatever `extra` adds. */
function tinyGraph(path: string, outName: string, extra?: (g: GraphBuilder, x: string) => string): void {
  const g = new GraphBuilder('tiny');
  const ids = g.input('input_ids', GDT.INT64, ['batch', 'seq']);
  const table = g.f32('embed', [8, 4], new Float32Array(32).fill(0.5));
  let x = g.op('Gather', [table, ids]);
  if (extra) x = extra(g, x);
  g.op('Identity', [x], {}, { outputs: [outName] });
  g.output(outName, GDT.FLOAT, ['batch', 'seq', 4]);
  writeFileSync(path, g.serialize());
}

describeOnnx('ONNX exports splitllm refuses, with one line naming the problem', () => {
  it('a truncated .onnx, a missing or short .data file', () => {
    const cut = join(tmp, 'cut.onnx');
    const whole = readFileSync(GPT2);
    writeFileSync(cut, whole.subarray(0, whole.length >> 1));
    expectRefusal(() => loadOnnx(cut), 'E_CHECKPOINT_CORRUPT', /cut\.onnx is not a readable ONNX model .*truncated or not ONNX/);
    const dir = join(tmp, 'nodata');
    mkdirSync(dir);
    copyFileSync(GENAI, join(dir, 'model.onnx'));
    expectRefusal(() => loadOnnx(join(dir, 'model.onnx')), 'E_FILE_NOT_FOUND', /keeps its weights in model\.onnx\.data, which is missing/);
    const data = readFileSync(GENAI + '.data');
    writeFileSync(join(dir, 'model.onnx.data'), data.subarray(0, data.length - 100));
    expectRefusal(() => loadOnnx(join(dir, 'model.onnx')), 'E_CHECKPOINT_TRUNCATED', /the data file is truncated/);
  });

  it('an encoder-only graph (no logits), an encoder-decoder decoder, control flow', () => {
    const enc = join(tmp, 'encoder.onnx');
    tinyGraph(enc, 'last_hidden_state');
    expectRefusal(() => analyzeExport(loadOnnx(enc), enc), 'E_UNSUPPORTED_FORMAT', /has no logits output .*not a decoder-only language-model export/);

    const encdec = join(tmp, 'encdec.onnx');
    tinyGraph(encdec, 'logits', (g, x) => g.op('Add', [x, g.input('encoder_hidden_states', GDT.FLOAT, ['batch', 'enc', 4])]));
    expectRefusal(() => analyzeExport(loadOnnx(encdec), encdec), 'E_UNSUPPORTED_FORMAT', /decoder of an encoder-decoder model/);

    const cf = join(tmp, 'if.onnx');
    tinyGraph(cf, 'logits', (g, x) => {
      g.op('If', [g.input('flag', GDT.BOOL, [])]);
      return x;
    });
    expectRefusal(() => loadOnnx(cf), 'E_UNSUPPORTED_FORMAT', /is an If \(control flow\), which splitllm cannot cut/);
  });
});

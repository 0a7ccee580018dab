import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, describe, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { ModelPackage } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { cli } from './helpers/cli.js';
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

const onnxModel = (bytes: Uint8Array | undefined) => onnxProto.onnx.ModelProto.decode(bytes ?? new Uint8Array(0));

const PREFILL = 16;
const DECODE = 16;

interface Trace {
  logits: Float32Array[];
  tokens: number[];
}

/** Greedy tokens of the export run from its own file by onnxruntime (no splitllm graph in between). */
async function exportGreedy(path: string, ids: number[], n: number): Promise<number[]> {
  const io = analyzeExport(loadOnnx(path), path);
  const whole = await ImportedSegmentRunner.create(path, wholeIO(io), io);
  const t = await trace(io, async (x) => (await whole.run(x)).data, ids, n);
  await whole.release();
  return t.tokens;
}

/** A 16-token prefill then 16 greedy decode steps through `step`, every step's logits kept. */
async function trace(io: ExportIO, step: (x: SegmentInput) => Promise<Float32Array>, prompt = Array.from({ length: PREFILL }, (_, i) => (i * 7919 + 11) % io.vocabSize), steps = DECODE): Promise<Trace> {
  const logits: Float32Array[] = [];
  const tokens: number[] = [];
  let l = await step({ ids: prompt });
  logits.push(l);
  for (let s = 0; s < steps; s++) {
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

describeOnnx('an imported export is a package the edge and the cloud run like any other', () => {
  const pkgDir = join(tmp, 'genai-pkg');
  let server: CloudServer | undefined;
  afterAll(async () => server?.close());

  it('import writes a package that records how to drive the export, and opens again', () => {
    const r = cli(['import', join(FIXTURES, 'onnx', 'ortgenai-tiny-random-llama-fp16'), '--out', pkgDir, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(r.stdout);
    expect(m).toMatchObject({
      config: { architecture: 'onnx', nLayers: 2, dim: 16, vocabSize: 32000, maxSeq: 2048, bosId: 0, eosId: 1 },
      weights: 'model.onnx',
      tokenizer: 'tokenizer.json',
      graph: { file: 'model.onnx', io: { floatType: 'float16', past: { key: ['past_key_values.0.key', 'past_key_values.1.key'] }, attentionMask: { name: 'attention_mask', dtype: 'int64' } } },
    });
    expect(readdirSync(pkgDir).sort()).toEqual(['manifest.json', 'model.onnx', 'model.onnx.data', 'tokenizer.json', 'tokenizer_config.json']);
    // a manifest whose recorded names the graph lacks is refused at the boundary
    const bad = join(tmp, 'bad-pkg');
    mkdirSync(bad);
    for (const f of readdirSync(pkgDir)) copyFileSync(join(pkgDir, f), join(bad, f));
    writeFileSync(join(bad, 'manifest.json'), JSON.stringify({ ...m, graph: { ...m.graph, io: { ...m.graph.io, logits: 'nope' } } }));
    expectRefusal(() => ModelPackage.load(bad), 'E_BAD_PACKAGE', /the graph has no nope, which the manifest records: re-import the model/);
  });

  it('generate on the package = the export run directly by onnxruntime; edge against cloud at every split (fp32) = generate; a re-split moves the KV', async () => {
    const pkg = ModelPackage.load(pkgDir);
    const prompt = 'Once upon a time, there was a little robot';
    const ids = pkg.tokenizer().encode(prompt, true);
    const p = await Pipeline.create(pkg);
    const local = await generate(p, ids, { maxTokens: 12, stopIds: [] });
    await p.release();
    // the same greedy tokens from the export's own file
    expect(local).toEqual(await exportGreedy(GENAI, ids, 12));

    server = await startCloud(pkg);
    const url = `${server.url}/v1/session`;
    for (let K = 0; K <= pkg.config.nLayers; K++) {
      const r = await runEdge(pkg, { url, split: K, codec: 'fp32', prompt, maxTokens: 12, stopIds: [] });
      expect(r.tokens, `split ${K}`).toEqual(local);
    }
    // layers move edge → cloud and back mid-generation, their KV streamed
    const moved = await runEdge(pkg, { url, split: 1, codec: 'fp32', prompt, maxTokens: 12, stopIds: [], resplits: [{ afterTokens: 4, split: 2 }, { afterTokens: 8, split: 0 }] });
    expect(moved.tokens).toEqual(local);
    expect(moved.stats.resplits.map((x) => [x.from, x.to])).toEqual([[1, 2], [2, 0]]);
    // this export runs several positions only from an empty cache: a prompt in chunks and speculative drafts
    // (several positions after the first) go one position at a time, with the same tokens
    const long = 'Once upon a time, there was a little robot who lived in a small town by the sea. '.repeat(3);
    const longIds = pkg.tokenizer().encode(long, true);
    expect(longIds.length).toBeGreaterThan(48);
    const p2 = await Pipeline.create(pkg);
    const longLocal = await generate(p2, longIds, { maxTokens: 10, stopIds: [] });
    await p2.release();
    const { proposerFor } = await import('../edge/draft/registry.js');
    for (const spec of ['ngram', 'early-exit']) {
      const proposer = (await proposerFor(spec, { pkg }))!;
      const r = await runEdge(pkg, { url, split: 1, codec: 'fp32', prompt: long, maxTokens: 10, stopIds: [], prefillChunk: 16, speculate: { proposer, maxDraft: 3, fixed: true } });
      expect(r.tokens, spec).toEqual(longLocal);
      // (random weights repeat nothing, so ngram seldom drafts here; the early exit always does)
      if (spec === 'early-exit') expect(r.stats.speculation!.draftSteps).toBeGreaterThan(0);
      await proposer.release?.();
    }
  }, 120_000);

  it('the cloud batches steps of sessions at different lengths through the export\'s attention mask: each row equals its own run', async () => {
    const pkg = ModelPackage.load(pkgDir);
    const { buildSegment } = await import('../models/onnx/segment.js');
    const c = pkg.config;
    const D = c.dim;
    const front = await SegmentRuntime.create(pkg, 0, 1, { embed: true, head: false });
    const seg = buildSegment(c, pkg.weights, 1, c.nLayers, { embed: false, head: true, keyPositions: true });
    const shared = await SegmentRuntime.openSession(seg);
    const prompts = [[1, 450, 4996, 17], [1, 9, 22, 31, 7, 8, 1000, 3], [1, 77]];
    const solo: SegmentRuntime[] = [];
    const batched: SegmentRuntime[] = [];
    const next: Float32Array[] = [];
    for (const ids of prompts) {
      front.reset();
      const h = await front.run(ids, ids.length);
      const a = SegmentRuntime.withSession(c, seg, shared);
      const b = SegmentRuntime.withSession(c, seg, shared);
      await a.run(h.data, ids.length);
      await b.run(h.data, ids.length);
      solo.push(a);
      batched.push(b);
      front.reset();
      next.push((await front.run([42], 1)).data.slice(0, D));
    }
    const outs = await SegmentRuntime.runBatch(batched, next);
    for (let i = 0; i < prompts.length; i++) {
      const own = await solo[i]!.run(next[i]!, 1);
      const got = outs[i]!.data;
      let d = 0;
      for (let j = 0; j < got.length; j++) d = Math.max(d, Math.abs(got[j]! - own.data[j]!));
      expect(d, `session ${i}`).toBeLessThan(2e-3);
      expect(batched[i]!.length).toBe(prompts[i]!.length + 1);
    }
    for (const r of [...solo, ...batched, front]) await r.release();
    await shared.session.release();
  });

  it('OPSC on the foreign graph: a 4-bit front has MatMulNBits in place of the layers\' MatMuls and stays close to float', async () => {
    const pkg = ModelPackage.load(pkgDir);
    const { linearFor } = await import('../models/onnx/linear.js');
    const { buildSegment } = await import('../models/onnx/segment.js');
    const fp = buildSegment(pkg.config, pkg.weights, 0, 1, { embed: true, head: false, attention: 'reference', keyPositions: true });
    const q = buildSegment(pkg.config, pkg.weights, 0, 1, { embed: true, head: false, linearFor: () => linearFor(4, 32) });
    const count = (bytes: Uint8Array | undefined, op: string) => {
      const m = onnxModel(bytes);
      return (m.graph?.node ?? []).filter((n) => n.opType === op).length;
    };
    // layer 0: q, k, v, o, gate, up, down
    expect(count(q.model, 'MatMulNBits')).toBe(7);
    expect(count(fp.model, 'MatMulNBits')).toBe(0);
    expect(q.weightBytes).toBeLessThan(fp.weightBytes);
    const a = await SegmentRuntime.fromBuilt(pkg.config, fp);
    const b = await SegmentRuntime.fromBuilt(pkg.config, q);
    const ids = pkg.tokenizer().encode('Once upon a time', true);
    const ha = (await a.run(ids, ids.length)).data;
    const hb = (await b.run(ids, ids.length)).data;
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < ha.length; i++) {
      diff = Math.max(diff, Math.abs(ha[i]! - hb[i]!));
      scale = Math.max(scale, Math.abs(ha[i]!));
    }
    expect(diff).toBeGreaterThan(0);
    expect(diff).toBeLessThan(0.2 * scale);
    await a.release();
    await b.release();
  });
});

describeOnnx('an export without past inputs or tokenizer runs on token ids, by recomputation', () => {
  const pkgDir = join(tmp, 'gpt2-pkg');

  it('import warns once and records the context of its position table; --prompt-ids generates the export\'s own greedy tokens, split or not', async () => {
    const r = cli(['import', GPT2, '--out', pkgDir, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: gpt2-tiny-decoder\.onnx has no past inputs: it runs by recomputation/);
    expect(r.stderr).toMatch(/warning: no tokenizer\.json beside the export: the package runs on token ids \(--prompt-ids\)/);
    expect(JSON.parse(r.stdout)).toMatchObject({ tokenizer: '', config: { maxSeq: 512, vocabSize: 1000, nLayers: 5 } });

    const prompt = [5, 17, 3, 999, 0, 250];
    const direct = await exportGreedy(GPT2, prompt, 6);
    for (const split of [[], ['--split', '2']]) {
      const g = cli(['generate', '--model', pkgDir, '--prompt-ids', prompt.join(','), '--max-tokens', '6', '--json', ...split]);
      expect(g.code, g.stderr).toBe(0);
      // the stop ids are BOS/EOS (0 here): compare up to where the export itself would stop
      const want = direct.slice(0, direct.findIndex((t) => t === 0) >= 0 ? direct.findIndex((t) => t === 0) : direct.length);
      expect(JSON.parse(g.stdout)).toEqual({ tokens: want, text: '' });
    }
    const e = cli(['eval', 'ppl', '--model', pkgDir, '--prompt-ids', prompt.join(','), '--json']);
    expect(e.code, e.stderr).toBe(0);
    expect(JSON.parse(e.stdout).tokens).toBe(prompt.length - 1);
  });

  it('a text prompt, bad ids and a re-split are refused with one line', async () => {
    const pkg = ModelPackage.load(pkgDir);
    expect(pkg.hasTokenizer).toBe(false);
    const t = cli(['generate', '--model', pkgDir, '--prompt', 'hello']);
    expect([t.code !== 0, t.stderr.trim()]).toEqual([true, expect.stringMatching(/^splitllm: error \[E_TOKENIZER\]: .*has no tokenizer.*--prompt-ids$/)]);
    const b = cli(['generate', '--model', pkgDir, '--prompt-ids', '5,1000']);
    expect(b.stderr.trim()).toMatch(/^splitllm: error \[E_USAGE\]: --prompt-ids "5,1000": entry 2 \("1000"\) is not a token id in 0\.\.999$/);
    const both = cli(['generate', '--model', pkgDir, '--prompt-ids', '5', '--prompt', 'x']);
    expect(both.stderr).toMatch(/\[E_USAGE\]: give --prompt-ids or a text prompt/);
    const { buildSegment } = await import('../models/onnx/segment.js');
    const rt = await SegmentRuntime.fromBuilt(pkg.config, buildSegment(pkg.config, pkg.weights, 0, 2, { embed: true, head: false }));
    await rt.run([5, 17], 2);
    expect(rt.length).toBe(2);
    expect(userErrorOf(() => rt.exportKV()).message).toMatch(/without past inputs: it has no KV cache to move/);
    await rt.release();
  });
});

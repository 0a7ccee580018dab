/**
 * The layer sweep (models/eval/layer-sweep.ts) against the pipeline it replaces in `profile accuracy`:
 * the same perplexities, layer runs shared between configurations, and the planner's estimate beside the
 * measured profile.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { pipelinePerplexity, pplWindows } from '../models/eval/ppl.js';
import { sweepPerplexity, type SweepPath } from '../models/eval/layer-sweep.js';
import { linearFor } from '../models/onnx/linear.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { removeTemporary, uncachedSegment } from '../models/runtime/segment-cache.js';
import { WireMeter } from '../quantization/activations/meter.js';
import { createCodec } from '../quantization/activations/registry.js';
import { codecSplits, estimateAccuracy, measureAccuracy, sampledSplits } from '../planner/measure-accuracy.js';
import { CalibrationContexts } from '../quantization/activations/calibration.js';
import { defaultModel, tinyPackageOnDisk } from './helpers/models.js';
import { cli } from './helpers/cli.js';
import { accuracyProfile } from '../planner/profiles.js';
import { openModel } from '../models/package.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { CORPUS, STORIES_BIN, STORIES_TOK, describeWithFixtures } from './helpers/fixtures.js';

const emitter = (id: string) => (id === '32' ? undefined : linearFor(Number(id.split('@')[0]), 32));

describeWithFixtures('layer sweep', () => {
  it('gives the perplexities of whole-model pipelines, running each shared prefix once', async () => {
    const pkg = await defaultModel();
    const L = pkg.config.nLayers;
    const windows = pplWindows(pkg.tokenizer(), readFileSync(join(CORPUS, 'tinystories_calib.txt'), 'utf8')).slice(0, 3);
    const tokens = windows.reduce((n, w) => n + w.length - 1, 0);
    const f32 = Array<string>(L).fill('32');
    const mixed = f32.map((_, j) => (j < 2 ? '4@32' : '8@32'));
    const meter = new WireMeter(createCodec('uniform:4'));
    const paths: SweepPath[] = [
      { embedBits: 32, layers: f32, head: '32' },
      { embedBits: 32, layers: mixed, head: '32' },
      { embedBits: 32, layers: f32, head: '32', codec: { split: 3, id: 'u4', roundTrip: (h, T) => meter.roundTrip(h, T, pkg.config.dim) } },
      { embedBits: 32, layers: f32, head: '8@32' },
      { embedBits: 4, layers: f32, head: '32' },
    ];
    const r = await sweepPerplexity(pkg, windows, paths, { emitter });
    expect(r.tokens).toBe(tokens);
    // layer runs: the float path's L layers, the mixed path's L, the codec path's L − 3 past its split; the
    // head and embedding variants share every float layer with the reference but the 4-bit embedding's L
    expect(r.layerRuns).toBe(windows.length * (L + L + (L - 3) + L));
    const ppl = r.nll.map((n) => Math.exp(n / tokens));
    const ref = async (p: Pipeline) => {
      try {
        return (await pipelinePerplexity(p, windows)).ppl;
      } finally {
        await p.release();
      }
    };
    const rel = (a: number, b: number) => Math.abs(a / b - 1);
    expect(rel(ppl[0]!, await ref(await Pipeline.create(pkg)))).toBeLessThan(1e-6);
    // a pipeline cut at every layer runs the graphs the sweep runs: the same perplexity to rounding; one cut
    // once lets onnxruntime fuse across layers, and quantized activations (MatMulNBits' int8 inputs) turn
    // those roundings into slightly different codes: within 0.02%
    const lin = { linearFor: (l: number) => linearFor(l < 2 ? 4 : 8, 32) };
    const everyLayer = Array.from({ length: L - 1 }, (_, i) => i + 1);
    expect(rel(ppl[1]!, await ref(await Pipeline.create(pkg, everyLayer, lin)))).toBeLessThan(1e-6);
    expect(Math.abs(ppl[1]! / (await ref(await Pipeline.create(pkg, [2], lin))) - 1)).toBeLessThan(2e-4);
    const coded = await Pipeline.create(pkg, [3]);
    const m2 = new WireMeter(createCodec('uniform:4'));
    coded.between = (h, T) => m2.roundTrip(h, T, pkg.config.dim);
    expect(rel(ppl[2]!, await ref(coded))).toBeLessThan(1e-6);
    expect(meter.bitsPerValue).toBeCloseTo(m2.bitsPerValue, 9);
    expect(rel(ppl[3]!, await ref(await Pipeline.create(pkg, [], { headLinear: linearFor(8, 32) })))).toBeLessThan(1e-6);
    expect(rel(ppl[4]!, await ref(await Pipeline.create(pkg, [], { embedBits: 4 })))).toBeLessThan(1e-6);
    // the configurations differ from the reference by what they quantize: not a sweep that ignored them
    for (const i of [1, 2, 4]) expect(Math.abs(ppl[i]! / ppl[0]! - 1)).toBeGreaterThan(1e-4);
  });

  it("keeps none of its one-off segments: nothing in the package's cache, no temporary folder left", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'splitllm-accsweep-pkg-'));
    try {
      const pkg = await tinyPackageOnDisk(join(dir, 'tiny'), 3);
      // temporary folders go to a private TMPDIR, where no other test's can appear
      const tmp = join(dir, 'tmp');
      mkdirSync(tmp);
      const saved = process.env['TMPDIR'];
      process.env['TMPDIR'] = tmp;
      const L = pkg.config.nLayers;
      const windows = [[1, 5, 9, 13, 17, 21, 25, 29, 33]];
      let r;
      try {
        // a one-off segment is streamed to a temporary folder there…
        const one = uncachedSegment(pkg, 0, 1, {});
        expect(one.temporaryDir!.startsWith(tmp)).toBe(true);
        expect(readdirSync(one.temporaryDir!).sort()).toEqual(['segment_0_1.onnx', 'segment_0_1.onnx.data']);
        removeTemporary(one.temporaryDir!);
        // …and a sweep's are removed once loaded
        r = await sweepPerplexity(pkg, windows, [{ embedBits: 32, layers: Array(L).fill('32'), head: '32' }, { embedBits: 32, layers: Array(L).fill('4@32'), head: '32' }], { emitter });
      } finally {
        if (saved === undefined) delete process.env['TMPDIR'];
        else process.env['TMPDIR'] = saved;
      }
      expect(r.nll.every(Number.isFinite)).toBe(true);
      expect(r.nll[1]).not.toBe(r.nll[0]);
      expect(existsSync(join(dir, 'tiny', 'segments'))).toBe(false);
      expect(readdirSync(tmp)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives the same perplexities when the windows go in batches (the layers opened again, through the cache)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'splitllm-accsweep-batch-'));
    try {
      const pkg = await tinyPackageOnDisk(join(dir, 'tiny'), 5);
      const L = pkg.config.nLayers;
      const windows = Array.from({ length: 5 }, (_, w) => Array.from({ length: 12 + w }, (_, i) => (7 * i + 3 * w + 1) % pkg.config.vocabSize));
      const meter = () => {
        const m = new WireMeter(createCodec('uniform:4'));
        return (h: Float32Array, T: number) => m.roundTrip(h, T, pkg.config.dim);
      };
      const paths = (): SweepPath[] => [
        { embedBits: 32, layers: Array(L).fill('32'), head: '32' },
        { embedBits: 32, layers: Array.from({ length: L }, (_, j) => (j < 1 ? '4@32' : '8@32')), head: '32' },
        { embedBits: 32, layers: Array(L).fill('32'), head: '32', codec: { split: 1, id: 'u4', roundTrip: meter() } },
      ];
      const whole = await sweepPerplexity(pkg, windows, paths(), { emitter });
      // states of 3 distinct paths × 2 levels: a budget of one window's worth makes every window its own batch
      const batched = await sweepPerplexity(pkg, windows, paths(), { emitter, stateBytes: 1 });
      expect(batched.tokens).toBe(whole.tokens);
      for (let i = 0; i < whole.nll.length; i++) expect(batched.nll[i]).toBeCloseTo(whole.nll[i]!, 9);
      expect(existsSync(join(dir, 'tiny', 'segments'))).toBe(true); // several batches: the layers come from the cache
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('estimates the measured profile of the default model from its sampled splits', async () => {
    const pkg = await defaultModel();
    const windows = pplWindows(pkg.tokenizer(), readFileSync(join(CORPUS, 'tinystories_calib.txt'), 'utf8')).slice(0, 12);
    const contexts = new CalibrationContexts();
    const o = { bits: [4, 8, 32], codecs: ['fp32', 'int8', 'uniform:4', 'ts-tabq:eps=0.1'], contexts };
    const measured = await measureAccuracy(pkg, windows, o);
    const everySplit = await estimateAccuracy(pkg, windows, o);
    const sparse = await estimateAccuracy(pkg, windows, { ...o, splits: [0, 3, 6] });
    const worst = (e: typeof measured) => Math.max(...Object.keys(measured.weights).map((k) => Math.abs(e.weights[k]! - measured.weights[k]!)));
    // every split sampled (the default up to 8 layers): only the front + back sum is estimated, 0.23
    // percentage points off at worst when this was written; three of seven splits: 0.47 points
    expect(worst(everySplit)).toBeLessThan(0.005);
    expect(worst(sparse)).toBeLessThan(0.01);
    expect(worst(sparse)).toBeGreaterThan(worst(everySplit)); // the interpolation is an estimate, not a copy
    for (const e of [everySplit, sparse]) {
      expect(Object.keys(e.weights).sort()).toEqual(Object.keys(measured.weights).sort());
      // what the estimate measures exactly is the measured figure: the head, the embedding, the back half
      // from a sampled split, a codec's bits at any split and its ppl at a sampled one
      expect(e.heads).toEqual(measured.heads);
      expect(e.embeds).toEqual(measured.embeds);
      for (const k of e.estimate!.splits) {
        expect(e.weights[`${k}/32/4`]).toBeCloseTo(measured.weights[`${k}/32/4`]!, 12);
        expect(e.codecs[`${k}/uniform:4`]).toEqual(measured.codecs[`${k}/uniform:4`]);
      }
      for (const [key, c] of Object.entries(measured.codecs)) expect(e.codecs[key]!.bitsPerValue).toBe(c.bitsPerValue);
      expect(e.codecs['2/fp32']).toEqual({ pplIncrease: 0, bitsPerValue: measured.codecs['2/fp32']!.bitsPerValue });
    }
    expect(everySplit.estimate).toMatchObject({ method: 'sampled-splits', splits: [0, 1, 2, 3, 4, 5, 6], tokens: 1507 });
    expect(measured.estimate).toBeUndefined();
    expect(sampledSplits(6)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(sampledSplits(16)).toEqual([0, 4, 8, 12, 16]);
    expect(codecSplits(16)).toEqual([4, 8, 12]);
    expect(codecSplits(6)).toEqual([0, 1, 2, 3, 4, 5, 6]);
  }, 600_000);

  describe_cli();
});

function describe_cli(): void {
  const tmp = mkdtempSync(join(tmpdir(), 'splitllm-accsweep-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const calib = join(CORPUS, 'tinystories_calib.txt');
  const net = ['--bandwidth', '10mbit', '--rtt', '40ms', '--edge-memory', '20MB', '--latency', '1s', '--max-ppl-increase', '5%', '--json'];

  it('plan estimates the accuracy of a model without a profile on --text, keeps the estimate and reuses it', async () => {
    const dir = join(tmp, 'model');
    cpSync(DEFAULT_MODEL_DIR, dir, { recursive: true, filter: (src) => !src.includes('segments') && !src.endsWith('accuracy-profile.json') });
    const hash = (await openModel(dir)).hash;
    const none = cli(['plan', '--model', dir, ...net]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/\[E_FILE_NOT_FOUND\]: no accuracy profile for this model at .*accuracy-profile\.json: give --text CALIB\.txt and plan estimates one .*'splitllm profile accuracy --text CALIB\.txt --out F'/);
    // a checkpoint file opened directly has no folder to hold a profile: said so, not a path inside the file
    const bin = cli(['plan', '--model', STORIES_BIN, '--tokenizer', STORIES_TOK, ...net]);
    expect(bin.code).toBe(1);
    expect(bin.stderr).toMatch(/\[E_FILE_NOT_FOUND\]: no accuracy profile for this model \(.*stories260K\.bin is not a package folder: 'splitllm import' it to keep profiles beside it\): give --text/);
    const first = cli(['plan', '--model', dir, '--text', calib, ...net], { timeoutMs: 600_000 });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/plan: no accuracy profile: estimated one in \d+ s on \d+ tokens of .*tinystories_calib\.txt \(splits 0,1,2,3,4,5,6 measured.*kept in .*accuracy-estimate\.json/);
    const kept = join(dir, 'accuracy-estimate.json');
    const est = accuracyProfile(JSON.parse(readFileSync(kept, 'utf8')), kept, hash);
    expect(est.estimate).toMatchObject({ method: 'sampled-splits', splits: [0, 1, 2, 3, 4, 5, 6], text: { name: 'tinystories_calib.txt' } });
    expect(Object.keys(est.weights)).toHaveLength(7 * 9);
    expect(Object.keys(est.codecs)).toHaveLength(7 * 6); // the default codecs, the calibrated ts-tabq among them
    const plan = JSON.parse(first.stdout) as { plan: { split: number; codec: string } };
    expect(plan.plan.split).toBeGreaterThanOrEqual(1);
    // the next plan reads the kept estimate (no --text needed), and one on another text estimates again
    const again = cli(['plan', '--model', dir, ...net], { timeoutMs: 600_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/using the estimate in .*accuracy-estimate\.json \(made on tinystories_calib\.txt/);
    expect(JSON.parse(again.stdout)).toEqual(expect.objectContaining({ plan: expect.objectContaining({ split: plan.plan.split }) }));
    expect(existsSync(kept)).toBe(true);
    // the demo plans from the same kept estimate
    const demo = cli(['demo', '--model', dir, '--loopback', '--max-tokens', '4', '--json'], { timeoutMs: 600_000 });
    expect(demo.code, demo.stderr).toBe(0);
    expect(demo.stderr).toMatch(/demo: no accuracy profile: using the estimate in .*accuracy-estimate\.json/);
    expect((JSON.parse(demo.stdout) as { plan: { split: number } }).plan.split).toBeGreaterThanOrEqual(1);
  }, 900_000);

  it('profile accuracy --splits measures only those splits; --estimate needs both ends', async () => {
    const pkg = await defaultModel();
    const out = join(tmp, 'acc.json');
    const r = cli(['profile', 'accuracy', '--text', calib, '--splits', '2,4', '--bits', '4,32', '--codecs', 'fp32,uniform:4', '--block-sizes', '32', '--windows', '6', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const a = accuracyProfile(JSON.parse(readFileSync(out, 'utf8')), out, pkg.hash);
    expect(Object.keys(a.weights).sort()).toEqual(['2/32/32', '2/32/4', '2/4/32', '2/4/4', '4/32/32', '4/32/4', '4/4/32', '4/4/4']);
    expect(Object.keys(a.codecs).sort()).toEqual(['2/fp32', '2/uniform:4', '4/fp32', '4/uniform:4']);
    expect(a.estimate).toBeUndefined();
    const bad = cli(['profile', 'accuracy', '--text', calib, '--estimate', '--splits', '2,4', '--out', out]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/\[E_USAGE\]: an estimate samples splits from 0 to 6: include both ends/);
    const range = cli(['profile', 'accuracy', '--text', calib, '--splits', '2,9', '--out', out]);
    expect(range.code).toBe(1);
    expect(range.stderr).toMatch(/\[E_SPLIT_RANGE\]: split 9 is out of range for a model with 6 layers: use 0\.\.6/);
  }, 600_000);
}

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { perplexity, pplWindows } from '../../models/eval/ppl.js';
import { SegmentRuntime } from '../../models/runtime/segment-runtime.js';
import { contextData, fitStep, splitStats, type Calibration, type SplitChoice } from '../../quantization/activations/calibration.js';
import { CodecContext, RUNG_ZERO, rungStep } from '../../quantization/activations/context.js';
import { WireMeter } from '../../quantization/activations/meter.js';
import { createCodec } from '../../quantization/activations/registry.js';
import { CALIBRATION_FILE, saveCalibration } from '../calibration-io.js';
import { modelOptions, openModelOption, modelPath as modelPathOf } from '../common.js';
import { defineCommand, items, opt } from '../options.js';

/** Steps the choice may take (units of the calibrated per-channel deviation): the codec's eighth-octave ladder from 0.5 down to 0.06. */
const STEP_LADDER = Array.from({ length: 30 }, (_, i) => +rungStep(RUNG_ZERO - 8 - i).toPrecision(4));
/** Steps measured for the fit: 0.42 to 0.21, quarter octaves apart. */
const TRIED_STEPS = [2, 4, 6, 8, 10].map((i) => STEP_LADDER[i]!);
/** Outlier threshold (units of y): past 6 deviations values travel exactly. */
const TAU = 6;

export const calibrateCommand = defineCommand({
  name: 'calibrate',
  summary:
    'Calibrates the split-point codec. Per split layer it records hidden-state statistics (|x| quantiles, outlier rates, per-token ranges) and the codec ' +
    'context ts-tabq codes against (per-channel center and scale, the histogram its prefix codes come from, the first-token sink state), measures ' +
    'the perplexity of ts-tabq:cal=K at five steps, fits increase ≈ a·step² and picks the coarsest step whose predicted increase is within the target. ' +
    'Writes calibration.json into the model package (or --out).',
  usage: 'splitllm calibrate --model M --text CALIB.txt [--out FILE] [--max-ppl-increase 0.9%] [--windows 1000] [--splits 1,2,3] [--json]',
  examples: [
    'splitllm calibrate --model models/stories260K --text ../shared/fixtures/corpus/tinystories_calib.txt',
    'splitllm calibrate --text train.txt --splits 1,2 --windows 200 --max-ppl-increase 0.5% --out cal.json',
  ],
  options: {
    ...modelOptions,
    text: opt.file({ required: true, description: 'calibration text (never the evaluation text)' }),
    out: opt.string({ description: 'where to write the calibration', valueName: 'FILE', defaultText: 'calibration.json in the package' }),
    'max-ppl-increase': opt.percent({ default: 0.009, defaultText: '0.9%', description: 'accuracy target for the chosen codec (predicted by the fit over the tried steps)' }),
    windows: opt.int({ min: 1, default: 1000, description: 'perplexity windows of the text to calibrate on' }),
    splits: opt.list({ item: items.int(), description: 'split layers to calibrate', valueName: 'K,K,…', defaultText: '1..L-1' }),
    json: opt.flag({ description: 'print the calibration as JSON' }),
  },
  async run(v) {
    const modelPath = modelPathOf(v);
    const textPath = v.text;
    if (/eval/i.test(textPath)) process.stderr.write(`warning: ${textPath} looks like an evaluation text; calibrate on calibration data only\n`);
    const pkg = await openModelOption(v);
    const L = pkg.config.nLayers;
    const outPath = v.out ?? (pkg.dir ? join(pkg.dir, CALIBRATION_FILE) : undefined);
    if (!outPath) throw new SplitLLMError('E_USAGE', `${modelPath} is not a package directory: pass --out FILE for the calibration`);
    const target = v['max-ppl-increase'];
    const nWin = v.windows;
    const splits = v.splits ?? Array.from({ length: L - 1 }, (_, i) => i + 1);
    for (const k of splits) {
      if (!Number.isInteger(k) || k < 1 || k > L - 1) throw new SplitLLMError('E_SPLIT_RANGE', `split ${k} is out of range: calibrate splits 1..${L - 1}`);
    }
    const windows = pplWindows(pkg.tokenizer(), readFileSync(textPath, 'utf8')).slice(0, nWin);
    if (windows.length === 0) throw new SplitLLMError('E_BAD_ARGUMENT', `${textPath} holds no paragraph to calibrate on`);
    const V = pkg.config.vocabSize;
    const D = pkg.config.dim;
    const cal: Calibration = {
      format: 'splitllm-calibration',
      version: 1,
      model: pkg.hash,
      text: textPath.split('/').pop()!,
      windows: windows.length,
      target,
      baselinePpl: NaN,
      splits: {},
    };
    for (const k of splits) {
      // one half at a time (the float model is never held whole), each a one-off build (cache: false): the
      // package's cache would keep every split's halves at gigabytes apiece for a 1B model
      const front = await SegmentRuntime.create(pkg, 0, k, { embed: true, head: false, cache: false });
      const hidden: Float32Array[] = [];
      for (const ids of windows) {
        const inputs = ids.slice(0, -1); // what perplexity() feeds: the window but its last id
        hidden.push((await front.run(inputs, inputs.length, { keepCache: false })).data.slice());
      }
      await front.release();
      const back = await SegmentRuntime.create(pkg, k, L, { embed: false, head: true, cache: false });
      const stats = splitStats(hidden, D);
      const context = new CodecContext(contextData(hidden, D));
      const env = { context: () => context };
      const evalWith = async (spec: string | undefined): Promise<{ ppl: number; bits: number }> => {
        const meter = spec ? new WireMeter(createCodec(spec, env), { contexts: new Map([[context.id, context]]) }) : undefined;
        let w = 0;
        const r = await perplexity(windows, V, async (ids) => {
          const h = hidden[w++]!;
          const x = meter ? meter.roundTrip(h, ids.length, D) : h;
          return (await back.run(x, ids.length, { keepCache: false })).data;
        });
        return { ppl: r.ppl, bits: meter ? meter.bitsPerValue : 32 };
      };
      const base = await evalWith(undefined);
      if (Number.isNaN(cal.baselinePpl)) cal.baselinePpl = base.ppl;
      const tried: SplitChoice[] = [];
      const measure = async (step: number): Promise<SplitChoice> => {
        const spec = `ts-tabq:cal=${k},step=${step},tau=${TAU}`;
        const r = await evalWith(spec);
        const c = { codec: createCodec(spec, env).spec, bitsPerValue: r.bits, ppl: r.ppl, pplIncrease: r.ppl / base.ppl - 1 };
        process.stderr.write(`calibrate split ${k}: ${c.codec.padEnd(40)} ${r.bits.toFixed(3)} bits/value, ppl ${r.ppl.toFixed(4)} (${(100 * c.pplIncrease).toFixed(2)}%)\n`);
        return c;
      };
      for (const step of TRIED_STEPS) tried.push(await measure(step));
      const fit = fitStep(tried.map((c, i) => ({ step: TRIED_STEPS[i]!, increase: c.pplIncrease })), STEP_LADDER, target);
      const chosen = TRIED_STEPS.indexOf(fit.step) >= 0 ? tried[TRIED_STEPS.indexOf(fit.step)]! : await measure(fit.step);
      await back.release();
      cal.splits[String(k)] = { stats, context: context.data, choice: chosen, tried, fit: { a: fit.a } };
      process.stderr.write(
        `split ${k}: ppl increase ≈ ${fit.a.toFixed(3)}·step² → chose ${chosen.codec} (${chosen.bitsPerValue.toFixed(3)} bits/value, measured ${(100 * chosen.pplIncrease).toFixed(2)}%)\n`,
      );
    }
    saveCalibration(outPath, cal);
    if (v.json) process.stdout.write(JSON.stringify(cal) + '\n');
    else {
      process.stdout.write(`wrote ${outPath}\nsplit  codec                                            bits/value  ppl increase\n`);
      for (const [k, s] of Object.entries(cal.splits)) {
        const c = s.choice;
        process.stdout.write(`${k.padEnd(6)} ${(c?.codec ?? '(none met the target)').padEnd(48)} ${c ? c.bitsPerValue.toFixed(3).padStart(10) : ''}  ${c ? (100 * c.pplIncrease).toFixed(2) + '%' : ''}\n`);
      }
    }
  },
});

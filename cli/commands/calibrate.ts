import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { perplexity, pplWindows } from '../../models/eval/ppl.js';
import { SegmentRuntime } from '../../models/runtime/segment-runtime.js';
import { splitStats, type Calibration, type SplitChoice } from '../../quantization/activations/calibration.js';
import { WireMeter } from '../../quantization/activations/meter.js';
import { createCodec } from '../../quantization/activations/registry.js';
import { CALIBRATION_FILE, saveCalibration } from '../calibration-io.js';
import { intOption, modelOptions, percentOption, requireString, type Command, openModelOption, modelPath as modelPathOf } from '../common.js';

const EPS_LADDER = [0.2, 0.16, 0.14, 0.12, 0.1, 0.08, 0.06, 0.04, 0.03, 0.02];

export const calibrateCommand: Command = {
  name: 'calibrate',
  summary:
    'Calibrates the split-point codec. It records hidden-state statistics per split layer (|x| quantiles, outlier rates, per-token ranges) and picks the ' +
    'ts-tabq parameters (τ, ε) with the fewest bits per value whose perplexity stays within the target on the calibration text. ' +
    'Writes calibration.json into the model package (or --out).',
  usage: 'splitllm calibrate --model M --text CALIB.txt [--out FILE] [--max-ppl-increase 0.8%] [--windows 200] [--splits 1,2,3] [--json]',
  options: {
    ...modelOptions,
    text: { type: 'string', description: 'calibration text (never the evaluation text)', valueName: 'FILE' },
    out: { type: 'string', description: 'where to write the calibration (default: calibration.json in the package)', valueName: 'FILE' },
    'max-ppl-increase': { type: 'string', description: 'accuracy target for the chosen codec', default: '0.8%' },
    windows: { type: 'string', description: 'perplexity windows of the text to calibrate on', default: '200' },
    splits: { type: 'string', description: 'comma-separated split layers (default 1..L-1)' },
    json: { type: 'boolean', description: 'print the calibration as JSON' },
  },
  async run(values) {
    const modelPath = modelPathOf(values);
    const textPath = requireString(values, 'text', 'calibrate');
    if (!existsSync(textPath)) throw new SplitLLMError('E_FILE_NOT_FOUND', `text file ${textPath} does not exist: check the path`);
    if (/eval/i.test(textPath)) process.stderr.write(`warning: ${textPath} looks like an evaluation text; calibrate on calibration data only\n`);
    const pkg = await openModelOption(values);
    const L = pkg.config.nLayers;
    const outPath = (values['out'] as string | undefined) ?? (pkg.dir ? join(pkg.dir, CALIBRATION_FILE) : undefined);
    if (!outPath) throw new SplitLLMError('E_USAGE', `${modelPath} is not a package directory: pass --out FILE for the calibration`);
    const target = percentOption(values, 'max-ppl-increase', 0.008);
    const nWin = intOption(values, 'windows', 200, 1)!;
    const splits = values['splits']
      ? String(values['splits']).split(',').map((s) => Number(s))
      : Array.from({ length: L - 1 }, (_, i) => i + 1);
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
      const front = await SegmentRuntime.create(pkg, 0, k, { embed: true, head: false });
      const back = await SegmentRuntime.create(pkg, k, L, { embed: false, head: true });
      const hidden: Float32Array[] = [];
      for (const ids of windows) {
        const inputs = ids.slice(0, -1); // what perplexity() feeds: the window but its last id
        hidden.push((await front.run(inputs, inputs.length, { keepCache: false })).data.slice());
      }
      await front.release();
      const stats = splitStats(hidden, D);
      const evalWith = async (spec: string | undefined): Promise<{ ppl: number; bits: number }> => {
        const meter = spec ? new WireMeter(createCodec(spec)) : undefined;
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
      const taus = [stats.absQuantiles['0.999']!, stats.absQuantiles['0.9999']!, Infinity];
      for (const tau of taus) {
        for (const eps of EPS_LADDER) {
          const spec = `ts-tabq:eps=${eps},tau=${tau === Infinity ? 'none' : +tau.toPrecision(4)},entropy=auto`;
          const r = await evalWith(spec);
          const choice = { codec: spec, bitsPerValue: r.bits, ppl: r.ppl, pplIncrease: r.ppl / base.ppl - 1 };
          tried.push(choice);
          process.stderr.write(`calibrate split ${k}: ${spec.padEnd(48)} ${r.bits.toFixed(3)} bits/value, ppl ${r.ppl.toFixed(4)} (${(100 * choice.pplIncrease).toFixed(2)}%)\n`);
          if (choice.pplIncrease <= target) break; // the largest ε within target: fewest bits for this τ
        }
      }
      await back.release();
      const ok = tried.filter((c) => c.pplIncrease <= target).sort((a, b) => a.bitsPerValue - b.bitsPerValue);
      cal.splits[String(k)] = { stats, choice: ok[0], tried };
      process.stderr.write(ok[0] ? `split ${k}: chose ${ok[0].codec} (${ok[0].bitsPerValue.toFixed(3)} bits/value)\n` : `split ${k}: nothing met the target\n`);
    }
    saveCalibration(outPath, cal);
    if (values['json']) process.stdout.write(JSON.stringify(cal) + '\n');
    else {
      process.stdout.write(`wrote ${outPath}\nsplit  codec                                            bits/value  ppl increase\n`);
      for (const [k, s] of Object.entries(cal.splits)) {
        const c = s.choice;
        process.stdout.write(`${k.padEnd(6)} ${(c?.codec ?? '(none met the target)').padEnd(48)} ${c ? c.bitsPerValue.toFixed(3).padStart(10) : ''}  ${c ? (100 * c.pplIncrease).toFixed(2) + '%' : ''}\n`);
      }
    }
  },
};

import { readFileSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';
import { segmentBytes } from '../../quantization/weights/memory.js';
import { captureLinearInputs, type CapturedInputs } from '../../models/eval/capture.js';
import { pipelinePerplexity, pplWindows } from '../../models/eval/ppl.js';
import { Pipeline } from '../../models/runtime/pipeline.js';
import { emittersFor, weightStrategy, WEIGHT_STRATEGY_NAMES, type WeightPlan } from '../../models/weights/registry.js';
import { modelOptions, openModelOption } from '../common.js';
import { commandGroup, defineCommand, items, opt } from '../options.js';

interface Row {
  strategy: string;
  split: number | null;
  frontBits: number;
  backBits: number;
  frontBytes: number;
  backBytes: number;
  totalBytes: number;
  ppl: number;
  pplIncrease: number;
}

const reportCommand = defineCommand({
  name: 'report',
  summary:
    'Segment bytes and perplexity across weight precisions and split points, per strategy: every layer at each bit width, then OPSC ' +
    '(front layers at --front-bits, back at float32) at every split point.',
  usage: 'splitllm quantize report --model M --text EVAL.txt --calib-text CALIB.txt [--bits 2,3,4,8,16] [--strategies rtn,awq,smoothquant] [--front-bits 4] [--limit N] [--json]',
  examples: [
    'splitllm quantize report --text heldout.txt --calib-text train.txt --limit 20',
    'splitllm quantize report --model models/stories260K --text tinystories_eval.txt --strategies rtn --bits 4,8 --json',
  ],
  options: {
    ...modelOptions,
    text: opt.file({ required: true, description: 'text to score (the evaluation text)' }),
    'calib-text': opt.file({ description: 'calibration text for awq and smoothquant' }),
    bits: opt.list({ item: items.int(2, 32), default: [2, 3, 4, 8, 16], description: 'bit widths for the whole-model rows' }),
    strategies: opt.list({ item: (s) => weightStrategy(s).name, default: [...WEIGHT_STRATEGY_NAMES], description: 'strategies to report' }),
    'front-bits': opt.int({ default: 4, description: 'front bits of the OPSC rows (back at float32)' }),
    'block-size': opt.int({ default: 32, description: 'quantization block' }),
    limit: opt.int({ min: 1, description: 'score only the first N windows' }),
    json: opt.flag({ description: 'print the rows as JSON' }),
  },
  async run(v) {
    const pkg = await openModelOption(v);
    const textPath = v.text;
    const known = v.strategies.map((s) => weightStrategy(s));
    const bitsList = v.bits;
    const blockSize = v['block-size'];
    const frontBits = v['front-bits'];
    let windows = pplWindows(pkg.tokenizer(), readFileSync(textPath, 'utf8'));
    if (v.limit) windows = windows.slice(0, v.limit);
    if (windows.length === 0) throw new SplitLLMError('E_BAD_ARGUMENT', `${textPath} holds no paragraph with two or more tokens: nothing to score`);
    let captured: CapturedInputs | undefined;
    if (known.some((s) => s.needsCalibration)) {
      const cpath = v['calib-text'];
      if (!cpath) throw new SplitLLMError('E_USAGE', `${known.filter((s) => s.needsCalibration).map((s) => s.name).join(' and ')} need --calib-text (see 'splitllm quantize report --help')`);
      captured = await captureLinearInputs(pkg, pplWindows(pkg.tokenizer(), readFileSync(cpath, 'utf8')), 512);
    }
    const L = pkg.config.nLayers;
    const score = async (plan: WeightPlan | undefined, split: number | undefined): Promise<number> => {
      const linearFor = plan ? await emittersFor(pkg, plan, captured) : undefined;
      const p = await Pipeline.create(pkg, split === undefined ? [] : [split], { linearFor });
      const r = await pipelinePerplexity(p, windows);
      await p.release();
      return r.ppl;
    };
    const rows: Row[] = [];
    const base = await score(undefined, undefined);
    const add = (strategy: string, split: number | null, fb: number, bb: number, ppl: number) => {
      const k = split ?? L;
      const quantized = strategy === 'float32' ? undefined : weightStrategy(strategy).linearBytes;
      const front = segmentBytes(pkg.config, 0, k, { bitsOf: () => fb, blockSize, quantized, head: k === L });
      const back = split === null ? undefined : segmentBytes(pkg.config, k, L, { bitsOf: () => bb, blockSize, quantized, embed: false });
      const row: Row = { strategy, split, frontBits: fb, backBits: bb, frontBytes: front.total, backBytes: back?.total ?? 0, totalBytes: front.total + (back?.total ?? 0), ppl, pplIncrease: ppl / base - 1 };
      rows.push(row);
      process.stderr.write(`${strategy.padEnd(11)} ${split === null ? 'all layers' : `split ${split}`} ${fb}/${bb} bits: ppl ${ppl.toFixed(4)} (${(100 * row.pplIncrease).toFixed(2)}%)\n`);
    };
    add('float32', null, 32, 32, base);
    // every layer at each bit width a strategy quantizes to (float widths under the strategies that need no calibration)
    for (const s of known) {
      for (const bits of bitsList) {
        if (bits <= 8 ? !s.bits.includes(bits) : s.needsCalibration) continue;
        add(s.name, null, bits, bits, await score({ split: 0, frontBits: bits, backBits: bits, blockSize, strategy: s.name }, undefined));
      }
    }
    // OPSC: the front at --front-bits, the back float, at every split, for each strategy that runs those bits
    for (const s of known.filter((s) => s.bits.includes(frontBits))) {
      for (let k = 0; k <= L; k++) {
        add(s.name, k, frontBits, 32, await score({ split: k, frontBits, backBits: 32, blockSize, strategy: s.name }, k));
      }
    }
    if (v.json) {
      process.stdout.write(JSON.stringify({ baselinePpl: base, windows: windows.length, rows }) + '\n');
      return;
    }
    process.stdout.write('strategy     layers      front/back bits   front bytes    back bytes         ppl   change\n');
    for (const r of rows) {
      process.stdout.write(
        `${r.strategy.padEnd(12)} ${(r.split === null ? 'all' : `split ${r.split}`).padEnd(11)} ${`${r.frontBits}/${r.backBits}`.padStart(15)} ${String(r.frontBytes).padStart(13)} ${String(r.backBytes).padStart(13)} ${r.ppl.toFixed(4).padStart(11)} ${((100 * r.pplIncrease).toFixed(2) + '%').padStart(8)}\n`,
      );
    }
  },
});

export const quantizeCommand = commandGroup({
  name: 'quantize',
  summary: 'Weight quantization tools. Subcommands: report (bytes and perplexity across precisions and split points).',
  subcommands: [reportCommand],
});

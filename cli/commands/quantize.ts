import { existsSync, readFileSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';
import { segmentBytes } from '../../quantization/weights/memory.js';
import { captureLinearInputs, type CapturedInputs } from '../../models/eval/capture.js';
import { pipelinePerplexity, pplWindows } from '../../models/eval/ppl.js';
import { Pipeline } from '../../models/runtime/pipeline.js';
import { emittersFor, weightStrategy, type WeightPlan } from '../../models/weights/registry.js';
import { intOption, modelOptions, requireString, runCommand, type Command, openModelOption } from '../common.js';

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

const reportCommand: Command = {
  name: 'quantize report',
  summary:
    'Segment bytes and perplexity across weight precisions and split points, per strategy: every layer at each bit width, then OPSC ' +
    '(front layers at --front-bits, back at float32) at every split point.',
  usage: 'splitllm quantize report --model M --text EVAL.txt --calib-text CALIB.txt [--bits 2,3,4,8,16] [--strategies rtn,awq,smoothquant] [--front-bits 4] [--limit N] [--json]',
  options: {
    ...modelOptions,
    text: { type: 'string', description: 'text to score (the evaluation text)', valueName: 'FILE' },
    'calib-text': { type: 'string', description: 'calibration text for awq and smoothquant', valueName: 'FILE' },
    bits: { type: 'string', description: 'bit widths for the whole-model rows', default: '2,3,4,8,16' },
    strategies: { type: 'string', description: 'strategies to report', default: 'rtn,awq,smoothquant' },
    'front-bits': { type: 'string', description: 'front bits of the OPSC rows (back at float32)', default: '4' },
    'block-size': { type: 'string', description: 'quantization block', default: '32' },
    limit: { type: 'string', description: 'score only the first N windows' },
    json: { type: 'boolean', description: 'print the rows as JSON' },
  },
  async run(values) {
    const pkg = await openModelOption(values);
    const textPath = requireString(values, 'text', 'quantize report');
    if (!existsSync(textPath)) throw new SplitLLMError('E_FILE_NOT_FOUND', `text file ${textPath} does not exist: check the path`);
    const strategies = String(values['strategies']).split(',');
    const known = strategies.map((s) => weightStrategy(s));
    const bitsList = String(values['bits']).split(',').map(Number);
    const blockSize = intOption(values, 'block-size', 32)!;
    const frontBits = intOption(values, 'front-bits', 4)!;
    let windows = pplWindows(pkg.tokenizer(), readFileSync(textPath, 'utf8'));
    const limit = intOption(values, 'limit', undefined, 1);
    if (limit) windows = windows.slice(0, limit);
    const needsCalib = known.some((s) => s.needsCalibration);
    let captured: CapturedInputs | undefined;
    if (needsCalib) {
      const cpath = requireString(values, 'calib-text', 'quantize report');
      if (!existsSync(cpath)) throw new SplitLLMError('E_FILE_NOT_FOUND', `calibration text ${cpath} does not exist: check the path`);
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
    if (values['json']) {
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
};

export const quantizeCommand: Command = {
  name: 'quantize',
  summary: 'Weight quantization tools. Subcommands: report (bytes and perplexity across precisions and split points).',
  usage: 'splitllm quantize report [options]   (splitllm quantize report --help)',
  options: {},
  positionals: true,
  async run(_values, positionals) {
    throw new SplitLLMError('E_USAGE', `unknown quantize subcommand "${positionals[0] ?? ''}": use 'splitllm quantize report'`);
  },
};

export async function runQuantize(argv: string[]): Promise<number> {
  if (argv[0] === 'report') return runCommand(reportCommand, argv.slice(1));
  return runCommand(quantizeCommand, argv);
}

import { existsSync, readFileSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';
import { pipelinePerplexity, pplWindows } from '../../models/eval/ppl.js';
import { Pipeline } from '../../models/runtime/pipeline.js';
import { WireMeter } from '../../quantization/activations/meter.js';
import { codecAtSplit } from '../../quantization/activations/registry.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { weightEmitters, weightOptions } from '../weights.js';
import { intOption, modelOptions, progress, requireString, runCommand, type Command, openModelOption, modelPath as modelPathOf } from '../common.js';

const pplCommand: Command = {
  name: 'eval ppl',
  summary:
    'Perplexity of a text under the project protocol: paragraphs split on blank lines, BOS prepended, windows of 256+1 ids. ' +
    'With --split K the hidden state crosses from [0,K) to [K,L) as it would on the wire.',
  usage: 'splitllm eval ppl --model M [--tokenizer T] --text FILE [--split K [--codec SPEC]] [--limit N] [--json]',
  options: {
    ...modelOptions,
    text: { type: 'string', description: 'text file to score', valueName: 'FILE' },
    split: { type: 'string', short: 's', description: 'split point K', valueName: 'K' },
    codec: { type: 'string', short: 'c', description: "hidden-state codec at the split (e.g. ts-tabq, ts-tabq:eps=0.1, uniform:4, fp16); bare 'ts-tabq' takes the calibrated default", valueName: 'SPEC' },
    ...calibrationOption,
    limit: { type: 'string', description: 'score only the first N windows (quick checks)' },
    threads: { type: 'string', description: 'onnxruntime intra-op threads' },
    ...weightOptions,
    json: { type: 'boolean', description: 'print {"ppl":…,"tokens":…}' },
  },
  async run(values) {
    const modelPath = modelPathOf(values);
    const textPath = requireString(values, 'text', 'eval ppl');
    if (!existsSync(textPath)) throw new SplitLLMError('E_FILE_NOT_FOUND', `text file ${textPath} does not exist: check the path`);
    const pkg = await openModelOption(values);
    const split = intOption(values, 'split');
    const weights = await weightEmitters(values, pkg, split);
    const pipeline = await Pipeline.create(pkg, split === undefined ? [] : [split], { threads: intOption(values, 'threads', undefined, 1), linearFor: weights.linearFor });
    let meter: WireMeter | undefined;
    if (values['codec'] !== undefined) {
      if (split === undefined) throw new SplitLLMError('E_USAGE', '--codec needs --split K: the codec sits on the hidden state at the split');
      const contexts = calibrationContexts(values, pkg);
      meter = new WireMeter(codecAtSplit(String(values['codec']), split, contexts), { contexts: contexts.contexts });
      const calibrated = meter.codec.spec === contexts.defaultCodec(split);
      process.stderr.write(`codec at split ${split}: ${meter.codec.spec}${calibrated ? ' (calibrated default)' : ''}\n`);
      const m = meter;
      pipeline.between = (h, tokens) => m.roundTrip(h, tokens, pkg.config.dim);
    }
    let windows = pplWindows(pkg.tokenizer(), readFileSync(textPath, 'utf8'));
    const limit = intOption(values, 'limit', undefined, 1);
    if (limit !== undefined) windows = windows.slice(0, limit);
    if (windows.length === 0) throw new SplitLLMError('E_BAD_ARGUMENT', `${textPath} holds no paragraph with two or more tokens: nothing to score`);
    const r = await pipelinePerplexity(pipeline, windows, progress('eval ppl'));
    await pipeline.release();
    if (values['json']) {
      process.stdout.write(JSON.stringify(meter ? { ppl: r.ppl, tokens: r.tokens, bitsPerValue: meter.bitsPerValue, codec: meter.codec.spec } : { ppl: r.ppl, tokens: r.tokens }) + '\n');
    } else {
      const bits = meter ? `, ${meter.bitsPerValue.toFixed(3)} bits/value with ${meter.codec.spec}` : '';
      process.stdout.write(`ppl ${r.ppl.toFixed(4)} over ${r.tokens} predicted ids (${r.windows} windows)${bits}\n`);
    }
  },
};

export const evalCommand: Command = {
  name: 'eval',
  summary: 'Evaluation commands. Subcommands: ppl (perplexity of a text).',
  usage: 'splitllm eval ppl [options]   (splitllm eval ppl --help)',
  options: {},
  positionals: true,
  async run(_values, positionals) {
    throw new SplitLLMError('E_USAGE', `unknown eval subcommand "${positionals[0] ?? ''}": use 'splitllm eval ppl'`);
  },
};

export async function runEval(argv: string[]): Promise<number> {
  if (argv[0] === 'ppl') return runCommand(pplCommand, argv.slice(1));
  return runCommand(evalCommand, argv);
}

import { readFileSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';
import { PPL_WINDOW, pplWindows } from '../../models/eval/ppl.js';
import { configPerplexity } from '../evaluate.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { weightEmitters, weightOptions } from '../weights.js';
import { modelOptions, parsePromptIds, progress, openModelOption } from '../common.js';
import { commandGroup, defineCommand, opt } from '../options.js';

const pplCommand = defineCommand({
  name: 'ppl',
  summary:
    'Perplexity of a text under the project protocol: paragraphs split on blank lines, BOS prepended, windows of 256+1 ids. ' +
    'With --split K the hidden state crosses from [0,K) to [K,L) as it would on the wire.',
  usage: 'splitllm eval ppl --model M [--tokenizer T] (--text FILE | --prompt-ids 5,17,3,…) [--split K [--codec SPEC]] [--limit N] [--json]',
  examples: [
    'splitllm eval ppl --text heldout.txt',
    'splitllm eval ppl --model models/stories260K --text tinystories_eval.txt --split 2 --codec ts-tabq --json',
    'splitllm eval ppl --text heldout.txt --split 3 --front-bits 4 --back-bits 8 --limit 20',
  ],
  options: {
    ...modelOptions,
    text: opt.file({ description: 'text file to score (or --prompt-ids)' }),
    'prompt-ids': opt.string({ description: 'score these token ids instead of a text (comma-separated, used as given, in windows of 256+1): for a model without a tokenizer', valueName: 'ID,ID,…' }),
    split: opt.int({ short: 's', description: 'split point K', valueName: 'K' }),
    codec: opt.string({ short: 'c', description: "hidden-state codec at the split (e.g. ts-tabq, ts-tabq:eps=0.1, uniform:4, fp16); bare 'ts-tabq' takes the calibrated default", valueName: 'SPEC' }),
    ...calibrationOption,
    limit: opt.int({ min: 1, description: 'score only the first N windows (quick checks)' }),
    threads: opt.int({ min: 1, description: 'onnxruntime intra-op threads' }),
    ...weightOptions,
    json: opt.flag({ description: 'print {"ppl":…,"tokens":…}' }),
  },
  async run(v) {
    const textPath = v.text;
    if ((textPath === undefined) === (v['prompt-ids'] === undefined)) throw new SplitLLMError('E_USAGE', 'give the text to score: --text FILE or --prompt-ids ID,ID,… (one of them)');
    const pkg = await openModelOption(v);
    const split = v.split;
    const weights = await weightEmitters(v, pkg, split);
    const contexts = v.codec === undefined ? undefined : calibrationContexts(v, pkg);
    let windows: number[][];
    if (v['prompt-ids'] !== undefined) {
      const ids = parsePromptIds(v['prompt-ids'], pkg.config.vocabSize);
      windows = [];
      for (let s = 0; s + 1 < ids.length; s += PPL_WINDOW) windows.push(ids.slice(s, s + PPL_WINDOW + 1));
    } else windows = pplWindows(pkg.tokenizer(), readFileSync(textPath ?? '', 'utf8'));
    if (v.limit !== undefined) windows = windows.slice(0, v.limit);
    if (windows.length === 0) throw new SplitLLMError('E_BAD_ARGUMENT', `${textPath ?? '--prompt-ids'} holds no paragraph with two or more tokens: nothing to score`);
    const r = await configPerplexity(pkg, windows, { split, ...weights, codec: v.codec, contexts, threads: v.threads }, progress('eval ppl'), (codec) => {
      const calibrated = split !== undefined && codec === contexts?.defaultCodec(split);
      process.stderr.write(`codec at split ${split}: ${codec}${calibrated ? ' (calibrated default)' : ''}\n`);
    });
    const meter = r.meter;
    if (v.json) {
      process.stdout.write(JSON.stringify(meter ? { ppl: r.ppl, tokens: r.tokens, bitsPerValue: meter.bitsPerValue, codec: meter.codec.spec } : { ppl: r.ppl, tokens: r.tokens }) + '\n');
    } else {
      const bits = meter ? `, ${meter.bitsPerValue.toFixed(3)} bits/value with ${meter.codec.spec}` : '';
      process.stdout.write(`ppl ${r.ppl.toFixed(4)} over ${r.tokens} predicted ids (${r.windows} windows)${bits}\n`);
    }
  },
});

export const evalCommand = commandGroup({
  name: 'eval',
  summary: 'Evaluation commands. Subcommands: ppl (perplexity of a text).',
  subcommands: [pplCommand],
});

/** `splitllm audit privacy`: what a cloud operator recovers of a prompt from what the cloud receives (audit/privacy.ts). */
import { readFileSync } from 'node:fs';
import { auditSplit, auditTexts, type SplitAudit } from '../../audit/privacy.js';
import { SegmentRuntime } from '../../models/runtime/segment-runtime.js';
import { codecAtSplit } from '../../quantization/activations/registry.js';
import { TENSORS } from '../../shared/decoder.js';
import { checkSplit, SplitLLMError } from '../../shared/errors.js';
import type { Plan } from '../../shared/plan.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { modelOptions, openModelOption, readPlanFile } from '../common.js';
import { commandGroup, defineCommand, items, opt } from '../options.js';
import { planWeightEmitters, weightOptions } from '../weights.js';

const privacyCommand = defineCommand({
  name: 'privacy',
  summary:
    "Attacks what the cloud would receive for your model and plan as a cloud operator could (it holds the weights: the handshake checks their hash): for each split, a white-box search runs candidate tokens through your front layers and codec and keeps the one that explains each received hidden state; two cheap attacks (the nearest embedding row, a linear map fitted on the text's first paragraphs) need no search. Prints the share of prompt tokens each recovers on the text's later paragraphs, and a verdict.",
  usage: 'splitllm audit privacy [--model M] (--plan F | --split K[,K…] [--codec SPEC]) --text FILE [--prompts 48] [--tokens 40] [--fit 400] [--max-candidates N] [--json]',
  examples: [
    'splitllm audit privacy --plan plan.json --text prompts.txt',
    'splitllm audit privacy --split 1,2,3,4,5 --codec ts-tabq --text ../shared/fixtures/corpus/tinyshakespeare.txt --json',
    'splitllm audit privacy --model models/qwen --split 12 --front-bits 4 --text prompts.txt --max-candidates 2048',
  ],
  options: {
    ...modelOptions,
    plan: opt.file({ description: "the plan to audit: its split, codec and front weights ('splitllm plan --out FILE')" }),
    split: opt.list({ item: items.int(0), description: 'the split(s) to audit instead of the plan\'s', valueName: 'K,K,…' }),
    codec: opt.string({ description: "hidden-state codec; 'ts-tabq' takes each split's calibrated default", valueName: 'SPEC', defaultText: "the plan's, else fp32" }),
    ...calibrationOption,
    ...weightOptions,
    text: opt.file({ required: true, description: 'text whose paragraphs (split on blank lines) are the attacked prompts and, the first --fit of them, the public text the linear map is fitted on' }),
    prompts: opt.int({ min: 1, default: 48, description: 'prompts attacked (paragraphs after the first --fit with at least --tokens tokens)' }),
    tokens: opt.int({ min: 2, default: 40, description: 'tokens per prompt, BOS included' }),
    fit: opt.int({ min: 1, default: 400, description: 'paragraphs the linear map is fitted on (never attacked)' }),
    'max-candidates': opt.int({ min: 1, description: 'the white-box search tries at most this many candidates per position, in the linear map\'s order (a large vocabulary); a token outside them counts as not recovered', defaultText: 'the whole vocabulary' }),
    json: opt.flag({ description: 'print {"model", "results": [{split, codec, whiteBox, linear, embedding}], "verdict"}' }),
  },
  async run(v) {
    const pkg = await openModelOption(v);
    const c = pkg.config;
    let plan: Plan | undefined;
    if (v.plan !== undefined) plan = readPlanFile(v.plan, pkg);
    const splits = v.split ?? (plan ? [plan.split] : undefined);
    if (!splits) throw new SplitLLMError('E_USAGE', '--plan FILE or --split K is required (see --help)');
    for (const k of splits) {
      checkSplit(k, c.nLayers);
      if (k === 0 || k === c.nLayers) throw new SplitLLMError('E_USAGE', `split ${k} sends ${k === 0 ? 'token embeddings' : 'nothing but the output'}: audit a split in 1..${c.nLayers - 1}`);
    }
    const text = readFileSync(v.text, 'utf8');
    const tok = pkg.tokenizer();
    const encode = (s: string) => tok.encode(s, true);
    const { fit: fitIds, prompts } = auditTexts(text, encode, { fit: v.fit, count: v.prompts, tokens: v.tokens, maxSeq: c.maxSeq, where: v.text });
    const embedding = pkg.weights.get(TENSORS.embed);
    const contexts = calibrationContexts(v, pkg);
    const spec = v.codec ?? plan?.codec ?? 'fp32';
    const results: SplitAudit[] = [];
    for (const k of splits) {
      const weights = await planWeightEmitters(v, pkg, k, plan);
      const r = await auditSplit({
        split: k,
        codec: codecAtSplit(spec, k, contexts),
        front: () => SegmentRuntime.create(pkg, 0, k, { embed: true, head: false, linearFor: weights.linearFor, embedBits: weights.embedBits, threads: 1 }),
        prompts,
        fit: fitIds,
        embedding,
        vocab: c.vocabSize,
        dim: c.dim,
        maxCandidates: v['max-candidates'],
      });
      results.push(r);
      if (!v.json) {
        const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
        process.stdout.write(
          `split ${k} ${r.codec}: white-box search ${pct(r.whiteBox.rate)} of ${r.tokens} prompt tokens (${r.whiteBox.triedPerToken.toFixed(1)} candidates, ${r.whiteBox.msPerToken.toFixed(1)} ms a token); linear map ${pct(r.linear.rate)}; nearest embedding row ${pct(r.embedding.rate)}\n`,
        );
      }
    }
    const worst = Math.max(...results.map((r) => r.whiteBox.rate));
    const verdict =
      worst >= 0.5
        ? `a cloud operator holding these weights recovers ${(worst * 100).toFixed(0)}% of prompt tokens from what the cloud receives: do not rely on the split to keep prompts from the cloud operator`
        : `the attacks recovered at most ${(worst * 100).toFixed(0)}% of prompt tokens here; stronger attacks exist: this is not a guarantee`;
    if (v.json) process.stdout.write(JSON.stringify({ model: pkg.manifest.name, prompts: prompts.length, tokens: v.tokens, fitParagraphs: fitIds.length, results, verdict }) + '\n');
    else process.stdout.write(`verdict: ${verdict}\n`);
    return 0;
  },
});

export const auditCommand = commandGroup({
  name: 'audit',
  summary: 'Audits a deployment before it ships: `privacy` measures what the cloud operator can recover of the prompts.',
  subcommands: [privacyCommand],
});

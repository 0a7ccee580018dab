import { SplitLLMError } from '../../shared/errors.js';
import { validatePlan, type Plan } from '../../shared/plan.js';
import { WEIGHT_STRATEGY_NAMES } from '../../models/weights/registry.js';
import { runEdge } from '../../edge/agent.js';
import { SplitBandit } from '../../planner/bandit.js';
import { cloudOptions, generationOptions, modelOptions, openModelOption, promptAndLength, readJsonFile, readPrompt, samplingFrom, sessionUrl } from '../common.js';
import { defineCommand, items, opt, type Values } from '../options.js';
import { TextStream } from './generate.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { weightEmitters, weightOptions } from '../weights.js';

/** "10:4,30:1" → after 10 tokens move to split 4, after 30 to split 1. */
function resplitItem(part: string): { afterTokens: number; split: number } {
  const m = /^(\d+):(\d+)$/.exec(part);
  if (!m) throw new SplitLLMError('E_USAGE', `--resplit "${part}" is not N:K (after N tokens move to split K)`);
  return { afterTokens: Number(m[1]), split: Number(m[2]) };
}

const edgeOptions = {
    ...modelOptions,
    ...cloudOptions,
    plan: opt.string({ description: 'plan file (split, weight bits, codecs, max sequence); the flags below override it', valueName: 'FILE' }),
    split: opt.int({ short: 's', description: 'split point K: this device runs layers [0,K)', valueName: 'K' }),
    codec: opt.string({ short: 'c', description: "hidden-state codec; 'ts-tabq' takes the calibrated default of the split", valueName: 'SPEC', defaultText: "the plan's, else fp32" }),
    ...calibrationOption,
    ...generationOptions,
    'kv-codec': opt.string({ description: 'codec of KV streamed on a re-split: fp32 (lossless) or int8', valueName: 'SPEC', defaultText: "the plan's, else fp32" }),
    'edge-memory': opt.bytes({ description: 'memory the model may take on the edge (front weights + KV cache): re-split before the KV cache outgrows it' }),
    resplit: opt.list({ item: resplitItem, description: 'move the split after N tokens, e.g. 10:4,30:1', valueName: 'N:K,…' }),
    'adapt-splits': opt.list({ item: items.int(), description: 'online planner: learn the fastest of these splits from observed per-token latency (Thompson sampling), re-splitting as it goes', valueName: 'K,K,…' }),
    'adapt-window': opt.int({ min: 1, default: 8, description: 'tokens per choice of the online planner' }),
    ...weightOptions,
    json: opt.flag({ description: 'print {"tokens":[…],"text":…,"stats":{…}} at the end' }),
  };

export const edgeCommand = defineCommand({
  name: 'edge',
  summary:
    'Runs the edge agent. It tokenizes locally, runs layers [0,K), sends the compressed hidden state to the cloud and prints the tokens that come back; the prompt never leaves this machine. Ctrl-C stops after the token in flight and prints what was generated.',
  usage: 'splitllm edge --cloud ws://HOST:PORT [--model M] (--plan plan.json | --split K [--codec SPEC]) (--prompt P | --prompt-file F) [--max-tokens N] [--json]',
  examples: [
    'splitllm edge --cloud ws://127.0.0.1:8080 --split 2 --prompt "ROMEO:" --max-tokens 40',
    'splitllm edge --cloud ws://cloud.example:8080 --token "$SECRET" --plan plan.json --prompt-file prompt.txt',
    'splitllm edge --cloud ws://127.0.0.1:8080 --split 4 --codec ts-tabq --edge-memory 2MB --json --prompt "JULIET:"',
  ],
  options: edgeOptions,
  async run(v) {
    // Ctrl-C from here on stops the run and prints what it has; a second one ends the process at once
    const stop = new AbortController();
    const onInt = () => stop.abort();
    process.once('SIGINT', onInt);
    try {
      return await runEdgeCommand(v, stop.signal);
    } finally {
      process.removeListener('SIGINT', onInt);
    }
  },
});

async function runEdgeCommand(v: Values<typeof edgeOptions>, signal: AbortSignal): Promise<number> {
  const pkg = await openModelOption(v);
  const url = sessionUrl(v.cloud);
  let plan: Plan | undefined;
  if (v.plan) {
    const path = v.plan;
    const raw = readJsonFile(path, 'plan', "make one with 'splitllm plan --out FILE'");
    plan = validatePlan(typeof raw === 'object' && raw !== null && 'plan' in raw ? raw.plan : raw, path, WEIGHT_STRATEGY_NAMES);
    if (plan.model && plan.model !== pkg.hash) throw new SplitLLMError('E_BAD_CONFIG', `${path} was made for another model: plan for this one`);
    if (plan.split > pkg.config.nLayers) throw new SplitLLMError('E_SPLIT_RANGE', `${path}: split ${plan.split} is past the model's ${pkg.config.nLayers} layers`);
  }
  let bandit: SplitBandit | undefined;
  const arms = v['adapt-splits'];
  if (arms !== undefined) {
    if (arms.length < 2 || arms.some((k) => k > pkg.config.nLayers)) {
      throw new SplitLLMError('E_USAGE', `--adapt-splits ${arms.join(',')} must list two or more splits in 0..${pkg.config.nLayers}`);
    }
    bandit = new SplitBandit(arms, v['adapt-window']);
  }
  const split = bandit?.first ?? v.split ?? plan?.split;
  if (split === undefined) throw new SplitLLMError('E_USAGE', "--split K, --plan FILE or --adapt-splits is required (see 'splitllm edge --help')");
  // the plan fills the weight options it covers; flags given on the command line win
  const weights = await weightEmitters(
    {
      ...v,
      'front-bits': v['front-bits'] ?? plan?.frontBits,
      'back-bits': v['back-bits'] ?? plan?.backBits,
      'weight-strategy': v['weight-strategy'] === 'rtn' && plan?.strategy ? plan.strategy : v['weight-strategy'],
      'block-size': plan?.blockSize ?? v['block-size'],
    },
    pkg,
    split,
  );
  const tok = pkg.tokenizer();
  const prompt = readPrompt(v);
  const { ids: promptIds, maxTokens } = promptAndLength(tok, prompt, plan ? Math.min(plan.maxSeq, pkg.config.maxSeq) : pkg.config.maxSeq, v);
  const stream = new TextStream(tok, promptIds, prompt, v.json ? undefined : (s) => process.stdout.write(s));
  const r = await runEdge(pkg, {
      url,
      split,
      codec: v.codec ?? plan?.codec ?? 'fp32', // a bare 'ts-tabq' is each split's calibrated default
      codecEnv: calibrationContexts(v, pkg),
      prompt,
      promptIds,
      maxTokens,
      sampling: samplingFrom(v),
      token: v.token,
      linearFor: weights.linearFor,
      frontBits: weights.plan?.frontBits,
      backBits: weights.plan?.backBits,
      blockSize: weights.plan?.blockSize,
      kvCodec: v['kv-codec'] ?? plan?.kvCodec ?? 'fp32',
      edgeMemory: v['edge-memory'],
      resplits: v.resplit,
      adapt: bandit ? (info) => bandit.step(info.latencyMs) : undefined,
      onResplit: (m) => process.stderr.write(`\n[re-split ${m.from} → ${m.to} after ${m.atToken} tokens, ${m.bytes} bytes of KV moved]\n`),
      onToken: (id) => stream.push(id), // the prompt is printed once the cloud answers
      signal,
    });
  const text = stream.finish();
  const adapt = bandit ? { splits: bandit.history, best: bandit.best() } : undefined;
  const s = r.stats;
  if (v.json) {
    process.stdout.write(JSON.stringify({ tokens: r.tokens, text, stats: s, adapt }) + '\n');
  } else {
    process.stdout.write('\n');
    process.stderr.write(
      `${s.interrupted ? 'interrupted: ' : ''}${s.tokens} tokens in ${s.seconds.toFixed(2)}s (${s.tokensPerSec.toFixed(1)} tokens/s); ` +
        `${s.bytesUpPerToken.toFixed(0)} B up, ${s.bytesDownPerToken.toFixed(0)} B down per token; ` +
        `per token: edge ${s.edgeMs.toFixed(2)} ms, network ${s.networkMs.toFixed(2)} ms, cloud ${s.cloudMs.toFixed(2)} ms\n`,
    );
    if (adapt) process.stderr.write(`online planner: splits by window ${adapt.splits.join(' ')}; fastest so far: split ${adapt.best}\n`);
  }
  return s.interrupted ? 130 : 0;
}

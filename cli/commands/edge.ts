import { SplitLLMError } from '../../shared/errors.js';
import { validatePlan, type Plan } from '../../shared/plan.js';
import { WEIGHT_STRATEGY_NAMES } from '../../models/weights/registry.js';
import { runEdge } from '../../edge/agent.js';
import { SplitBandit } from '../../planner/bandit.js';
import { generationOptions, intOption, modelOptions, readJsonFile, requireString, samplingFrom, sessionUrl, type Command, openModelOption, maxTokensOption } from '../common.js';
import { TextStream } from './generate.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { weightEmitters, weightOptions } from '../weights.js';

export const edgeCommand: Command = {
  name: 'edge',
  summary:
    'Runs the edge agent. It tokenizes locally, runs layers [0,K), sends the compressed hidden state to the cloud and prints the tokens that come back; the prompt never leaves this machine.',
  usage: 'splitllm edge --cloud ws://HOST:PORT --model M (--plan plan.json | --split K [--codec SPEC]) --prompt P [--max-tokens N] [--json]',
  options: {
    ...modelOptions,
    cloud: { type: 'string', description: 'the cloud server (ws://host:port or its /v1/session URL)', valueName: 'URL' },
    plan: { type: 'string', description: 'plan file (split, weight bits, codecs, max sequence); the flags below override it', valueName: 'FILE' },
    split: { type: 'string', short: 's', description: 'split point K: this device runs layers [0,K)', valueName: 'K' },
    codec: { type: 'string', short: 'c', description: "hidden-state codec (default fp32); 'ts-tabq' takes the calibrated default of the split" },
    ...calibrationOption,
    ...generationOptions,
    token: { type: 'string', description: 'bearer token the cloud requires', valueName: 'SECRET' },
    'kv-codec': { type: 'string', description: 'codec of KV streamed on a re-split: fp32 (lossless, default) or int8' },
    'edge-memory': { type: 'string', description: 'edge budget in bytes (or with KB/MB/GB): re-split before the KV cache outgrows it', valueName: 'BYTES' },
    resplit: { type: 'string', description: 'move the split after N tokens, e.g. 10:4,30:1', valueName: 'N:K,…' },
    'adapt-splits': { type: 'string', description: 'online planner: learn the fastest of these splits from observed per-token latency (Thompson sampling), re-splitting as it goes', valueName: 'K,K,…' },
    'adapt-window': { type: 'string', description: 'tokens per choice of the online planner', default: '8' },
    ...weightOptions,
    json: { type: 'boolean', description: 'print {"tokens":[…],"text":…,"stats":{…}} at the end' },
  },
  async run(values) {
    const pkg = await openModelOption(values);
    const url = sessionUrl(values, 'edge');
    let plan: Plan | undefined;
    if (values['plan']) {
      const path = String(values['plan']);
      const raw = readJsonFile(path, 'plan', "make one with 'splitllm plan --out FILE'");
      plan = validatePlan(typeof raw === 'object' && raw !== null && 'plan' in raw ? raw.plan : raw, path, WEIGHT_STRATEGY_NAMES);
      if (plan.model && plan.model !== pkg.hash) throw new SplitLLMError('E_BAD_CONFIG', `${path} was made for another model: plan for this one`);
      if (plan.split > pkg.config.nLayers) throw new SplitLLMError('E_SPLIT_RANGE', `${path}: split ${plan.split} is past the model's ${pkg.config.nLayers} layers`);
      // the plan fills the options it covers; flags given on the command line win
      values['front-bits'] ??= String(plan.frontBits);
      values['back-bits'] ??= String(plan.backBits);
      values['weight-strategy'] = values['weight-strategy'] === 'rtn' && plan.strategy ? plan.strategy : values['weight-strategy'];
      if (plan.blockSize) values['block-size'] ??= String(plan.blockSize);
    }
    let bandit: SplitBandit | undefined;
    if (values['adapt-splits'] !== undefined) {
      const arms = String(values['adapt-splits']).split(',').map((v) => Number(v.trim()));
      if (arms.length < 2 || arms.some((k) => !Number.isInteger(k) || k < 0 || k > pkg.config.nLayers)) {
        throw new SplitLLMError('E_USAGE', `--adapt-splits "${String(values['adapt-splits'])}" must list two or more splits in 0..${pkg.config.nLayers}`);
      }
      bandit = new SplitBandit(arms, intOption(values, 'adapt-window', 8, 1)!);
    }
    const split = bandit?.first ?? intOption(values, 'split') ?? plan?.split;
    if (split === undefined) throw new SplitLLMError('E_USAGE', "--split K, --plan FILE or --adapt-splits is required (see 'splitllm edge --help')");
    const weights = await weightEmitters(values, pkg, split);
    const tok = pkg.tokenizer();
    const prompt = String(values['prompt'] ?? '');
    const promptIds = tok.encode(prompt, true);
    const maxTokens = maxTokensOption(values, pkg.config.maxSeq, promptIds.length);
    const json = !!values['json'];
    const stream = new TextStream(tok, promptIds, prompt, json ? undefined : (s) => process.stdout.write(s));
    const r = await runEdge(pkg, {
      url,
      split,
      codec: String(values['codec'] ?? plan?.codec ?? 'fp32'), // a bare 'ts-tabq' is each split's calibrated default
      codecEnv: calibrationContexts(values, pkg),
      prompt,
      maxTokens: plan ? Math.min(maxTokens, Math.max(0, plan.maxSeq - promptIds.length)) : maxTokens,
      sampling: samplingFrom(values),
      token: values['token'] as string | undefined,
      linearFor: weights.linearFor,
      frontBits: weights.plan?.frontBits,
      backBits: weights.plan?.backBits,
      blockSize: weights.plan?.blockSize,
      kvCodec: String(values['kv-codec'] ?? plan?.kvCodec ?? 'fp32'),
      edgeMemory: values['edge-memory'] === undefined ? undefined : parseBytes(String(values['edge-memory'])),
      resplits: values['resplit'] === undefined ? undefined : parseResplits(String(values['resplit'])),
      adapt: bandit ? (info) => bandit.step(info.latencyMs) : undefined,
      onResplit: (m) => process.stderr.write(`\n[re-split ${m.from} → ${m.to} after ${m.atToken} tokens, ${m.bytes} bytes of KV moved]\n`),
      onToken: (id) => stream.push(id), // the prompt is printed once the cloud answers
    });
    const text = stream.finish();
    const adapt = bandit ? { splits: bandit.history, best: bandit.best() } : undefined;
    if (json) {
      process.stdout.write(JSON.stringify({ tokens: r.tokens, text, stats: r.stats, adapt }) + '\n');
      return;
    }
    process.stdout.write('\n');
    const s = r.stats;
    process.stderr.write(
      `${s.tokens} tokens in ${s.seconds.toFixed(2)}s (${s.tokensPerSec.toFixed(1)} tokens/s); ` +
        `${s.bytesUpPerToken.toFixed(0)} B up, ${s.bytesDownPerToken.toFixed(0)} B down per token; ` +
        `per token: edge ${s.edgeMs.toFixed(2)} ms, network ${s.networkMs.toFixed(2)} ms, cloud ${s.cloudMs.toFixed(2)} ms\n`,
    );
    if (adapt) process.stderr.write(`online planner: splits by window ${adapt.splits.join(' ')}; fastest so far: split ${adapt.best}\n`);
  },
};

/** "512MB", "1.5GB", "800000" → bytes. */
export function parseBytes(s: string): number {
  const m = /^\s*([\d.]+)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$/i.exec(s);
  if (!m) throw new SplitLLMError('E_USAGE', `"${s}" is not a size: use bytes or a number with KB, MB or GB`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };
  return Math.floor(Number(m[1]) * mult[unit]!);
}

function parseResplits(s: string): { afterTokens: number; split: number }[] {
  return s.split(',').map((part) => {
    const m = /^\s*(\d+):(\d+)\s*$/.exec(part);
    if (!m) throw new SplitLLMError('E_USAGE', `--resplit "${part}" is not N:K (after N tokens move to split K)`);
    return { afterTokens: Number(m[1]), split: Number(m[2]) };
  });
}

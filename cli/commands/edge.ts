import { SplitLLMError } from '../../shared/errors.js';
import type { Plan } from '../../shared/plan.js';
import { DEFAULT_PREFILL_CHUNK, runEdge } from '../../edge/agent.js';
import { PROPOSERS } from '../../edge/draft/registry.js';
import { MAX_DRAFT } from '../../shared/protocol/index.js';
import { EdgeAgent } from '../../edge/edge-agent.js';
import { isLoopback, startEdgeService } from '../../edge/service.js';
import { readFileSync } from 'node:fs';
import { SplitBandit } from '../../planner/bandit.js';
import { cloudOptions, deadlineOptions, deadlinesOf, generationOptions, modelOptions, openModelOption, promptOf, readPlanFile, speculationOf, samplingFrom, sessionUrl, tokenOf, tokenPrinter, caOf } from '../common.js';
import { commandGroup, defineCommand, items, opt, type Values } from '../options.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { planWeightEmitters, weightOptions } from '../weights.js';
import { weightStrategy } from '../../models/weights/registry.js';

/** "10:4,30:1" → after 10 tokens move to split 4, after 30 to split 1. */
function resplitItem(part: string): { afterTokens: number; split: number } {
  const m = /^(\d+):(\d+)$/.exec(part);
  if (!m) throw new SplitLLMError('E_USAGE', `--resplit "${part}" is not N:K (after N tokens move to split K)`);
  return { afterTokens: Number(m[1]), split: Number(m[2]) };
}

/** What both `edge` and `edge serve` take: the model, the cloud and the plan. */
const planOptions = {
  speculate: opt.string({ description: `speculative decoding: draft tokens on the edge, verified by the cloud in one pass (same output): ${PROPOSERS.map((p) => `${p.name} (${p.summary})`).join('; ')}; off`, valueName: 'PROPOSER', defaultText: "the plan's choice (--plan; a draft model's path there is relative to the model), else off" }),
  'draft-tokens': opt.int({ min: 1, max: MAX_DRAFT, description: 'most tokens drafted per step with --speculate (the length adapts below it)', defaultText: "the plan's, else 4" }),
  ...modelOptions,
  ...cloudOptions,
  ...deadlineOptions,
  plan: opt.string({ description: 'plan file (split, weight bits, codecs, max sequence); the flags below override it', valueName: 'FILE' }),
  split: opt.int({ short: 's', description: 'split point K: this device runs layers [0,K)', valueName: 'K' }),
  codec: opt.string({ short: 'c', description: "hidden-state codec; 'ts-tabq' takes the calibrated default of the split", valueName: 'SPEC', defaultText: "the plan's, else fp32" }),
  ...calibrationOption,
  'kv-codec': opt.string({ description: 'codec of KV streamed on a re-split: fp32 (lossless) or int8', valueName: 'SPEC', defaultText: "the plan's, else fp32" }),
  'edge-memory': opt.bytes({ description: "memory the model may take on the edge (front weights, KV cache and a step's buffers, counted as 'splitllm plan' counts them): re-split before the KV cache outgrows it" }),
  'prefill-chunk': opt.int({ min: 1, description: 'prompt positions per prefill message: the prompt leaves in chunks as the front segment produces them and the cloud runs each as it arrives (a prompt of at most N goes in one)', valueName: 'N', defaultText: `the plan's, else ${DEFAULT_PREFILL_CHUNK}` }),
  ...weightOptions,
};

type PlanValues = Values<typeof planOptions>;

/** The model, the plan file (checked against the model) and the weights the flags and the plan ask for. */
async function resolvePlan(v: PlanValues, split: number | undefined) {
  const pkg = await openModelOption(v);
  let plan: Plan | undefined;
  if (v.plan) plan = readPlanFile(v.plan, pkg);
  const k = split ?? v.split ?? plan?.split;
  if (k === undefined) throw new SplitLLMError('E_USAGE', "--split K or --plan FILE is required (see --help)");
  const weights = await planWeightEmitters(v, pkg, k, plan);
  return {
    pkg,
    plan,
    split: k,
    weights,
    codec: v.codec ?? plan?.codec ?? 'fp32', // a bare 'ts-tabq' is each split's calibrated default
    codecEnv: calibrationContexts(v, pkg),
    kvCodec: v['kv-codec'] ?? plan?.kvCodec ?? 'fp32',
    prefillChunk: v['prefill-chunk'] ?? plan?.prefillChunk,
    maxSeq: plan ? Math.min(plan.maxSeq, pkg.config.maxSeq) : pkg.config.maxSeq,
    token: tokenOf(v),
    ca: caOf(v),
    url: sessionUrl(v.cloud),
    deadlines: deadlinesOf(v),
  };
}

const threadsOption = opt.int({ min: 1, description: 'onnxruntime intra-op threads per front segment (idle workers stop spinning when a run returns)', defaultText: 'the cores this process may use (affinity, cgroup quota)' });

const edgeOptions = {
    ...planOptions,
    ...generationOptions,
    resplit: opt.list({ item: resplitItem, description: 'move the split after N tokens, e.g. 10:4,30:1', valueName: 'N:K,…' }),
    'adapt-splits': opt.list({ item: items.int(), description: 'online planner: learn the fastest of these splits from observed per-token latency (Thompson sampling), re-splitting as it goes', valueName: 'K,K,…' }),
    'adapt-window': opt.int({ min: 1, default: 8, description: 'tokens per choice of the online planner' }),
    threads: threadsOption,
    json: opt.flag({ description: 'print {"tokens":[…],"text":…,"stats":{…}} at the end' }),
  };

const edgeRunCommand = defineCommand({
  name: 'edge',
  summary:
    "Runs the edge agent. It tokenizes locally, runs layers [0,K), sends the compressed hidden state to the cloud and prints the tokens that come back (the prompt's text is not sent, but a cloud holding the weights can reconstruct it from the hidden states). Every wait for the cloud has a deadline (--silence-timeout, --answer-timeout). Ctrl-C stops at once and prints what was generated.",
  usage: 'splitllm edge --cloud ws://HOST:PORT [--model M] (--plan plan.json | --split K [--codec SPEC]) (--prompt P | --prompt-file F) [--max-tokens N] [--json]',
  examples: [
    'splitllm edge --cloud ws://127.0.0.1:8080 --split 2 --prompt "ROMEO:" --max-tokens 40',
    'splitllm edge --cloud ws://cloud.example:8080 --token "$SECRET" --plan plan.json --prompt-file prompt.txt',
    'splitllm edge --cloud ws://127.0.0.1:8080 --split 4 --codec ts-tabq --edge-memory 2MB --json --prompt "JULIET:"',
    'splitllm edge --cloud ws://127.0.0.1:8080 --split 3 --speculate ngram --draft-tokens 6 --prompt-file scene.txt',
    'splitllm edge --cloud ws://127.0.0.1:8080 --split 3 --codec ts-tabq --speculate model:models/draft --prompt ROMEO:',
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
  let bandit: SplitBandit | undefined;
  const arms = v['adapt-splits'];
  if (arms !== undefined) {
    if (arms.length < 2) throw new SplitLLMError('E_USAGE', `--adapt-splits ${arms.join(',')} must list two or more splits`);
    bandit = new SplitBandit(arms, v['adapt-window']);
  }
  const r0 = await resolvePlan(v, bandit?.first);
  const { pkg, split, weights } = r0;
  if (arms?.some((k) => k > pkg.config.nLayers)) throw new SplitLLMError('E_USAGE', `--adapt-splits ${arms.join(',')} must list splits in 0..${pkg.config.nLayers}`);
  const { text: prompt, ids: promptIds, maxTokens } = promptOf(pkg, v, r0.maxSeq);
  const stream = tokenPrinter(pkg, promptIds, prompt, v.json ? undefined : (s) => process.stdout.write(s));
  const r = await runEdge(pkg, {
      speculate: await speculationOf(v, pkg, r0.plan),
      url: r0.url,
      split,
      codec: r0.codec,
      codecEnv: r0.codecEnv,
      prompt,
      promptIds,
      maxTokens,
      sampling: samplingFrom(v),
      token: r0.token,
      ca: r0.ca,
      deadlines: r0.deadlines,
      linearFor: weights.linearFor,
      embedBits: weights.embedBits,
      threads: v.threads,
      frontBits: weights.plan?.frontBits,
      quantizedBytes: weights.plan && weightStrategy(weights.plan.strategy).linearBytes,
      backBits: weights.plan?.backBits,
      headBits: weights.plan?.headBits,
      blockSize: weights.plan?.blockSize,
      kvCodec: r0.kvCodec,
      prefillChunk: r0.prefillChunk,
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
    if (s.speculation) {
      const sp = s.speculation;
      process.stderr.write(`speculation (${sp.proposer}): ${sp.tokensPerRound.toFixed(2)} tokens per round trip; ${sp.accepted} of ${sp.drafted} drafts accepted (${(sp.acceptance * 100).toFixed(0)}%) in ${sp.draftSteps} draft steps\n`);
    }
    if (adapt) process.stderr.write(`online planner: splits by window ${adapt.splits.join(' ')}; fastest so far: split ${adapt.best}\n`);
  }
  return s.interrupted ? 130 : 0;
}


/** The API keys of --api-key-file: one per non-empty line (a file without any is an error, not "no auth"). */
function apiKeysOf(file: string): string[] {
  const keys = readFileSync(file, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '');
  if (keys.length === 0) throw new SplitLLMError('E_USAGE', `--api-key-file ${file} holds no key (an empty file would mean no auth): write one key per line`);
  return keys;
}

const serveOptions = {
  ...planOptions,
  host: opt.string({ default: '127.0.0.1', description: 'address to listen on (apps on this device: keep 127.0.0.1)' }),
  port: opt.port({ default: 8081, description: 'HTTP port of the OpenAI-compatible API' }),
  'max-concurrent': opt.int({ min: 1, max: 1024, default: 4, description: 'requests served at once (each with its own cloud session); more get 429' }),
  threads: threadsOption,
  'model-id': opt.string({ description: 'the model id /v1/models reports and requests must name', defaultText: "the package's name" }),
  log: opt.flag({ description: 'log every request as a JSON line (pino) on stdout' }),
  'api-key-file': opt.file({ description: "API keys the apps must send ('Authorization: Bearer KEY', an OpenAI client's apiKey), one per line; required to listen beyond loopback (--token-file is the cloud's token, not this)" }),
  'allowed-hosts': opt.list({ item: items.string, description: "names the Host header may carry beside loopback and the bind address (a web page rebinding its own name to this address is refused); '*' turns the check off", valueName: 'NAME,…', defaultText: 'loopback and the bind address (with 0.0.0.0: this machine\'s addresses and name)' }),
  'insecure-no-api-key': opt.flag({ description: 'listen beyond loopback without --api-key-file: anyone who reaches the port spends this device\'s cloud token' }),
  'drain-timeout': opt.duration({ bare: 'ms', default: 30_000, defaultText: '30s', description: 'on SIGTERM/SIGINT: how long running requests may finish before they are ended (their clients get 503 shutting_down)' }),
};

const serveCommand = defineCommand({
  name: 'serve',
  summary:
    "Runs the edge as a long-lived service with an OpenAI-compatible API (POST /v1/completions, /v1/chat/completions, GET /v1/models, /health, /ready). The model and its front segments stay loaded; each request gets its own cloud session. The prompt's text is not sent, but a cloud holding the weights can reconstruct it from the hidden states.",
  usage: 'splitllm edge serve --cloud ws://HOST:PORT [--token-file F] (--plan plan.json | --split K …) [--host 127.0.0.1] [--port 8081] [--max-concurrent N]',
  examples: [
    'splitllm edge serve --cloud ws://127.0.0.1:8080 --split 2',
    'splitllm edge serve --cloud wss://cloud.example:8443 --token-file /run/credentials/splitllm-edge.service/token --plan plan.json --port 8081',
    "curl -s localhost:8081/v1/completions -H 'content-type: application/json' -d '{\"prompt\":\"ROMEO:\",\"max_tokens\":40,\"temperature\":0}'",
  ],
  layered: true,
  options: serveOptions,
  async run(v) {
    const apiKeys = v['api-key-file'] !== undefined ? apiKeysOf(v['api-key-file']) : [];
    if (!isLoopback(v.host) && apiKeys.length === 0 && !v['insecure-no-api-key']) {
      throw new SplitLLMError('E_USAGE', `--host ${v.host} reaches beyond this device, and without --api-key-file anyone who reaches the port spends this device's cloud token: give --api-key-file (or --insecure-no-api-key to accept that)`);
    }
    const r = await resolvePlan(v, undefined);
    const agent = await EdgeAgent.create({
      model: r.pkg,
      cloud: r.url,
      token: r.token,
      ca: r.ca,
      deadlines: r.deadlines,
      split: r.split,
      codec: r.codec,
      codecEnv: r.codecEnv,
      linearFor: r.weights.linearFor,
      embedBits: r.weights.embedBits,
      frontBits: r.weights.plan?.frontBits,
      quantizedBytes: r.weights.plan && weightStrategy(r.weights.plan.strategy).linearBytes,
      backBits: r.weights.plan?.backBits,
      headBits: r.weights.plan?.headBits,
      blockSize: r.weights.plan?.blockSize,
      kvCodec: r.kvCodec,
      prefillChunk: r.prefillChunk,
      edgeMemory: v['edge-memory'],
      maxSeq: r.maxSeq,
      maxConcurrent: v['max-concurrent'],
      threads: v.threads,
      speculate: await speculationOf(v, r.pkg, r.plan),
    });
    const service = await startEdgeService(agent, { host: v.host, port: v.port, modelId: v['model-id'], log: v.log, apiKeys, allowedHosts: v['allowed-hosts'] });
    if (v.host === '0.0.0.0' || v.host === '::') {
      process.stderr.write(`splitllm edge service: warning: listening on every interface (${v.host})${apiKeys.length ? '' : ' without an API key'}: any machine that reaches port ${new URL(service.url).port} can use it; keep --host 127.0.0.1 for apps on this device\n`);
    }
    const reachable = await agent.cloudReachable();
    process.stderr.write(
      `splitllm edge service on ${service.url} (OpenAI API at ${service.url}/v1): model ${r.pkg.manifest.name}, split ${r.split}, codec ${r.codec}, up to ${agent.maxConcurrent} requests; ` +
        `cloud ${r.url} ${reachable ? 'reachable' : 'NOT reachable yet (requests get 503 until it is)'}\n`,
    );
    // SIGTERM (systemd, Kubernetes) and Ctrl-C: stop taking requests, let the running ones finish within
    // --drain-timeout, then end them; a second signal ends the process at once
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    process.once('SIGINT', () => process.exit(130));
    process.once('SIGTERM', () => process.exit(143));
    const drainMs = v['drain-timeout'];
    process.stderr.write(`splitllm edge service: stopping (running requests have ${drainMs / 1000} s to finish)\n`);
    const late = setTimeout(() => {
      const n = agent.interruptAll();
      if (n) process.stderr.write(`splitllm edge service: drain timeout: ended ${n} running request(s)\n`);
    }, drainMs);
    try {
      await service.close();
    } finally {
      clearTimeout(late);
    }
    await agent.close();
    return 0;
  },
});

export const edgeCommand = commandGroup({
  name: 'edge',
  summary: edgeRunCommand.summary,
  subcommands: [serveCommand],
  fallback: edgeRunCommand,
});

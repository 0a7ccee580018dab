import { PROPOSERS } from '../../edge/draft/registry.js';
import { MAX_DRAFT } from '../../shared/protocol/index.js';
import { startCloud } from '../../cloud/server.js';
import { runEdge, type EdgeStats } from '../../edge/agent.js';
import { ACCURACY_ESTIMATE_FILE, ACCURACY_PROFILE_FILE } from '../../models/default-model.js';
import { planningAccuracy } from '../accuracy.js';
import { parameterCount } from '../../models/manifest.js';
import { measureCompute } from '../../planner/measure.js';
import { measureLink } from '../../edge/measure-link.js';
import { buildProblem, formatBudget } from '../../planner/problem.js';
import { profileBits, profileBlocks } from '../../planner/profiles.js';
import { exhaustive } from '../../planner/strategies/index.js';
import type { ComputeProfile, LinkProfile, RankedPlan } from '../../planner/types.js';
import { SplitLLMError } from '../../shared/errors.js';
import { DEFAULT_BLOCK_SIZE } from '../../shared/precision.js';
import { emulateLink, type EmulatedLink } from '../link-emulator.js';
import { generationOptions, modelOptions, modelPath, openModelOption, promptOf, planEdgeSession, samplingFrom, speculationOf } from '../common.js';
import { defineCommand, opt } from '../options.js';
import { codecAtSplit } from '../../quantization/activations/registry.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { TextStream } from '../../models/tokenizer/text-stream.js';

const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;

export const demoCommand = defineCommand({
  name: 'demo',
  summary:
    "Shows the whole pipeline on this machine. It measures the machine, asks the planner for a plan that fits a small device's budgets, starts a cloud server and an edge agent on loopback (through an emulated device link), streams the generated text and ends with a summary: the plan, bytes per token against float16, tokens/s and where the time went.",
  usage: 'splitllm demo [--prompt P] [--max-tokens N] [--edge-memory 3MB] [--latency 100ms] [--max-ppl-increase 3%] [--bandwidth 256kbit] [--rtt 30ms | --loopback] [--split K] [--json]',
  examples: ['splitllm demo', 'splitllm demo --edge-memory 8MB   # room for the draft model: the plan speculates with it', 'splitllm demo --speculate ngram', 'splitllm demo --prompt "JULIET:" --edge-memory 2MB --bandwidth 1mbit --rtt 40ms', 'splitllm demo --loopback --split 3 --json'],
  options: {
    ...modelOptions,
    ...generationOptions,
    prompt: opt.string({ short: 'p', default: 'ROMEO:', description: "prompt text; '-' reads it from standard input" }),
    'max-tokens': opt.int({ short: 'n', min: 1, default: 120, description: 'tokens to generate' }),
    temperature: opt.number({ short: 't', min: 0, max: 1000, default: 0.8, description: 'sampling temperature, 0 = greedy' }),
    'top-k': opt.int({ default: 40, description: 'sample among the k most likely tokens (0 = off)' }),
    seed: opt.int({ default: 7, description: 'sampling seed' }),
    'edge-memory': opt.bytes({ default: 3e6, defaultText: '3MB', description: "memory the model may take on the edge: weights, KV cache and buffers (the runtime's own memory is not counted, as in 'splitllm plan')" }),
    latency: opt.duration({ default: 100, defaultText: '100ms', description: 'per-token latency budget' }),
    'max-ppl-increase': opt.percent({ default: 0.03, defaultText: '3%', description: 'accuracy budget (ppl increase against float32)' }),
    bandwidth: opt.bandwidth({ default: 32_000, defaultText: '256kbit', description: "the device link's bandwidth, emulated on loopback" }),
    rtt: opt.duration({ default: 30, defaultText: '30ms', description: "the device link's round trip, emulated on loopback" }),
    loopback: opt.flag({ description: 'no emulated link: plan for and run over plain loopback (measured)' }),
    split: opt.int({ short: 's', description: 'fix the split point; the planner chooses the rest', valueName: 'K' }),
    speculate: opt.string({ description: `speculative decoding on the edge, verified by the cloud: ${PROPOSERS.map((p) => p.name).join(', ')} (model:PATH) or off`, valueName: 'PROPOSER', defaultText: "the plan's choice" }),
    'draft-tokens': opt.int({ min: 1, max: MAX_DRAFT, description: 'most tokens drafted per step with --speculate', defaultText: "the plan's, else 4" }),
    'accuracy-profile': opt.string({ description: 'accuracy profile of --model', valueName: 'F', defaultText: `${ACCURACY_PROFILE_FILE} in the model's directory, else an estimate on --text` }),
    text: opt.file({ description: `calibration text: for a model without an accuracy profile, the demo estimates one on it first, as 'splitllm plan --text' does (kept as ${ACCURACY_ESTIMATE_FILE} beside the model)` }),
    ...calibrationOption,
    threads: opt.int({ min: 1, description: 'onnxruntime intra-op threads of each segment, edge and cloud (idle workers stop spinning when a run returns)', defaultText: 'the cores this process may use' }),
    json: opt.flag({ description: 'print {"plan":…,"text":…,"stats":…} instead of streaming text and the table' }),
  },
  async run(v) {
    const json = v.json;
    const say = (s: string) => process.stderr.write(s + '\n');
    const pkg = await openModelOption(v);
    const c = pkg.config;
    say(`splitllm demo: model "${pkg.manifest.name}" (${c.nLayers} layers, ${(parameterCount(c) / 1e6).toFixed(2)}M parameters) from ${modelPath(v)}`);

    const accuracy = await planningAccuracy(pkg, v, 'demo');
    const bits = profileBits(accuracy);

    const budgets = { edgeMemory: v['edge-memory'], latencyMs: v.latency, maxPplIncrease: v['max-ppl-increase'] };
    const { text: prompt, ids: promptIds, maxTokens } = promptOf(pkg, v, c.maxSeq, 'ROMEO:');
    const split = v.split;
    if (split !== undefined && split > c.nLayers) throw new SplitLLMError('E_SPLIT_RANGE', `--split ${split} is past the model's ${c.nLayers} layers: use 0..${c.nLayers}`);

    const shape = v.loopback ? undefined : { bytesPerSec: v.bandwidth, rttMs: v.rtt };
    // the model's calibration (codec contexts of ts-tabq:cal=K) serves both sides, as in a deployment
    const contexts = calibrationContexts(v, pkg);
    const cloud = await startCloud(pkg, { port: 0, host: '127.0.0.1', calibration: contexts, threads: v.threads });
    let link: EmulatedLink | undefined;
    try {
      const t0 = performance.now();
      say(`measuring this machine: decoder layers at ${bits.join(', ')}-bit weights…`);
      const compute: ComputeProfile = await measureCompute(pkg, bits, { steps: 30, blockSizes: profileBlocks(accuracy) });
      compute.baselineBytes = 0; // the budget is the model's share of the device: the runtime is not counted
      say(`  done in ${((performance.now() - t0) / 1000).toFixed(1)} s (${bits.map((b) => `${b}-bit ${compute.layerDecodeMs[String(b)]!.toFixed(2)} ms`).join(', ')} per layer and token)`);

      const port = Number(new URL(cloud.url).port);
      let linkProfile: LinkProfile;
      let linkText: string;
      if (!shape) {
        linkProfile = await measureLink(`${cloud.url}/v1/session`, undefined, { bytes: 1 << 20 });
        linkText = `loopback, measured: ${linkProfile.rttMs.toFixed(2)} ms round trip, ${((8 * linkProfile.bytesPerSec) / 1e6).toFixed(0)} Mbit/s`;
      } else {
        linkProfile = shape;
        link = await emulateLink({ host: '127.0.0.1', port }, linkProfile);
        linkText = `${((8 * linkProfile.bytesPerSec) / 1e3).toFixed(0)} kbit/s, ${linkProfile.rttMs} ms round trip (emulated on loopback)`;
      }
      say(`link: ${linkText}`);
      say(`budgets: edge memory ${mb(budgets.edgeMemory)} for the model, ${budgets.latencyMs} ms per token, ppl +${(100 * budgets.maxPplIncrease).toFixed(1)}% at most`);

      const problem = buildProblem(
        { ...pkg.memoryShape, hash: pkg.hash },
        { edge: compute, cloud: compute, link: linkProfile, accuracy },
        { ...budgets, minSeq: promptIds.length + maxTokens, promptTokens: promptIds.length },
        split === undefined ? {} : { splits: [split] },
      );
      const result = exhaustive.solve(problem, 3);
      if (result.infeasible) {
        const inf = result.infeasible;
        const fmt = (v: number) => formatBudget(inf.binding, v, 2);
        process.stderr.write(`splitllm demo: no plan fits: the ${inf.binding} budget binds; raise it from ${fmt(inf.relaxation.from)} to ${fmt(inf.relaxation.to)}\n`);
        return 3;
      }
      const best: RankedPlan = result.plans[0]!;
      const plan = best.plan;
      const drafting = plan.speculate ? `, speculation ${plan.speculate} (≤ ${plan.draftTokens} drafts, ${best.predicted.speculation?.tokensPerRound.toFixed(2)} tokens per round predicted)` : '';
      say(`plan: split ${plan.split} of ${c.nLayers}, weights ${plan.frontBits}-bit on the edge / ${plan.backBits}-bit in the cloud${extraBits(plan)}, codec ${plan.codec}${drafting} (${result.evaluated} configurations searched)`);

      const url = link ? `ws://127.0.0.1:${link.port}/v1/session` : `${cloud.url}/v1/session`;
      say(`cloud at ${cloud.url}/v1/session; the edge connects ${link ? 'through the emulated link' : 'directly'}\n`);
      // one token first, untimed: the cloud builds its back segment on a split's first session
      const codec = codecAtSplit(plan.codec, plan.split, contexts).spec; // what a bare 'ts-tabq' means at this split
      const session = { url, ...(await planEdgeSession(pkg, plan, contexts)), prompt, promptIds, threads: v.threads };
      await runEdge(pkg, { ...session, maxTokens: 1 });
      // a play runs on past the end of a speech: EOS is a paragraph break here, not the end
      const stream = new TextStream(pkg.tokenizer(), promptIds, prompt, json ? undefined : (s) => process.stdout.write(s), { breakIds: [c.eosId] });
      // the plan's speculation unless --speculate says otherwise (a plan's draft path is relative to the model)
      const speculate = await speculationOf(v, pkg, plan);
      const r = await runEdge(pkg, { ...session, maxTokens, sampling: samplingFrom(v), stopIds: [], onToken: (id) => stream.push(id), ...(speculate ? { speculate } : {}) });
      await speculate?.proposer.release?.();
      const text = stream.finish();
      const fp16Wire = c.dim * 2 + (r.stats.decode.wireBytes - r.stats.decode.payloadBytes);
      if (json) {
        process.stdout.write(JSON.stringify({ model: pkg.manifest.name, link: linkProfile, budgets, plan, codec, predicted: best.predicted, text, tokens: r.tokens, stats: r.stats, fp16BytesPerToken: fp16Wire }) + '\n');
        return;
      }
      process.stdout.write('\n\n' + summary({ ...plan, codec }, best, r.stats, c.nLayers, fp16Wire, budgets.edgeMemory) + '\n');
    } finally {
      await link?.close();
      await cloud.close();
    }
  },
});

/** The head's and the embedding's precision when the plan quantizes them, and a block other than 32: " (LM head 8-bit, embedding 8-bit, quantization blocks of 128)". */
function extraBits(plan: RankedPlan['plan']): string {
  const parts = [
    ...(plan.headBits ? [`LM head ${plan.headBits}-bit`] : []),
    ...(plan.embedBits ? [`embedding ${plan.embedBits}-bit`] : []),
    ...((plan.blockSize ?? DEFAULT_BLOCK_SIZE) !== DEFAULT_BLOCK_SIZE ? [`quantization blocks of ${plan.blockSize}`] : []),
  ];
  return parts.length ? ` (${parts.join(', ')})` : '';
}

function summary(plan: RankedPlan['plan'], best: RankedPlan, s: EdgeStats, nLayers: number, fp16Wire: number, budget: number): string {
  const d = s.decode;
  const total = d.edgeMs + d.networkMs + d.cloudMs;
  const pct = (v: number) => `${((100 * v) / total).toFixed(0)}%`;
  const rows: [string, string][] = [
    ['plan', `split ${plan.split}/${nLayers} · weights ${plan.frontBits}-bit edge, ${plan.backBits}-bit cloud${extraBits(plan)} · codec ${plan.codec}`],
    ['edge memory', `${mb(best.predicted.memory)} predicted for ${plan.maxSeq} positions (budget ${mb(budget)}); the front held ${mb(s.peakEdgeBytes)} at its longest (weights, KV cache, a step's buffers)`],
    ['ppl change', `${best.predicted.accuracy >= 0 ? '+' : ''}${(100 * best.predicted.accuracy).toFixed(2)}% predicted from the accuracy profile`],
    ['bytes/token up', `${d.wireBytes.toFixed(0)} B (hidden state ${d.payloadBytes.toFixed(0)} B) vs ${fp16Wire.toFixed(0)} B as float16: ${(fp16Wire / d.wireBytes).toFixed(2)}× smaller`],
    ['speed', `${s.tokens} tokens in ${s.seconds.toFixed(2)} s: ${s.tokensPerSec.toFixed(1)} tokens/s; first token after ${s.prefill.firstTokenMs.toFixed(0)} ms (${best.predicted.firstTokenMs.toFixed(0)} ms predicted, ${s.prefill.tokens} prompt positions)`],
    ...(s.speculation ? [['speculation', `${s.speculation.proposer}: ${s.speculation.tokensPerRound.toFixed(2)} tokens per round trip, ${(s.speculation.acceptance * 100).toFixed(0)}% of ${s.speculation.drafted} drafts accepted`] as [string, string]] : []),
    // with speculation a decode step (a round trip) yields tokensPerRound tokens; without, the plan's plain prediction is the one to compare
    ['latency/token', s.speculation
      ? `${(total / Math.max(1, s.speculation.tokensPerRound)).toFixed(1)} ms measured (${best.predicted.latency.toFixed(1)} ms predicted): ${total.toFixed(1)} ms per round trip over ${d.steps} rounds`
      : `${total.toFixed(1)} ms measured (${(best.predicted.speculation?.plainLatency ?? best.predicted.latency).toFixed(1)} ms predicted) over ${d.steps} decode steps`],
    ['  edge', `${d.edgeMs.toFixed(2)} ms (${pct(d.edgeMs)})  embedding + ${plan.split} layers + encode`],
    ['  network', `${d.networkMs.toFixed(2)} ms (${pct(d.networkMs)})  link + framing + queueing`],
    ['  cloud', `${d.cloudMs.toFixed(2)} ms (${pct(d.cloudMs)})  decode + ${nLayers - plan.split} layers + LM head + sampling`],
    ['privacy', `the cloud got hidden states, not text: holding the weights, it can recover the prompt from them ('splitllm audit privacy --split ${plan.split} --text FILE'), and it sampled the output`],
  ];
  return rows.map(([k, v]) => `${k.padEnd(16)} ${v}`).join('\n');
}

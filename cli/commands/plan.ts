import { writeFileSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';
import { ACCURACY_ESTIMATE_FILE, ACCURACY_PROFILE_FILE } from '../../models/default-model.js';
import { planningAccuracy } from '../accuracy.js';
import { measureBaseline, measureCompute } from '../../planner/measure.js';
import { computeProfile, linkProfile, profileBits, profileBlocks } from '../../planner/profiles.js';
import { plannerStrategy, PLANNER_STRATEGIES } from '../../planner/strategies/index.js';
import { buildProblem, formatBudget } from '../../planner/problem.js';
import type { ComputeProfile, LinkProfile, Prediction } from '../../planner/types.js';
import { modelOptions, openModelOption, readJsonFile } from '../common.js';
import { defineCommand, items, opt } from '../options.js';

/** A plan's speculation as the table shows it: proposer, drafts, tokens per round, the plain latency it beats. */
function speculationText(p: Prediction): string {
  const s = p.speculation;
  return s ? `${s.proposer} ≤${s.draftTokens} drafts, ${s.tokensPerRound.toFixed(2)} tokens/round (plain ${s.plainLatency.toFixed(1)} ms)` : 'off';
}

export const planCommand = defineCommand({
  name: 'plan',
  summary:
    "Picks the split point, weight bits, quantization block, codec and longest sequence that fit the device. It uses measured profiles (this machine's, measured now, when --edge-profile and --cloud-profile are not given; an accuracy estimate made on --text when the model has no accuracy profile), a memory budget for the model on the edge, a per-token latency budget and an accuracy budget; it prints the chosen plan, the runners-up and the tight constraint, or says which budget binds and how far to relax it (exit 3).",
  usage:
    'splitllm plan [--model M] [--edge-profile F --cloud-profile F] [--accuracy-profile F | --text CALIB.txt] (--link-profile F | --bandwidth 10mbit --rtt 40ms) --edge-memory 40MB --latency 150ms [--max-ppl-increase 1%] [--prompt-tokens N] [--strategy exhaustive|coordinate] [--speculate auto|off] [--block-sizes 32,128] [--json] [--out plan.json]',
  examples: [
    'splitllm plan --bandwidth 1mbit --rtt 40ms --edge-memory 3MB --latency 100ms --max-ppl-increase 2%',
    'splitllm plan --edge-profile edge.json --cloud-profile cloud.json --link-profile link.json --edge-memory 40MB --latency 100ms --out plan.json',
    'splitllm plan --model models/stories260K --accuracy-profile acc.json --bandwidth 10mbit --rtt 20ms --edge-memory 2MB --latency 50ms --json',
    'splitllm plan --model models/llama-1b --text calib.txt --bandwidth 10mbit --rtt 40ms --edge-memory 1GB --latency 300ms --max-ppl-increase 5%',
  ],
  options: {
    ...modelOptions,
    'edge-profile': opt.string({ description: "compute profile of the device ('splitllm profile device')", valueName: 'F', defaultText: 'this machine, measured now' }),
    'cloud-profile': opt.string({ description: 'compute profile of the cloud machine', valueName: 'F', defaultText: 'this machine, measured now' }),
    'accuracy-profile': opt.string({ description: "ppl change per split, precision and codec ('splitllm profile accuracy')", valueName: 'F', defaultText: `${ACCURACY_PROFILE_FILE} in the model's directory, else an estimate on --text` }),
    text: opt.file({ description: `calibration text: for a model without an accuracy profile, plan estimates one on it (as 'splitllm profile accuracy --estimate': a few minutes at 1B) and keeps it as ${ACCURACY_ESTIMATE_FILE} in the model's directory for the next plan` }),
    'link-profile': opt.string({ description: "measured link ('splitllm profile link')", valueName: 'F' }),
    bandwidth: opt.bandwidth({ description: 'link bandwidth instead of a link profile, e.g. 10mbit' }),
    rtt: opt.duration({ description: 'link round trip instead of a link profile, e.g. 40ms' }),
    'edge-memory': opt.bytes({ required: true, description: "memory the model may take on the edge: weights, KV cache and buffers (the runtime's own memory, from the edge profile, comes on top), e.g. 3MB" }),
    latency: opt.duration({ required: true, description: 'per-token latency budget, e.g. 150ms' }),
    'max-ppl-increase': opt.percent({ default: 0.01, defaultText: '1%', description: 'accuracy budget (ppl increase against float32)' }),
    'prompt-tokens': opt.int({ min: 1, description: 'the plan must hold this many positions; the time to first token is predicted for a prompt this long' }),
    strategy: opt.choice({ choices: PLANNER_STRATEGIES.map((s) => s.name), default: 'exhaustive', description: 'planning strategy' }),
    speculate: opt.choice({ choices: ['auto', 'off'], default: 'auto', description: "auto: predict speculative decoding with the proposers the accuracy profile measured ('splitllm profile speculation') and choose it where it lowers the per-token latency; off: plain steps only" }),
    'draft-tokens': opt.int({ min: 1, max: 16, default: 4, description: 'most drafts per step the plan may choose' }),
    'block-sizes': opt.list({ item: items.blockSize, description: "quantization blocks the plan may use (a cloud started with --block-sizes accepts only its own)", valueName: 'N,N,…', defaultText: 'every block the edge, cloud and accuracy profiles all measured' }),
    'min-split': opt.int({ default: 1, description: "lowest split to consider (0 would send the token embeddings themselves; the hidden states of every split reveal the prompt to a cloud that holds the weights: 'splitllm audit privacy' measures it)" }),
    json: opt.flag({ description: 'print {"plan":…,"alternatives":[…]} (or {"infeasible":…})' }),
    out: opt.string({ description: 'write the plan file that splitllm edge --plan reads', valueName: 'FILE' }),
  },
  async run(v) {
    const pkg = await openModelOption(v);
    const hash = pkg.hash;
    // this machine's runtime memory first, when it is measured here: RSS only grows once an estimate has run
    const here = v['edge-profile'] === undefined && v['cloud-profile'] === undefined;
    const baselineBytes = here ? await measureBaseline(pkg, [2, 3, 4, 8, 16, 32]) : 0;
    const accuracy = await planningAccuracy(pkg, v, 'plan');
    let link: LinkProfile;
    if (v['link-profile']) link = linkProfile(readJsonFile(v['link-profile'], 'link profile'), v['link-profile']);
    else if (v.bandwidth !== undefined && v.rtt !== undefined) link = { bytesPerSec: v.bandwidth, rttMs: v.rtt };
    else throw new SplitLLMError('E_USAGE', "give --link-profile F (from 'splitllm profile link'), or --bandwidth and --rtt");
    let edge: ComputeProfile;
    let cloud: ComputeProfile;
    if (v['edge-profile'] === undefined || v['cloud-profile'] === undefined) {
      if (v['edge-profile'] !== undefined || v['cloud-profile'] !== undefined) throw new SplitLLMError('E_USAGE', 'give both --edge-profile and --cloud-profile, or neither (this machine is measured for both)');
      const t0 = performance.now();
      const bits = profileBits(accuracy);
      // the blocks the accuracy profile measured (those --block-sizes allows)
      const blockSizes = profileBlocks(accuracy).filter((b) => !v['block-sizes'] || v['block-sizes'].includes(b));
      edge = { ...(await measureCompute(pkg, bits, { steps: 20, blockSizes })), baselineBytes };
      cloud = edge;
      process.stderr.write(`plan: no --edge-profile/--cloud-profile: measured this machine for both (${bits.join(', ')}-bit layers${blockSizes.length ? `, blocks 32, ${blockSizes.join(', ')}` : ''}, ${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
    } else {
      edge = computeProfile(readJsonFile(v['edge-profile'], 'edge profile'), v['edge-profile'], hash);
      cloud = computeProfile(readJsonFile(v['cloud-profile'], 'cloud profile'), v['cloud-profile'], hash);
    }
    const strategy = plannerStrategy(v.strategy);
    // the budget is the model's share; the cost model predicts the whole edge process, runtime included
    const runtime = edge.baselineBytes;
    const problem = buildProblem(
      { ...pkg.memoryShape, hash },
      { edge, cloud, link, accuracy },
      { edgeMemory: v['edge-memory'] + runtime, latencyMs: v.latency, maxPplIncrease: v['max-ppl-increase'], minSeq: v['prompt-tokens'], promptTokens: v['prompt-tokens'] },
      { minSplit: v['min-split'], speculate: v.speculate === 'auto', maxDraft: v['draft-tokens'] },
    );
    const wanted = v['block-sizes'];
    if (wanted) {
      const measured = problem.candidates.blockSizes ?? [];
      const missing = wanted.filter((b) => !measured.includes(b));
      if (missing.length) {
        throw new SplitLLMError('E_BAD_CONFIG', `--block-sizes ${missing.join(',')}: the profiles do not all measure ${missing.length > 1 ? 'these blocks' : 'that block'} (measured by every profile: ${measured.join(', ')}): profile them with 'splitllm profile device --block-sizes …' and 'splitllm profile accuracy --block-sizes …'`);
      }
      problem.candidates.blockSizes = measured.filter((b) => wanted.includes(b));
    }
    const r = strategy.solve(problem, 5);
    if (r.infeasible) {
      const inf = r.infeasible;
      const model = (x: number) => (inf.binding === 'memory' ? x - runtime : x);
      const shown = { ...inf, relaxation: { ...inf.relaxation, from: model(inf.relaxation.from), to: model(inf.relaxation.to) } };
      if (v.json) process.stdout.write(JSON.stringify({ infeasible: shown, runtimeBytes: runtime }) + '\n');
      else {
        process.stdout.write(`no plan fits: the ${inf.binding} budget binds; relaxing it from ${formatBudget(inf.binding, shown.relaxation.from)} to ${formatBudget(inf.binding, shown.relaxation.to)} makes a plan feasible\n`);
      }
      return 3;
    }
    const [best, ...rest] = r.plans;
    if (!best) throw new SplitLLMError('E_RUNTIME', 'the planner returned neither a plan nor a binding budget');
    if (v.out) writeFileSync(v.out, JSON.stringify({ plan: best.plan }, null, 2) + '\n');
    if (v.json) {
      process.stdout.write(JSON.stringify({ plan: best.plan, alternatives: rest.map((p) => p.plan), tight: best.tight, runtimeBytes: runtime }) + '\n');
      return;
    }
    process.stdout.write(`memory below is the whole edge process: the model's share plus the runtime's ${(runtime / 1e6).toFixed(1)} MB\n`);
    process.stdout.write('split  front/back/head/embed bits  block  codec                  max seq   memory MB   latency ms   first token ms   ppl change   tight      speculation\n');
    for (const p of r.plans) {
      const q = p.plan;
      process.stdout.write(
        `${String(q.split).padStart(5)}  ${`${q.frontBits}/${q.backBits}/${q.headBits ?? 32}/${q.embedBits ?? 32}`.padStart(26)}  ${String(q.blockSize ?? 32).padStart(5)}  ${q.codec.padEnd(22)} ${String(q.maxSeq).padStart(7)} ${(p.predicted.memory / 1e6).toFixed(1).padStart(11)} ${p.predicted.latency.toFixed(1).padStart(12)} ${p.predicted.firstTokenMs.toFixed(1).padStart(16)} ${((100 * p.predicted.accuracy).toFixed(2) + '%').padStart(12)}   ${p.tight.padEnd(9)}  ${speculationText(p.predicted)}\n`,
      );
    }
    if (v.out) process.stdout.write(`wrote ${v.out}\n`);
  },
});

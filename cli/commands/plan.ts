import { writeFileSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';
import { accuracyProfile, computeProfile, linkProfile, parseBandwidth, parseDuration } from '../../planner/profiles.js';
import { plannerStrategy, PLANNER_STRATEGIES } from '../../planner/strategies/index.js';
import { buildProblem, formatBudget } from '../../planner/problem.js';
import type { LinkProfile } from '../../planner/types.js';
import { intOption, modelOptions, percentOption, readJsonFile, requireString, type Command, openModelOption } from '../common.js';
import { parseBytes } from './edge.js';

export const planCommand: Command = {
  name: 'plan',
  summary:
    'Picks the split point, weight bits, codec and longest sequence that fit the device. It uses measured profiles, an edge memory budget, a per-token latency budget and an accuracy budget; it prints the chosen plan, the runners-up and the tight constraint, or says which budget binds and how far to relax it (exit 3).',
  usage:
    'splitllm plan --model M --edge-profile F --cloud-profile F --accuracy-profile F (--link-profile F | --bandwidth 10mbit --rtt 40ms) --edge-memory 512MB --latency 150ms --max-ppl-increase 1% [--prompt-tokens N] [--strategy exhaustive|coordinate] [--json] [--out plan.json]',
  options: {
    ...modelOptions,
    'edge-profile': { type: 'string', description: "compute profile of the device ('splitllm profile device')", valueName: 'F' },
    'cloud-profile': { type: 'string', description: 'compute profile of the cloud machine', valueName: 'F' },
    'accuracy-profile': { type: 'string', description: "ppl change per split, precision and codec ('splitllm profile accuracy')", valueName: 'F' },
    'link-profile': { type: 'string', description: "measured link ('splitllm profile link')", valueName: 'F' },
    bandwidth: { type: 'string', description: 'link bandwidth instead of a link profile, e.g. 10mbit' },
    rtt: { type: 'string', description: 'link round trip instead of a link profile, e.g. 40ms' },
    'edge-memory': { type: 'string', description: 'memory the edge may use, e.g. 512MB', valueName: 'BYTES' },
    latency: { type: 'string', description: 'per-token latency budget, e.g. 150ms' },
    'max-ppl-increase': { type: 'string', description: 'accuracy budget', default: '1%' },
    'prompt-tokens': { type: 'string', description: 'the plan must hold this many positions; the time to first token is predicted for a prompt this long' },
    strategy: { type: 'string', description: `planning strategy: ${PLANNER_STRATEGIES.map((s) => s.name).join(' or ')}`, default: 'exhaustive' },
    'min-split': { type: 'string', description: 'lowest split to consider; at 0 the edge would send token embeddings, which give the prompt away', default: '1' },
    json: { type: 'boolean', description: 'print {"plan":…,"alternatives":[…]} (or {"infeasible":…})' },
    out: { type: 'string', description: 'write the plan file that splitllm edge --plan reads', valueName: 'FILE' },
  },
  async run(values) {
    const pkg = await openModelOption(values);
    const hash = pkg.hash;
    const edgeP = requireString(values, 'edge-profile', 'plan');
    const cloudP = requireString(values, 'cloud-profile', 'plan');
    const accP = requireString(values, 'accuracy-profile', 'plan');
    const edge = computeProfile(readJsonFile(edgeP, 'edge profile'), edgeP, hash);
    const cloud = computeProfile(readJsonFile(cloudP, 'cloud profile'), cloudP, hash);
    const accuracy = accuracyProfile(readJsonFile(accP, 'accuracy profile'), accP, hash);
    let link: LinkProfile;
    if (values['link-profile']) link = linkProfile(readJsonFile(String(values['link-profile']), 'link profile'), String(values['link-profile']));
    else if (values['bandwidth'] && values['rtt']) link = { bytesPerSec: parseBandwidth(String(values['bandwidth'])), rttMs: parseDuration(String(values['rtt'])) };
    else throw new SplitLLMError('E_USAGE', 'give --link-profile F, or --bandwidth and --rtt');
    const strategy = plannerStrategy(String(values['strategy']));
    const problem = buildProblem(
      { ...pkg.config, hash },
      { edge, cloud, link, accuracy },
      {
        edgeMemory: parseBytes(requireString(values, 'edge-memory', 'plan')),
        latencyMs: parseDuration(requireString(values, 'latency', 'plan')),
        maxPplIncrease: percentOption(values, 'max-ppl-increase', 0.01),
        minSeq: intOption(values, 'prompt-tokens', undefined, 1),
        promptTokens: intOption(values, 'prompt-tokens', undefined, 1),
      },
      { minSplit: intOption(values, 'min-split', 1)! },
    );
    const r = strategy.solve(problem, 5);
    if (r.infeasible) {
      const inf = r.infeasible;
      if (values['json']) process.stdout.write(JSON.stringify({ infeasible: inf }) + '\n');
      else {
        process.stdout.write(`no plan fits: the ${inf.binding} budget binds; relaxing it from ${formatBudget(inf.binding, inf.relaxation.from)} to ${formatBudget(inf.binding, inf.relaxation.to)} makes a plan feasible\n`);
      }
      return 3;
    }
    const [best, ...rest] = r.plans;
    if (values['out']) writeFileSync(String(values['out']), JSON.stringify({ plan: best!.plan }, null, 2) + '\n');
    if (values['json']) {
      process.stdout.write(JSON.stringify({ plan: best!.plan, alternatives: rest.map((p) => p.plan), tight: best!.tight }) + '\n');
      return;
    }
    process.stdout.write('split  front/back bits  codec                  max seq   memory MB   latency ms   first token ms   ppl change   tight\n');
    for (const p of r.plans) {
      const q = p.plan;
      process.stdout.write(
        `${String(q.split).padStart(5)}  ${`${q.frontBits}/${q.backBits}`.padStart(15)}  ${q.codec.padEnd(22)} ${String(q.maxSeq).padStart(7)} ${(p.predicted.memory / 1e6).toFixed(1).padStart(11)} ${p.predicted.latency.toFixed(1).padStart(12)} ${p.predicted.firstTokenMs.toFixed(1).padStart(16)} ${((100 * p.predicted.accuracy).toFixed(2) + '%').padStart(12)}   ${p.tight}\n`,
      );
    }
    if (values['out']) process.stdout.write(`wrote ${String(values['out'])}\n`);
  },
};

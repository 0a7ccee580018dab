/**
 * bench/planner-search: time of the exhaustive search on a TinyLlama-shaped synthetic problem (22 layers,
 * every bit width, six codec settings, ten sequence lengths) and the coordinate search's speed-up over it,
 * measured in the same run over 100 random budget settings.
 *
 *   node dist/bench/planner-search.js [--json]
 */
import { parseArgs } from 'node:util';
import { SYNTHETIC_PRESETS } from '../models/importers/synthetic.js';
import { rng } from '../models/runtime/sampler.js';
import { coordinate, exhaustive } from '../planner/strategies/index.js';
import { syntheticProblem } from '../planner/synthetic.js';

const { values } = parseArgs({ options: { json: { type: 'boolean' } } });
const model = { ...SYNTHETIC_PRESETS['tinyllama-1.1b']!.config, hash: 'tinyllama-shaped' };
const next = rng(7);
let tExh = 0;
let tCoord = 0;
let worstGap = 0;
let evalExh = 0;
let evalCoord = 0;
let single = Infinity;
for (let i = 0; i < 100; i++) {
  const pr = syntheticProblem(model, i);
  pr.budgets = { edgeMemory: 150e6 + next() * 1.5e9, latencyMs: 60 + next() * 300, maxPplIncrease: 0.002 + next() * 0.05 };
  const t0 = performance.now();
  const e = exhaustive.solve(pr, 1);
  const t1 = performance.now();
  const c = coordinate.solve(pr, 1);
  const t2 = performance.now();
  tExh += t1 - t0;
  tCoord += t2 - t1;
  single = Math.min(single, t1 - t0);
  evalExh += e.evaluated;
  evalCoord += c.evaluated;
  if (e.plans[0] && c.plans[0]) worstGap = Math.max(worstGap, c.plans[0].predicted.latency / e.plans[0].predicted.latency - 1);
}
const r = { exhaustiveMsMean: tExh / 100, exhaustiveMsBest: single, coordinateMsMean: tCoord / 100, speedup: tExh / tCoord, evaluatedRatio: evalExh / evalCoord, worstGap };
if (values.json) process.stdout.write(JSON.stringify(r) + '\n');
else {
  process.stdout.write(
    `exhaustive: ${r.exhaustiveMsMean.toFixed(1)} ms per problem (best ${r.exhaustiveMsBest.toFixed(1)} ms), ${(evalExh / 100).toFixed(0)} configurations\n` +
      `coordinate: ${r.coordinateMsMean.toFixed(1)} ms per problem, ${(evalCoord / 100).toFixed(0)} configurations — ${r.speedup.toFixed(1)}× faster, ${r.evaluatedRatio.toFixed(1)}× fewer evaluations; worst gap to the optimum ${(100 * r.worstGap).toFixed(2)}%\n`,
  );
}

/**
 * What every planning strategy shares: scoring, feasibility, the objective's order, ranking a plan,
 * enumerating configurations and naming the binding budget. Objective: the lowest predicted per-token
 * latency among plans within every budget, where latencies within LATENCY_TIE of the fastest count as
 * equal (the cost model is good to some percent, not to a thousandth): among those the smaller accuracy
 * loss wins (within ACCURACY_TIE, a tie), then the longer sequence, then the lower latency (`rank`). The
 * sequence length of a plan is the longest candidate its memory allows.
 */
import type { Plan } from '../shared/plan.js';
import { blockOf, predict, quantizesBlockwise, type Config } from './cost.js';
import type { Constraint, Infeasible, Prediction, Problem, RankedPlan } from './types.js';

export interface Scored {
  c: Config;
  p: Prediction;
}

export function feasible(pr: Problem, s: Scored): boolean {
  const b = pr.budgets;
  return s.p.memory <= b.edgeMemory && s.p.latency <= b.latencyMs && s.p.accuracy <= b.maxPplIncrease && s.c.maxSeq >= (b.minSeq ?? 0);
}

/**
 * Predicted latencies within this fraction of the fastest plan's are a tie: a plan does not give up accuracy
 * (or sequence) for less (bench/planner measures the predictions within 5–11% of what runs).
 */
export const LATENCY_TIE = 0.01;

/**
 * ppl increases within this much (a fraction: 0.05 percentage points) of the best are a tie: a plan does not
 * give up most of its sequence for a difference the accuracy profile cannot tell from noise.
 */
export const ACCURACY_TIE = 0.0005;

/**
 * The best `limit` of the feasible plans, best first, by the objective: each next one is, of those left
 * whose latency is within LATENCY_TIE of the fastest left, and of them those within ACCURACY_TIE of the
 * most accurate, the one with the longest sequence (then the lowest latency, then the lowest loss).
 */
export function rank(ok: readonly Scored[], limit: number): Scored[] {
  const left = [...ok];
  const out: Scored[] = [];
  while (out.length < limit && left.length > 0) {
    const fastest = Math.min(...left.map((s) => s.p.latency));
    const quick = left.filter((s) => s.p.latency <= fastest * (1 + LATENCY_TIE));
    const accurate = Math.min(...quick.map((s) => s.p.accuracy));
    let best: Scored | undefined;
    for (const s of quick) {
      if (s.p.accuracy > accurate + ACCURACY_TIE) continue;
      if (!best || s.c.maxSeq > best.c.maxSeq || (s.c.maxSeq === best.c.maxSeq && (s.p.latency < best.p.latency || (s.p.latency === best.p.latency && s.p.accuracy < best.p.accuracy)))) best = s;
    }
    out.push(best!);
    left.splice(left.indexOf(best!), 1);
  }
  return out;
}

export function toRanked(pr: Problem, s: Scored): RankedPlan {
  const b = pr.budgets;
  const slack: [Constraint, number][] = [
    ['memory', (b.edgeMemory - s.p.memory) / b.edgeMemory],
    ['latency', (b.latencyMs - s.p.latency) / b.latencyMs],
    ['accuracy', b.maxPplIncrease > 0 ? (b.maxPplIncrease - s.p.accuracy) / b.maxPplIncrease : 0],
  ];
  slack.sort((x, y) => x[1] - y[1]);
  const plan: Plan = {
    model: pr.model.hash,
    split: s.c.split,
    frontBits: s.c.frontBits,
    backBits: s.c.backBits,
    codec: s.c.codec,
    kvCodec: 'fp32',
    maxSeq: s.c.maxSeq,
    blockSize: blockOf(pr, s.c),
    ...(s.c.headBits !== undefined && s.c.headBits !== 32 ? { headBits: s.c.headBits } : {}),
    ...(s.c.embedBits !== undefined && s.c.embedBits !== 32 ? { embedBits: s.c.embedBits } : {}),
    prefillChunk: s.p.prefillChunk,
    ...(s.p.speculation ? { speculate: s.p.speculation.proposer, draftTokens: s.p.speculation.draftTokens } : {}),
    predicted: {
      memory: s.p.memory,
      latency: s.p.latency,
      accuracy: s.p.accuracy,
      bytesPerToken: s.p.bytesPerToken,
      firstTokenMs: s.p.firstTokenMs,
      ...(s.p.speculation ? { tokensPerRound: s.p.speculation.tokensPerRound, plainLatency: s.p.speculation.plainLatency } : {}),
    },
  };
  return { plan, predicted: s.p, tight: slack[0]![0] };
}

/** Which budget binds, and the smallest relaxation of it that lets some configuration through. */
export function diagnose(pr: Problem, all: Scored[]): Infeasible {
  const b = pr.budgets;
  const need = { memory: Infinity, latency: Infinity, accuracy: Infinity };
  for (const s of all) {
    if (s.c.maxSeq < (b.minSeq ?? 0) || Number.isNaN(s.p.accuracy)) continue;
    const okM = s.p.memory <= b.edgeMemory;
    const okL = s.p.latency <= b.latencyMs;
    const okA = s.p.accuracy <= b.maxPplIncrease;
    if (okL && okA) need.memory = Math.min(need.memory, s.p.memory);
    if (okM && okA) need.latency = Math.min(need.latency, s.p.latency);
    if (okM && okL) need.accuracy = Math.min(need.accuracy, s.p.accuracy);
  }
  const rel: [Constraint, number, number, number][] = [
    ['memory', need.memory / b.edgeMemory, b.edgeMemory, need.memory],
    ['latency', need.latency / b.latencyMs, b.latencyMs, need.latency],
    ['accuracy', b.maxPplIncrease > 0 ? need.accuracy / b.maxPplIncrease : need.accuracy + 1, b.maxPplIncrease, need.accuracy],
  ];
  rel.sort((x, y) => x[1] - y[1]);
  const [binding, , from, to] = rel[0]!;
  return { binding, relaxation: { constraint: binding, from, to } };
}

/** The quantization blocks a search considers: the candidates', else the problem's one block. */
export function blockCandidates(pr: Problem): number[] {
  return pr.candidates.blockSizes?.length ? pr.candidates.blockSizes : [blockOf(pr, {})];
}

/**
 * Every configuration but its sequence length: split × front bits × back bits × codec × head bits × embedding
 * bits × block, less those that differ only in what they do not use.
 */
function* shapes(pr: Problem): Generator<Omit<Config, 'maxSeq'>> {
  const { splits, bits, codecs } = pr.candidates;
  const heads = pr.candidates.headBits ?? [32];
  const embeds = pr.candidates.embedBits ?? [32];
  const blocks = blockCandidates(pr);
  const top = Math.max(...bits);
  for (const split of splits) {
    // with no front (or no back) layers the front (back) precision changes nothing: one value stands for all
    for (const frontBits of split === 0 ? [top] : bits) {
      for (const backBits of split === pr.model.nLayers ? [top] : pr.candidates.sameBits && split > 0 ? [frontBits] : bits) {
        for (const codec of codecs) {
          for (const headBits of heads) {
            for (const embedBits of embeds) {
              for (const blockSize of blocks) {
                const shape = { split, frontBits, backBits, codec, ...(headBits !== 32 ? { headBits } : {}), ...(embedBits !== 32 ? { embedBits } : {}), blockSize };
                // one that quantizes nothing blockwise is the same at every block: the first block stands for all
                if (blockSize === blocks[0] || quantizesBlockwise(pr.model, shape)) yield shape;
              }
            }
          }
        }
      }
    }
  }
}

/**
 * All configurations with the longest fitting sequence per (split, bits, codec, head and embedding bits,
 * block) — where none fits, the shortest that still holds the budgets' minSeq, for diagnosis; `evaluated`
 * counts every one.
 */
export function enumerate(pr: Problem): { all: Scored[]; evaluated: number } {
  const seqs = [...pr.candidates.seqLens].sort((a, b) => b - a);
  const all: Scored[] = [];
  let evaluated = 0;
  for (const shape of shapes(pr)) {
    let chosen: Scored | undefined;
    for (const maxSeq of seqs) {
      const c: Config = { ...shape, maxSeq };
      const s = { c, p: predict(pr, c) };
      evaluated++;
      const holds = c.maxSeq >= (pr.budgets.minSeq ?? 0);
      if (s.p.memory <= pr.budgets.edgeMemory) {
        // a fit too short for minSeq does not replace the shortest one that holds it
        if (holds || !chosen) chosen = s;
        break;
      }
      // kept for diagnosis when none fits: the shortest that still holds minSeq (the least memory a valid plan needs)
      if (holds || !chosen) chosen = s;
    }
    if (chosen) all.push(chosen);
  }
  return { all, evaluated };
}

/**
 * Planning strategies behind one interface: `exhaustive` (joint search over split, front bits, back
 * bits, codec and maximum sequence length) and `coordinate` (block-coordinate descent over the same
 * variables, moving the block with the best improvement next, from a few starting points).
 * Objective: the lowest predicted per-token latency among plans within every budget; ties go to the
 * smaller accuracy loss, then to the longer sequence. The sequence length of a plan is the longest
 * candidate its memory allows.
 */
import type { Plan } from '../shared/plan.js';
import { predict, type Config } from './cost.js';
import type { Constraint, Infeasible, PlanResult, Prediction, Problem, RankedPlan, Strategy } from './types.js';

interface Scored {
  c: Config;
  p: Prediction;
}

function feasible(pr: Problem, s: Scored): boolean {
  const b = pr.budgets;
  return s.p.memory <= b.edgeMemory && s.p.latency <= b.latencyMs && s.p.accuracy <= b.maxPplIncrease && s.c.maxSeq >= (b.minSeq ?? 0);
}

/** Lexicographic: latency, then accuracy loss, then (longer) sequence. */
function better(a: Scored, b: Scored): boolean {
  if (a.p.latency !== b.p.latency) return a.p.latency < b.p.latency;
  if (a.p.accuracy !== b.p.accuracy) return a.p.accuracy < b.p.accuracy;
  return a.c.maxSeq > b.c.maxSeq;
}

function toRanked(pr: Problem, s: Scored): RankedPlan {
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
    blockSize: pr.blockSize ?? 32,
    predicted: { memory: s.p.memory, latency: s.p.latency, accuracy: s.p.accuracy, bytesPerToken: s.p.bytesPerToken, firstTokenMs: s.p.firstTokenMs },
  };
  return { plan, predicted: s.p, tight: slack[0]![0] };
}

/** Which budget binds, and the smallest relaxation of it that lets some configuration through. */
function diagnose(pr: Problem, all: Scored[]): Infeasible {
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

/** All configurations with the longest fitting sequence per (split, bits, codec); `evaluated` counts every one. */
function enumerate(pr: Problem): { all: Scored[]; evaluated: number } {
  const { splits, bits, codecs, seqLens } = pr.candidates;
  const seqs = [...seqLens].sort((a, b) => b - a);
  const all: Scored[] = [];
  let evaluated = 0;
  const top = Math.max(...bits);
  for (const split of splits) {
    // with no front (or no back) layers the front (back) precision changes nothing: one value stands for all
    for (const frontBits of split === 0 ? [top] : bits) {
      for (const backBits of split === pr.model.nLayers ? [top] : bits) {
        for (const codec of codecs) {
          let chosen: Scored | undefined;
          for (const maxSeq of seqs) {
            const s = { c: { split, frontBits, backBits, codec, maxSeq }, p: predict(pr, { split, frontBits, backBits, codec, maxSeq }) };
            evaluated++;
            chosen ??= s; // the longest, kept for diagnosis when none fits
            if (s.p.memory <= pr.budgets.edgeMemory) {
              chosen = s;
              break;
            }
          }
          if (chosen) all.push(chosen);
        }
      }
    }
  }
  return { all, evaluated };
}

export const exhaustive: Strategy = {
  name: 'exhaustive',
  solve(pr, limit = 5) {
    const { all, evaluated } = enumerate(pr);
    const ok = all.filter((s) => feasible(pr, s));
    ok.sort((a, b) => (better(a, b) ? -1 : better(b, a) ? 1 : 0));
    if (ok.length === 0) return { plans: [], infeasible: diagnose(pr, all), evaluated };
    return { plans: ok.slice(0, limit).map((s) => toRanked(pr, s)), evaluated };
  },
};

/** Penalized objective for the descent: latency plus a large cost per unit of budget violation. */
function penalty(pr: Problem, s: Scored): number {
  const b = pr.budgets;
  const v =
    Math.max(0, s.p.memory / b.edgeMemory - 1) +
    Math.max(0, s.p.latency / b.latencyMs - 1) +
    (Number.isNaN(s.p.accuracy) ? 10 : Math.max(0, (s.p.accuracy - b.maxPplIncrease) / Math.max(b.maxPplIncrease, 1e-3))) +
    (s.c.maxSeq < (b.minSeq ?? 0) ? 1 : 0);
  return s.p.latency + 1e6 * v - 1e-6 * s.c.maxSeq;
}

export const coordinate: Strategy = {
  name: 'coordinate',
  solve(pr, limit = 5) {
    const { splits, bits, codecs, seqLens } = pr.candidates;
    const blocks: { key: keyof Config; values: (number | string)[] }[] = [
      { key: 'split', values: splits },
      { key: 'frontBits', values: bits },
      { key: 'backBits', values: bits },
      { key: 'codec', values: codecs },
      { key: 'maxSeq', values: seqLens },
    ];
    let evaluated = 0;
    const score = (c: Config): Scored => {
      evaluated++;
      return { c, p: predict(pr, c) };
    };
    const seen = new Map<string, Scored>();
    const starts: Config[] = [];
    const minBits = Math.min(...bits);
    const maxBits = Math.max(...bits);
    const minSeq = Math.min(...seqLens);
    for (const split of [splits[0]!, splits[Math.floor(splits.length / 2)]!, splits[splits.length - 1]!]) {
      starts.push({ split, frontBits: minBits, backBits: maxBits, codec: codecs[0]!, maxSeq: minSeq });
      starts.push({ split, frontBits: maxBits, backBits: maxBits, codec: codecs[codecs.length - 1]!, maxSeq: minSeq });
    }
    for (const start of starts) {
      let cur = score(start);
      for (let iter = 0; iter < 50; iter++) {
        // try the best move within every block; take the block whose move helps most
        let bestMove: Scored | undefined;
        for (const blk of blocks) {
          for (const v of blk.values) {
            if (cur.c[blk.key] === v) continue;
            const cand = score({ ...cur.c, [blk.key]: v } as Config);
            if (penalty(pr, cand) < penalty(pr, bestMove ?? cur)) bestMove = cand;
          }
        }
        if (!bestMove) break;
        cur = bestMove;
      }
      // the longest sequence that still fits, as the exhaustive search reports it
      for (const maxSeq of [...seqLens].sort((a, b) => b - a)) {
        const s = score({ ...cur.c, maxSeq });
        if (feasible(pr, s)) {
          cur = s;
          break;
        }
      }
      seen.set(JSON.stringify(cur.c), cur);
    }
    const ok = [...seen.values()].filter((s) => feasible(pr, s));
    ok.sort((a, b) => (better(a, b) ? -1 : better(b, a) ? 1 : 0));
    if (ok.length === 0) {
      const { all } = enumerate(pr);
      return { plans: [], infeasible: diagnose(pr, all), evaluated };
    }
    return { plans: ok.slice(0, limit).map((s) => toRanked(pr, s)), evaluated };
  },
};

export const STRATEGIES: Record<string, Strategy> = { exhaustive, coordinate };

export type { PlanResult };

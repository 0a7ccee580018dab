/**
 * Coordinate: block-coordinate descent over split, front bits, back bits, codec, sequence length, head and
 * embedding bits and quantization block,
 * moving the block with the best improvement next, from a few starting points.
 */
import { predict, type Config } from '../cost.js';
import { blockCandidates, diagnose, enumerate, feasible, rank, toRanked, type Scored } from '../search.js';
import type { Problem, Strategy } from '../types.js';

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
    const blockSizes = blockCandidates(pr);
    const blocks: { key: keyof Config; values: (number | string)[] }[] = [
      { key: 'split', values: splits },
      { key: 'frontBits', values: bits },
      // one precision for both segments: a move of the front's bits moves the back's with it (`score`)
      ...(pr.candidates.sameBits ? [] : [{ key: 'backBits' as const, values: bits }]),
      { key: 'codec', values: codecs },
      { key: 'maxSeq', values: seqLens },
      ...((pr.candidates.headBits?.length ?? 0) > 1 ? [{ key: 'headBits' as const, values: pr.candidates.headBits! }] : []),
      ...((pr.candidates.embedBits?.length ?? 0) > 1 ? [{ key: 'embedBits' as const, values: pr.candidates.embedBits! }] : []),
      ...(blockSizes.length > 1 ? [{ key: 'blockSize' as const, values: blockSizes }] : []),
    ];
    // what a start leaves unset: the float head and embedding, the first block
    const unset: Partial<Record<keyof Config, number>> = { headBits: 32, embedBits: 32, blockSize: blockSizes[0] };
    let evaluated = 0;
    const score = (given: Config): Scored => {
      evaluated++;
      const c = pr.candidates.sameBits ? { ...given, backBits: given.frontBits } : given;
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
            if ((cur.c[blk.key] ?? unset[blk.key]) === v) continue;
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
    if (ok.length === 0) {
      const { all } = enumerate(pr);
      return { plans: [], infeasible: diagnose(pr, all), evaluated };
    }
    return { plans: rank(ok, limit).map((s) => toRanked(pr, s)), evaluated };
  },
};

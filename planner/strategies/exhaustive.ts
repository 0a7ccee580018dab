/** Exhaustive: every (split, front bits, back bits, codec), each with the longest sequence its memory allows. */
import { diagnose, enumerate, feasible, rank, toRanked } from '../search.js';
import type { Strategy } from '../types.js';

export const exhaustive: Strategy = {
  name: 'exhaustive',
  solve(pr, limit = 5) {
    const { all, evaluated } = enumerate(pr);
    const ok = all.filter((s) => feasible(pr, s));
    if (ok.length === 0) return { plans: [], infeasible: diagnose(pr, all), evaluated };
    return { plans: rank(ok, limit).map((s) => toRanked(pr, s)), evaluated };
  },
};

/** Exhaustive: every (split, front bits, back bits, codec), each with the longest sequence its memory allows. */
import { better, diagnose, enumerate, feasible, toRanked } from '../search.js';
import type { Strategy } from '../types.js';

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

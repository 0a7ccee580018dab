/**
 * Prompt lookup (`ngram`): the longest suffix of the history (up to `maxN` tokens, at least `minN`) that
 * occurred before; the tokens that followed its latest earlier occurrence are the draft. No weights, and a
 * deterministic draft (one-hot q). Text that repeats itself — a quoted passage, code, lists — drafts well;
 * text that does not gets no draft at all (the step then goes as a plain one).
 */
import { SplitLLMError } from '../../shared/errors.js';
import type { DraftProposer, ProposerDefinition } from './proposer.js';

export function ngramPropose(history: readonly number[], k: number, maxN = 4, minN = 2): number[] {
  const n = history.length;
  for (let len = Math.min(maxN, n - 1); len >= minN; len--) {
    // the latest earlier occurrence of the last `len` tokens
    for (let start = n - len - 1; start >= 0; start--) {
      let same = true;
      for (let j = 0; j < len; j++) {
        if (history[start + j] !== history[n - len + j]) {
          same = false;
          break;
        }
      }
      if (!same) continue;
      const from = start + len;
      const out = history.slice(from, Math.min(from + k, n));
      if (out.length > 0) return out;
    }
  }
  return [];
}

export const ngramProposer: ProposerDefinition = {
  name: 'ngram',
  summary: 'prompt lookup: continue the longest earlier repeat of the last 2–4 tokens (no weights)',
  create(arg) {
    const maxN = arg === undefined ? 4 : Number(arg);
    if (!Number.isInteger(maxN) || maxN < 2 || maxN > 16) throw new SplitLLMError('E_USAGE', `--speculate ngram:${arg}: the n-gram length must be an integer in 2..16`);
    const p: DraftProposer = { name: `ngram:${maxN}`, propose: (history, k) => ({ tokens: ngramPropose(history, k, maxN) }) };
    return p;
  },
};

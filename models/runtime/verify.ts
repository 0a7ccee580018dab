/**
 * Speculative verification (the cloud's side of a `draft`): the target model's logits for the fed token
 * and its k drafts, rows [k+1, V], decide how many drafts stand and which token follows them.
 *
 * - temperature 0: a draft stands while it is the argmax of the row before it; the next token is the
 *   argmax after the last one standing — token for token what generation without drafts gives.
 * - sampling: the standard speculative-sampling rule. Draft d with draft distribution q (a one-hot q for a
 *   deterministic proposer such as `ngram`) stands with probability min(1, p(d) / q(d)); at the first
 *   rejection the token is drawn from the normalized residual max(0, p − q); when all stand, the next is
 *   drawn from the row after the last. The output distribution is the target model's exactly.
 * Pure TypeScript (the browser edge and the cloud share it).
 */
import { argmax, type Sampler } from './sampler.js';

export interface Verdict {
  /** drafts that stand (0..k) */
  accepted: number;
  /** the token after them */
  next: number;
}

/** `logits`: rows for the fed token and each draft; `q[i]`: the proposer's distribution for draft i (undefined: one-hot). */
export function verifyDrafts(sampler: Sampler, logits: Float32Array, vocab: number, drafts: readonly number[], q?: readonly (ArrayLike<number> | undefined)[]): Verdict {
  const k = drafts.length;
  if (sampler.greedy) {
    for (let i = 0; i < k; i++) {
      const y = argmax(logits, i * vocab, vocab);
      if (y !== drafts[i]) return { accepted: i, next: y };
    }
    return { accepted: k, next: argmax(logits, k * vocab, vocab) };
  }
  for (let i = 0; i < k; i++) {
    const d = drafts[i]!;
    const p = sampler.probabilities(logits, i * vocab, vocab);
    const qi = q?.[i];
    const qd = qi ? qi[d]! : 1;
    if (qd > 0 && sampler.uniform() < Math.min(1, p[d]! / qd)) continue;
    // rejected: draw from max(0, p − q), normalized (a one-hot q removes d alone)
    const residual = new Float64Array(vocab);
    let mass = 0;
    for (let v = 0; v < vocab; v++) {
      const r = Math.max(0, p[v]! - (qi ? qi[v]! : v === d ? 1 : 0));
      residual[v] = r;
      mass += r;
    }
    return { accepted: i, next: mass > 0 ? sampler.draw(residual) : sampler.draw(p) };
  }
  return { accepted: k, next: sampler.sample(logits, k * vocab, vocab) };
}

/** A sparse draft distribution with integer weights (the wire's `draft.q`). */
export interface SparseDistribution {
  ids: number[];
  weights: number[];
}

/**
 * The `support` most likely tokens of `p`, as integer weights summing to `scale` (largest remainder): the
 * distribution a sampling draft model draws from and sends, so that edge and cloud use the same q exactly.
 * Tokens whose share rounds to nothing are left out.
 */
export function sparseDistribution(p: ArrayLike<number>, support: number, scale: number): SparseDistribution {
  const order = Array.from({ length: p.length }, (_, i) => i)
    .filter((i) => p[i]! > 0)
    .sort((a, b) => p[b]! - p[a]! || a - b)
    .slice(0, Math.max(1, support));
  const mass = order.reduce((s, i) => s + p[i]!, 0);
  const exact = order.map((i) => (p[i]! / mass) * scale);
  const weights = exact.map(Math.floor);
  let left = scale - weights.reduce((a, b) => a + b, 0);
  const byRemainder = exact.map((x, j) => [x - Math.floor(x), j] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (let r = 0; left > 0; r = (r + 1) % byRemainder.length, left--) weights[byRemainder[r]![1]]!++;
  const ids: number[] = [];
  const kept: number[] = [];
  order.forEach((id, j) => {
    if (weights[j]! > 0) {
      ids.push(id);
      kept.push(weights[j]!);
    }
  });
  return { ids, weights: kept };
}

/** The token a uniform draw `u` ∈ [0, 1) picks from a sparse distribution. */
export function drawSparse(q: SparseDistribution, u: number, scale: number): number {
  let at = u * scale;
  for (let j = 0; j < q.ids.length; j++) {
    at -= q.weights[j]!;
    if (at < 0) return q.ids[j]!;
  }
  return q.ids[q.ids.length - 1]!;
}

/** A sparse distribution as a dense one over the vocabulary. */
export function denseDistribution(q: SparseDistribution, vocab: number, scale: number): Float64Array {
  const out = new Float64Array(vocab);
  q.ids.forEach((id, j) => {
    out[id] = q.weights[j]! / scale;
  });
  return out;
}

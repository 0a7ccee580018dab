/**
 * The edge's memory policy, used when a session starts and before every step: front weights plus the
 * KV cache of its layers (as quantization/weights/memory.ts accounts them) must stay within the budget;
 * when they would not, the split moves down to the largest one that fits.
 */
import { SplitLLMError } from '../shared/errors.js';
import type { ModelConfig } from '../models/manifest.js';
import { segmentBytes } from '../quantization/weights/memory.js';

/** Bytes the edge holds at split `split` with `positions` positions in its KV cache. */
export function edgeBytes(c: ModelConfig, frontBits: number, split: number, positions: number): number {
  const b = segmentBytes(c, 0, split, { embed: true, head: false, bitsOf: () => frontBits });
  return b.total + positions * b.kvPerToken;
}

/**
 * The largest split ≤ `highest` at which `positions` positions fit `budget` bytes. Throws a typed error
 * when not even the embedding alone fits.
 */
export function splitWithinBudget(c: ModelConfig, frontBits: number, budget: number, positions: number, highest: number): number {
  let k = Math.max(0, highest);
  while (k > 0 && edgeBytes(c, frontBits, k, positions) > budget) k--;
  if (edgeBytes(c, frontBits, k, positions) > budget) {
    throw new SplitLLMError('E_BAD_ARGUMENT', `the edge budget of ${budget} bytes cannot hold the embedding and ${positions} positions at any split: raise --edge-memory`);
  }
  return k;
}

/**
 * The split to move to before the next step, or undefined to stay: with one position of slack, the next
 * step must fit at the current split, else the split moves down.
 */
export function splitBeforeStep(c: ModelConfig, frontBits: number, budget: number, split: number, cached: number): number | undefined {
  const positions = cached + 2;
  if (edgeBytes(c, frontBits, split, positions) <= budget) return undefined;
  return splitWithinBudget(c, frontBits, budget, positions, split - 1);
}

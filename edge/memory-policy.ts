/**
 * The edge's memory policy, used when a session starts and before every step: what the front holds —
 * by the planner's own rule (quantization/weights/memory.ts `heldBytes`: the front's weights at their
 * precision, its KV cache with growth room, one step's activations) — must stay within the budget;
 * when it would not, the split moves down to the largest one that fits.
 */
import { SplitLLMError } from '../shared/errors.js';
import { DEFAULT_BLOCK_SIZE } from '../shared/precision.js';
import { heldBytes, segmentBytes, type QuantizedBytes, type ShapeConfig } from '../quantization/weights/memory.js';

/** The front's weights as the accounting needs them (defaults: float32 layers and embedding). */
export interface FrontWeights {
  /** the front layers' weight bits (default 32) */
  bits?: number;
  blockSize?: number;
  /** the token embedding's bits (default 32: float, in the package's stored type) */
  embedBits?: number;
  /** the weight strategy's byte accounting of a quantized linear (default: blockwise RTN) */
  quantized?: QuantizedBytes;
}

/** Bytes the edge holds at split `split` with `positions` positions in its KV cache. */
export function edgeBytes(c: ShapeConfig, w: FrontWeights, split: number, positions: number): number {
  const seg = segmentBytes(c, 0, split, { embed: true, head: false, bitsOf: () => w.bits ?? 32, blockSize: w.blockSize ?? DEFAULT_BLOCK_SIZE, embedBits: w.embedBits, quantized: w.quantized });
  return heldBytes(c, seg, positions);
}

/**
 * The largest split ≤ `highest` at which `positions` positions fit `budget` bytes. Throws a typed error
 * when not even the embedding alone fits.
 */
export function splitWithinBudget(c: ShapeConfig, w: FrontWeights, budget: number, positions: number, highest: number): number {
  let k = Math.max(0, highest);
  while (k > 0 && edgeBytes(c, w, k, positions) > budget) k--;
  if (edgeBytes(c, w, k, positions) > budget) {
    throw new SplitLLMError('E_BAD_ARGUMENT', `the edge budget of ${budget} bytes cannot hold the embedding and ${positions} positions at any split (${edgeBytes(c, w, 0, positions)} bytes at split 0): raise --edge-memory`);
  }
  return k;
}

/**
 * The split to move to before the next step, or undefined to stay: with one position of slack, the next
 * step must fit at the current split, else the split moves down.
 */
export function splitBeforeStep(c: ShapeConfig, w: FrontWeights, budget: number, split: number, cached: number): number | undefined {
  const positions = cached + 2;
  if (edgeBytes(c, w, split, positions) <= budget) return undefined;
  return splitWithinBudget(c, w, budget, positions, split - 1);
}

/** Token sampling: greedy, temperature, top-k, top-p, seeded. Pure TypeScript. */
import { SplitLLMError } from '../../shared/errors.js';

export interface SamplingOptions {
  /** 0 means greedy (argmax). */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export function validateSampling(o: SamplingOptions): Required<SamplingOptions> {
  const t = o.temperature ?? 0;
  const k = o.topK ?? 0;
  const p = o.topP ?? 1;
  if (!(t >= 0) || !Number.isFinite(t)) throw new SplitLLMError('E_BAD_ARGUMENT', `temperature ${o.temperature} must be ≥ 0`);
  if (!Number.isInteger(k) || k < 0) throw new SplitLLMError('E_BAD_ARGUMENT', `top-k ${o.topK} must be a non-negative integer (0 = off)`);
  if (!(p > 0 && p <= 1)) throw new SplitLLMError('E_BAD_ARGUMENT', `top-p ${o.topP} must be in (0, 1]`);
  return { temperature: t, topK: k, topP: p, seed: o.seed ?? 0x5eed };
}

export { rng } from '../../shared/random.js';
import { rng } from '../../shared/random.js';

export function argmax(x: Float32Array, offset = 0, n = x.length - offset): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = x[offset + i]!;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

export class Sampler {
  private readonly opts: Required<SamplingOptions>;
  private readonly random: () => number;

  constructor(opts: SamplingOptions = {}) {
    this.opts = validateSampling(opts);
    this.random = rng(this.opts.seed);
  }

  get greedy(): boolean {
    return this.opts.temperature === 0;
  }

  /** A uniform draw in [0, 1) from this sampler's seeded stream (speculative acceptance tests). */
  uniform(): number {
    return this.random();
  }

  /**
   * The distribution `sample` draws from, over the whole vocabulary (zero outside top-k / top-p), for
   * temperature > 0: what speculative verification compares drafts against.
   */
  probabilities(logits: Float32Array, offset = 0, vocab = logits.length - offset): Float64Array {
    const { ids, probs, sum } = this.filtered(logits, offset, vocab);
    const out = new Float64Array(vocab);
    for (let j = 0; j < ids.length; j++) out[ids[j]!] = probs[j]! / sum;
    return out;
  }

  /** Draws an id from unnormalized weights `w` (≥ 0, not all zero). */
  draw(w: ArrayLike<number>): number {
    let sum = 0;
    for (let i = 0; i < w.length; i++) sum += w[i]!;
    let r = this.random() * sum;
    let last = 0;
    for (let i = 0; i < w.length; i++) {
      if (w[i]! <= 0) continue;
      last = i;
      r -= w[i]!;
      if (r <= 0) return i;
    }
    return last;
  }

  private filtered(logits: Float32Array, offset: number, vocab: number): { ids: number[]; probs: number[]; sum: number } {
    const { temperature, topK, topP } = this.opts;
    let ids = Array.from({ length: vocab }, (_, i) => i);
    ids.sort((a, b) => logits[offset + b]! - logits[offset + a]!);
    if (topK > 0) ids = ids.slice(0, topK);
    const maxL = logits[offset + ids[0]!]!;
    let probs = ids.map((i) => Math.exp((logits[offset + i]! - maxL) / temperature));
    let sum = probs.reduce((a, b) => a + b, 0);
    if (topP < 1) {
      let acc = 0;
      let cut = ids.length;
      for (let j = 0; j < ids.length; j++) {
        acc += probs[j]! / sum;
        if (acc >= topP) {
          cut = j + 1;
          break;
        }
      }
      ids = ids.slice(0, cut);
      probs = probs.slice(0, cut);
      sum = probs.reduce((a, b) => a + b, 0);
    }
    return { ids, probs, sum };
  }

  /** Picks a token from logits[offset .. offset+vocab). */
  sample(logits: Float32Array, offset = 0, vocab = logits.length - offset): number {
    const { temperature } = this.opts;
    if (temperature === 0) return argmax(logits, offset, vocab);
    const { ids, probs, sum } = this.filtered(logits, offset, vocab);
    let r = this.random() * sum;
    for (let j = 0; j < ids.length; j++) {
      r -= probs[j]!;
      if (r <= 0) return ids[j]!;
    }
    return ids[ids.length - 1]!;
  }
}

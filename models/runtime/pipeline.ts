/**
 * Segments chained in one process: [0,k1) → [k1,k2) → … → [kn,L). Used by local generation, perplexity
 * evaluation and as the reference the split runtime must match. A `between` hook sees (and may replace)
 * each hidden state that crosses a boundary — that is where a codec sits on the wire.
 */
import { checkSplit, SplitLLMError } from '../../shared/errors.js';
import type { ModelPackage } from '../package.js';
import { Sampler, type SamplingOptions } from './sampler.js';
import { SegmentRuntime, type RuntimeOptions, type SegmentOutput } from './segment-runtime.js';

export type BoundaryHook = (hidden: Float32Array, tokens: number, boundary: number) => Float32Array;

export class Pipeline {
  constructor(
    readonly pkg: ModelPackage,
    readonly segments: SegmentRuntime[],
    public between?: BoundaryHook,
  ) {}

  /** Builds segments at the given split points (none: the whole model as one segment). */
  static async create(pkg: ModelPackage, splits: number[] = [], opts: RuntimeOptions = {}): Promise<Pipeline> {
    const L = pkg.config.nLayers;
    for (const s of splits) checkSplit(s, L);
    const points = [0, ...[...splits].sort((a, b) => a - b), L];
    const segs: SegmentRuntime[] = [];
    const n = points.length - 1;
    for (let i = 0; i < n; i++) {
      // one session running alone may spin between ops; several take turns and must not
      segs.push(await SegmentRuntime.create(pkg, points[i]!, points[i + 1]!, { spin: n === 1 ? 'alone' : 'turns', ...opts, embed: i === 0, head: i === n - 1 }));
    }
    return new Pipeline(pkg, segs);
  }

  get length(): number {
    return this.segments[0]!.length;
  }

  /** Runs T tokens through every segment; returns logits [T, V]. */
  async forward(ids: ArrayLike<number>, opts: { keepCache?: boolean } = {}): Promise<SegmentOutput> {
    let out = await this.segments[0]!.run(ids, ids.length, opts);
    for (let s = 1; s < this.segments.length; s++) {
      let h = out.data;
      if (this.between) h = this.between(h, ids.length, this.segments[s]!.from);
      out = await this.segments[s]!.run(h, ids.length, opts);
    }
    return out;
  }

  reset(): void {
    for (const s of this.segments) s.reset();
  }

  async release(): Promise<void> {
    for (const s of this.segments) await s.release();
  }
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens: number;
  /** token ids that end generation (default: EOS and BOS, which llama2.c models emit between stories) */
  stopIds?: number[];
  onToken?: (id: number) => void;
}

/** Prefills `promptIds` and samples up to maxTokens new ids (the stop id is not included). */
export async function generate(p: Pipeline, promptIds: number[], opts: GenerateOptions): Promise<number[]> {
  const c = p.pkg.config;
  if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 0) throw new SplitLLMError('E_BAD_ARGUMENT', `max tokens ${opts.maxTokens} must be a non-negative integer`);
  if (promptIds.length === 0) throw new SplitLLMError('E_BAD_ARGUMENT', 'the prompt must hold at least the BOS token');
  if (promptIds.length + opts.maxTokens > c.maxSeq) {
    throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `prompt (${promptIds.length} tokens) plus --max-tokens ${opts.maxTokens} passes the model's maximum sequence of ${c.maxSeq}: lower --max-tokens`);
  }
  const sampler = new Sampler(opts);
  const stop = new Set(opts.stopIds ?? [c.eosId, c.bosId]);
  const outIds: number[] = [];
  p.reset();
  let logits = await p.forward(promptIds);
  for (let n = 0; n < opts.maxTokens; n++) {
    const next = sampler.sample(logits.data, (logits.tokens - 1) * c.vocabSize, c.vocabSize);
    if (stop.has(next)) break;
    outIds.push(next);
    opts.onToken?.(next);
    if (n + 1 === opts.maxTokens) break;
    logits = await p.forward([next]);
  }
  return outIds;
}

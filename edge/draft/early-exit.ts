/**
 * Early exit (`--speculate early-exit`): the edge's own front layers, then the model's final norm and LM
 * head, are the draft model — no second model to ship, train or keep in memory beyond the head. Drafting
 * k tokens runs the front on the fed token and on each draft in turn (their hidden states are exactly the
 * draft frame's payload, so nothing runs twice) and the head on each state to pick the next draft.
 *
 * Each draft is drawn from the head's output on the hidden state as the cloud will decode it (the codec's
 * round trip), with the session's sampling settings; the cloud recomputes that distribution from the
 * states it received (`draft.exit`) for the acceptance test, so q never crosses the link. At temperature 0
 * the drafts are the argmax.
 */
import { SplitLLMError } from '../../shared/errors.js';
import type { ModelPackage } from '../../models/package.js';
import type { Sampler } from '../../models/runtime/sampler.js';
import { SegmentRuntime } from '../../models/runtime/segment-runtime.js';
import type { DraftProposer, Proposal, ProposerDefinition, ProposerContext } from './proposer.js';

export class EarlyExitDrafter implements DraftProposer {
  readonly name = 'early-exit';
  readonly exit = true;
  private constructor(
    private readonly pkg: ModelPackage,
    /** the final norm and head alone: no layers, no cache, so the requests of a service share it */
    private readonly head: SegmentRuntime,
  ) {}

  static async create(pkg: ModelPackage, threads?: number): Promise<EarlyExitDrafter> {
    const L = pkg.config.nLayers;
    return new EarlyExitDrafter(pkg, await SegmentRuntime.create(pkg, L, L, { embed: false, head: true, threads }));
  }

  /** Not used: early exit drafts through `draftWithFront`, which also yields the hidden states. */
  propose(): Proposal {
    throw new SplitLLMError('E_RUNTIME', 'early-exit drafts run through the front segment (draftWithFront)');
  }

  /**
   * Feeds `first` and then each draft through `front`, up to `k` drafts; returns the drafts and the hidden
   * states of the k + 1 fed positions [k+1, D]. `roundTrip` is the codec's encode → decode of one row;
   * `sampler` draws the drafts (the session's settings, its own seeded stream).
   */
  async draftWithFront(front: SegmentRuntime, first: number, k: number, roundTrip: (h: Float32Array) => Float32Array, sampler: Sampler): Promise<{ drafts: number[]; hidden: Float32Array }> {
    const D = this.pkg.config.dim;
    const V = this.pkg.config.vocabSize;
    const hidden = new Float32Array((k + 1) * D);
    const drafts: number[] = [];
    let token = first;
    for (let i = 0; i <= k; i++) {
      const h = await front.run([token], 1);
      hidden.set(h.data, i * D);
      if (i === k) break;
      const logits = await this.head.run(roundTrip(h.data), 1, { keepCache: false });
      token = sampler.sample(logits.data, 0, V);
      drafts.push(token);
    }
    return { drafts, hidden };
  }

  async release(): Promise<void> {
    await this.head.release();
  }
}

export const earlyExitProposer: ProposerDefinition = {
  name: 'early-exit',
  summary: "the front layers' own early exit: the final norm and LM head on the split's hidden state draft the next token",
  async create(arg: string | undefined, ctx?: ProposerContext) {
    if (arg !== undefined) throw new SplitLLMError('E_USAGE', `--speculate early-exit takes no argument (got "${arg}")`);
    if (!ctx) throw new SplitLLMError('E_USAGE', '--speculate early-exit needs the model: it runs on the edge');
    return EarlyExitDrafter.create(ctx.pkg, ctx.threads);
  },
};

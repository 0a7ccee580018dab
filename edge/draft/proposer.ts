/**
 * Draft proposers for speculative decoding: given the session's tokens so far (prompt and output), up to
 * `k` tokens likely to follow. A new proposer is one file exporting a `ProposerDefinition` and one entry
 * in registry.ts.
 */
import type { ModelPackage } from '../../models/package.js';
import type { SegmentRuntime } from '../../models/runtime/segment-runtime.js';
import type { Sampler } from '../../models/runtime/sampler.js';

export interface DraftProposer {
  readonly name: string;
  /**
   * Drafts from the split's hidden states (early exit): the drafts come with the front's states of the
   * fed positions, and the cloud recomputes their distribution (`draft.exit`).
   */
  readonly exit?: boolean;
  draftWithFront?(front: SegmentRuntime, first: number, k: number, roundTrip: (h: Float32Array) => Float32Array, sampler: Sampler): Promise<{ drafts: number[]; hidden: Float32Array }>;
  /** up to `k` tokens to follow `history` (none when it has no guess) */
  propose(history: readonly number[], k: number): number[] | Promise<number[]>;
  /** the distribution each proposed token was drawn from (undefined: deterministic, a one-hot) */
  distributions?(): (ArrayLike<number> | undefined)[] | undefined;
  release?(): Promise<void>;
}

/** What a proposer may need from the session it drafts for. */
export interface ProposerContext {
  pkg: ModelPackage;
  threads?: number;
}

export interface ProposerDefinition {
  /** the spec's name: `--speculate NAME[:ARG]` */
  name: string;
  summary: string;
  create(arg: string | undefined, ctx?: ProposerContext): DraftProposer | Promise<DraftProposer>;
}

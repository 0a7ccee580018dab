/**
 * Draft proposers for speculative decoding: given the session's tokens so far (prompt and output), up to
 * `k` tokens likely to follow. A new proposer is one file exporting a `ProposerDefinition` and one entry
 * in registry.ts.
 */
import type { ModelPackage } from '../../models/package.js';
import type { SegmentRuntime } from '../../models/runtime/segment-runtime.js';
import type { Sampler } from '../../models/runtime/sampler.js';
import type { SparseDistribution } from '../../models/runtime/verify.js';

/** The drafts of one step, with the distribution each was drawn from when it was sampled. */
export interface Proposal {
  tokens: number[];
  /** one per token (absent: the drafts are deterministic, q one-hot); weights sum to DRAFT_Q_SCALE */
  q?: SparseDistribution[];
}

export interface DraftProposer {
  readonly name: string;
  /**
   * Drafts from the split's hidden states (early exit): the drafts come with the front's states of the
   * fed positions, and the cloud recomputes their distribution (`draft.exit`).
   */
  readonly exit?: boolean;
  draftWithFront?(front: SegmentRuntime, first: number, k: number, roundTrip: (h: Float32Array) => Float32Array, sampler: Sampler): Promise<{ drafts: number[]; hidden: Float32Array }>;
  /** up to `k` tokens to follow `history` (none when it has no guess), drawn with `sampler`'s settings */
  propose(history: readonly number[], k: number, sampler: Sampler): Proposal | Promise<Proposal>;
  /**
   * A proposer with state per generation (a draft model's KV cache) opens one for each; the agent
   * releases it when the generation ends. Without `open` the proposer itself serves every generation.
   */
  open?(): Promise<DraftProposer>;
  release?(): Promise<void>;
}

/** What a proposer may need from the session it drafts for. */
export interface ProposerContext {
  pkg: ModelPackage;
  threads?: number;
  /** where a relative draft-model path is taken from (a plan's or profile's: the model's package); default the working directory */
  baseDir?: string;
}

export interface ProposerDefinition {
  /** the spec's name: `--speculate NAME[:ARG]` */
  name: string;
  summary: string;
  create(arg: string | undefined, ctx?: ProposerContext): DraftProposer | Promise<DraftProposer>;
}

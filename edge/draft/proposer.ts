/**
 * Draft proposers for speculative decoding: given the session's tokens so far (prompt and output), up to
 * `k` tokens likely to follow. A new proposer is one file exporting a `ProposerDefinition` and one entry
 * in registry.ts.
 */
export interface DraftProposer {
  readonly name: string;
  /** up to `k` tokens to follow `history` (none when it has no guess) */
  propose(history: readonly number[], k: number): number[] | Promise<number[]>;
  /** the distribution each proposed token was drawn from (undefined: deterministic, a one-hot) */
  distributions?(): (ArrayLike<number> | undefined)[] | undefined;
  release?(): Promise<void>;
}

export interface ProposerDefinition {
  /** the spec's name: `--speculate NAME[:ARG]` */
  name: string;
  summary: string;
  create(arg: string | undefined): DraftProposer | Promise<DraftProposer>;
}

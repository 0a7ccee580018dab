/**
 * Planning problems: profiles (measured), budgets, candidate values, and the plans a strategy returns.
 * Pure TypeScript: the CLI reads the profile files; strategies only compute.
 */
import type { Plan } from '../shared/plan.js';
import type { ShapeConfig } from '../quantization/weights/memory.js';

/** Per-layer decode latency (ms per token) at each weight precision, and the runtime's own memory. */
export interface ComputeProfile {
  model: string;
  /** ms per decode token of one decoder layer, by weight bits (keys "2", "4", "8", "16", "32") */
  layerDecodeMs: Record<string, number>;
  /** ms per decode token of the embedding (edge) and of the final norm + LM head (cloud) */
  embedMs: number;
  headMs: number;
  /** ms per decode token of the final norm + LM head by the head's weight bits (headMs is the float32 one) */
  headMsByBits?: Record<string, number>;
  /** ms per prompt token of one decoder layer in a prefill, by weight bits (decode latency stands in when absent) */
  layerPrefillMsPerToken?: Record<string, number>;
  /** resident bytes of the runtime before any segment is loaded */
  baselineBytes: number;
  /**
   * key: a quantization block other than 32 (the block of the entries above) → the quantized layers' and LM
   * head's latency at that block, for the precisions below 16 bits (float layers have no block)
   */
  blocks?: Record<string, BlockComputeProfile>;
}

/** Latency of blockwise-quantized layers and LM head at one quantization block (keys: weight bits below 16). */
export interface BlockComputeProfile {
  layerDecodeMs: Record<string, number>;
  layerPrefillMsPerToken?: Record<string, number>;
  headMsByBits?: Record<string, number>;
}

export interface LinkProfile {
  rttMs: number;
  bytesPerSec: number;
}

/** Accuracy of a configuration: ppl increase (fraction) by weights at a split and by codec at a split. */
export interface AccuracyProfile {
  model: string;
  /** key `${split}/${frontBits}/${backBits}` → ppl increase of the weights alone */
  weights: Record<string, number>;
  /** key `${split}/${codec}` → {ppl increase of the codec alone, bits per value} */
  codecs: Record<string, { pplIncrease: number; bitsPerValue: number }>;
  /** key `${headBits}` → ppl increase of the LM head at that precision alone (float32 layers) */
  heads?: Record<string, number>;
  /** key `${embedBits}` → ppl increase of the token embedding at that precision alone (float32 layers) */
  embeds?: Record<string, number>;
  /** how often each draft proposer's next token is the model's (`splitllm profile speculation`) */
  speculation?: SpeculationProfile[];
  /**
   * key: a quantization block other than 32 (the block of `weights` and `heads`) → the same measurements at
   * that block, for the configurations that quantize something (a layer or the head below 16 bits)
   */
  blocks?: Record<string, BlockAccuracyProfile>;
  /** present when the tables are an estimate (planner/measure-accuracy.ts): the splits it measured, on what text */
  estimate?: AccuracyEstimate;
}

export interface AccuracyEstimate {
  method: 'sampled-splits';
  splits: number[];
  tokens: number;
  seconds: number;
  /** the calibration text's file name and sha256 */
  text?: { name: string; sha256: string };
}

/** ppl increase of the blockwise-quantized configurations at one quantization block (keys as in AccuracyProfile). */
export interface BlockAccuracyProfile {
  weights: Record<string, number>;
  heads?: Record<string, number>;
}

/**
 * A draft proposer measured on text (teacher-forced): `acceptance` is the fraction of its drafts that are
 * the model's greedy token, `coverage` the fraction of positions it drafts at all (ngram: where the text
 * repeats). `proposer` is the `--speculate` spec; a draft model's path is relative to the model's package.
 */
export interface SpeculationProfile {
  proposer: string;
  /** early exit: the split it was measured at (its acceptance differs per split) */
  split?: number;
  acceptance: number;
  coverage: number;
  /** ms the proposer itself takes per drafted token (a draft model's decode step), measured beside the acceptance */
  draftMsPerToken: number;
  /** edge memory the proposer adds (a draft model: its weights and its KV for its positions, by the rule the cost model counts a segment with) */
  edgeBytes?: number;
}

export interface Budgets {
  edgeMemory: number;
  latencyMs: number;
  maxPplIncrease: number;
  /** the plan must hold at least this many positions (prompt + reply) */
  minSeq?: number;
  /** prompt length the time to first token is predicted for (default 1) */
  promptTokens?: number;
}

export interface Candidates {
  splits: number[];
  bits: number[];
  codecs: string[];
  seqLens: number[];
  /** the LM head's weight bits to consider (32 and those both the accuracy and the cloud's compute profile measured) */
  headBits?: number[];
  /** the token embedding's weight bits to consider (32 and those the accuracy profile measured) */
  embedBits?: number[];
  /** one precision for the layers of both segments (a naive split, as Petals and exo deploy a model) */
  sameBits?: boolean;
  /** quantization blocks to consider (default: the problem's blockSize); a plan that quantizes nothing takes the first */
  blockSizes?: number[];
}

export interface Problem {
  model: ShapeConfig & { hash: string };
  edge: ComputeProfile;
  cloud: ComputeProfile;
  link: LinkProfile;
  accuracy: AccuracyProfile;
  budgets: Budgets;
  candidates: Candidates;
  /** the quantization block when the candidates name none (default 32) */
  blockSize?: number;
  /** draft proposers the plan may use (from the accuracy profile); none: no speculation */
  speculation?: SpeculationProfile[];
  /** most drafts per step the plan may choose */
  maxDraft?: number;
}

export interface Prediction {
  memory: number;
  latency: number;
  accuracy: number;
  bytesPerToken: number;
  /** ms from the session's hello to the first token, for budgets.promptTokens prompt tokens */
  firstTokenMs: number;
  /** the prompt positions per prefill chunk that first-token time assumes */
  prefillChunk: number;
  /** speculative decoding where it lowers the per-token latency (which `latency` then is) */
  speculation?: { proposer: string; draftTokens: number; tokensPerRound: number; plainLatency: number };
}

export interface RankedPlan {
  plan: Plan;
  predicted: Prediction;
  /** which budget is closest to binding (smallest slack, as a fraction of the budget) */
  tight: 'memory' | 'latency' | 'accuracy';
}

export type Constraint = 'memory' | 'latency' | 'accuracy';

export interface Infeasible {
  binding: Constraint;
  /** the smallest relaxation of the binding budget that makes some plan feasible */
  relaxation: { constraint: Constraint; from: number; to: number };
}

export interface PlanResult {
  plans: RankedPlan[];
  infeasible?: Infeasible;
  /** configurations evaluated */
  evaluated: number;
}

export interface Strategy {
  readonly name: string;
  solve(problem: Problem, limit?: number): PlanResult;
}

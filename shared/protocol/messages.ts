import { DEFAULT_BLOCK_SIZE } from '../precision.js';
/**
 * The edge ⇄ cloud messages (docs/PROTOCOL.md): the control header of each frame, as the rest of the
 * code sees it once `parseFrame` (parse.ts) has checked every field. Browser-safe: no imports.
 */

export const PROTOCOL_VERSION = 6;

/** Most draft tokens one `draft` frame may carry (it feeds one more position: the last accepted token). */
export const MAX_DRAFT = 16;

export interface SamplingParams {
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export interface Hello {
  type: 'hello';
  version: number;
  modelHash: string;
  split: number;
  codec: string;
  maxTokens: number;
  sampling?: SamplingParams;
  /** stop ids (default: EOS and BOS) */
  stopIds?: number[];
  /** weight bits of the cloud's back segment (OPSC; default 32) and their quantization block */
  backBits?: number;
  /** weight bits of the LM head on the cloud (default 32; RTN blockwise below 16, at blockSize) */
  headBits?: number;
  blockSize?: number;
  /** the secret a resume of this session must carry, chosen by the edge (128 random bits, base64url) so that it can resume before the ready arrives; default: the cloud draws one */
  resumeSecret?: string;
}
/** A hello's weight precisions with the protocol's defaults applied (float back and head, the default block): the one place they are. */
export function helloPrecision(h: Pick<Hello, 'backBits' | 'headBits' | 'blockSize'>): { backBits: number; headBits: number; blockSize: number } {
  return { backBits: h.backBits ?? 32, headBits: h.headBits ?? 32, blockSize: h.blockSize ?? DEFAULT_BLOCK_SIZE };
}

export interface Ready {
  type: 'ready';
  session: string;
  layers: number;
  split: number;
  maxSeq: number;
  /** positions the cloud's KV cache holds (0 for a new session) */
  length: number;
  /** answering a hello: the secret a resume of this session must carry (random; never in URLs or logs) */
  resumeSecret?: string;
}
/** Link measurement: the cloud answers a probe with a probe of `reply` payload bytes (at most 8 MiB). */
export interface Probe {
  type: 'probe';
  id: number;
  reply: number;
}
/** Re-attaches a dropped session; `position` = tokens the edge has fed through its front segment */
export interface Resume {
  type: 'resume';
  session: string;
  /** the session's resumeSecret from its first ready */
  secret: string;
  position: number;
}
/** hidden state [tokens, dim] of the prompt (prefill) or of one new token (step); payload: codec message */
export interface Prefill {
  type: 'prefill';
  /** positions in this frame */
  tokens: number;
  /** more of the prompt follows in further prefill frames (a chunk, run as it arrives; no token answers it) */
  more?: boolean;
}
export interface Step {
  type: 'step';
  /** the token the edge fed (for the cloud's bookkeeping) */
  token: number;
}
/**
 * Speculative step: hidden states [tokens, dim] of the last accepted token (`token`) and the `drafts`
 * proposed to follow it (tokens = drafts + 1). The cloud verifies all of them in one run and answers with
 * `verified`; both sides then drop the positions of rejected drafts from their caches.
 */
export interface Draft {
  type: 'draft';
  tokens: number;
  token: number;
  drafts: number[];
  /** the drafts were drawn from the model's final norm and LM head on these hidden states (early exit): the cloud recomputes that distribution for the acceptance test */
  exit?: boolean;
  /** the distribution each draft was drawn from (a draft model that samples), one per draft; absent: one-hot (a deterministic draft) */
  q?: DraftDistribution[];
}
/**
 * A draft's distribution, sparse and exact: q(ids[i]) = weights[i] / DRAFT_Q_SCALE, 0 elsewhere. The weights
 * are positive integers summing to DRAFT_Q_SCALE, so edge and cloud hold the same q bit for bit.
 */
export interface DraftDistribution {
  ids: number[];
  weights: number[];
}
/** The total of a draft distribution's integer weights. */
export const DRAFT_Q_SCALE = 65536;
/** Most tokens one draft distribution may name. */
export const MAX_DRAFT_SUPPORT = 32;
/**
 * The answer to a draft: `accepted` drafts were kept (the caches hold the fed token and those), and
 * `ids` are the new tokens in order — the accepted drafts, then the token the cloud sampled after them —
 * cut at a stop id (not included) or the token limit, in which case `done`.
 */
export interface Verified {
  type: 'verified';
  accepted: number;
  ids: number[];
  done: boolean;
  cloudMs: number;
}
export interface TokenMsg {
  type: 'token';
  id: number;
  /** generation ended after this token (stop id or limit); id is -1 when it ended without a new token */
  done: boolean;
  /** milliseconds spent in the cloud on this step: decode, back segment, sampling */
  cloudMs: number;
}
export interface ErrorMsg {
  type: 'error';
  code: string;
  message: string;
}
export interface Close {
  type: 'close';
}
/**
 * Moves the split to `split` between two steps. The side that gives layers away first sends their KV
 * (`kv` frames, edge → cloud when the split moves down); the cloud answers with `kv` frames for the
 * layers the edge takes (when it moves up), then `ready` with the new split.
 */
export interface Resplit {
  type: 'resplit';
  split: number;
  /** codec spec of the KV payloads in both directions (fp32 = lossless) */
  kvCodec: string;
}
/** KV cache of one layer: payload = u32 key bytes | key codec message | value codec message, each [KV·length, headDim] */
export interface KvMsg {
  type: 'kv';
  layer: number;
  length: number;
}

export type Message = Hello | Ready | Probe | Resume | Prefill | Step | Draft | Verified | TokenMsg | ErrorMsg | Close | Resplit | KvMsg;
export type MessageType = Message['type'];

/** What each side sends: a message of another side's type is answered `unknown_type`. */
export const EDGE_MESSAGES = ['hello', 'resume', 'prefill', 'step', 'draft', 'close', 'probe', 'resplit', 'kv'] as const;
export const CLOUD_MESSAGES = ['ready', 'token', 'verified', 'error', 'probe', 'kv'] as const;
export type EdgeMessage = Extract<Message, { type: (typeof EDGE_MESSAGES)[number] }>;
export type CloudMessage = Extract<Message, { type: (typeof CLOUD_MESSAGES)[number] }>;

export interface Frame<M extends Message = Message> {
  header: M;
  payload: Uint8Array;
}

/**
 * Cost models of a plan, from profiles: edge memory, per-token latency, accuracy.
 *   memory   = front weights at their precision (a bf16/f16 package's float embedding at 2 bytes a value) + KV
 *              of the front layers for maxSeq positions with the cache's growth room + one decode step's
 *              activations + the runtime's baseline: the edge's own rule (quantization/weights/memory.ts
 *              `heldBytes`, edge/memory-policy.ts), once — a cached segment is loaded from its file and not
 *              held twice (measured at the Llama-3.2-1B shape, split 8, 4-bit: docs/ARCHITECTURE.md)
 *   latency  = edge compute + encoded bytes ÷ bandwidth + RTT + cloud compute (per decode token)
 *   first token (prompt of n tokens, sent in chunks of c) = 2 RTT + the three-stage pipeline of the
 *              chunks — edge prefill of c, c encoded positions ÷ bandwidth, cloud prefill of c — which
 *              takes one chunk through every stage plus (chunks − 1) times the slowest stage, + LM head;
 *              a layer's prefill of c tokens costs one decode step (the per-run overhead) plus c − 1
 *              times its per-token prefill rate. c is the one among 1, 2, 3, 4, 6, 8, 12, … and n that minimizes it
 *              (`prefillChunk`)
 *   accuracy = weights' ppl increase + codec's ppl increase + the LM head's and the embedding's at their bits
 *              (all measured; added)
 *   block    = the quantization block of the blockwise (below 16-bit) layers and head: each of the terms above
 *              at the plan's block, from the profiles' tables for it (bigger blocks: fewer scales, faster
 *              MatMulNBits, a larger ppl increase); the embedding keeps its own block of 32
 *   speculation (where the accuracy profile measured proposers): a round drafting k tokens costs the plain
 *              step + k × (a position's front and back prefill share, its encoded bytes ÷ bandwidth, the
 *              cloud's head on it, the proposer's own time) and yields 1 + α + … + α^k tokens where the
 *              proposer drafts (its coverage), 1 where it does not; latency is then the best proposer's
 *              and k's expected ms per token, when that beats the plain step by 5% and what the proposer holds
 *              (a draft model, the early exit's head) still fits the memory budget — memory then includes it
 */
import { COMPACT_STEP_HEADER } from '../shared/protocol/frame.js';
import { HEADER_BYTES as MESSAGE_HEADER_BYTES } from '../quantization/activations/format.js';
import { SplitLLMError } from '../shared/errors.js';
import { heldBytes, segmentBytes, type QuantizedBytes, type SegmentBytes, type ShapeConfig } from '../quantization/weights/memory.js';
import { blockOfWeights, DEFAULT_BLOCK_SIZE, isBlockwise } from '../shared/precision.js';
import type { BlockComputeProfile, ComputeProfile, Prediction, Problem } from './types.js';

export interface Config {
  split: number;
  frontBits: number;
  backBits: number;
  codec: string;
  maxSeq: number;
  /** the LM head's weight bits (default 32) */
  headBits?: number;
  /** the token embedding's weight bits on the edge (default 32) */
  embedBits?: number;
  /** the quantization block of the blockwise layers and head (default: the problem's, else 32) */
  blockSize?: number;
}

/**
 * Bytes a step adds to its hidden state on the wire: the compact step header (shared/protocol/frame.ts), the
 * codec message's own header (12: the meter amortizes it over a window, a step pays it whole) and a client
 * WebSocket frame's header (2 + 2 length + 4 mask). A prefill's frame has a msgpack header instead (≤ 64).
 */
const STEP_WIRE_BYTES = COMPACT_STEP_HEADER + MESSAGE_HEADER_BYTES + 8;
const PREFILL_WIRE_BYTES = 4 + 64 + MESSAGE_HEADER_BYTES + 14;

/**
 * A compute profile's latency table at a quantization block: the top-level one at the default block and for
 * float layers (which have no block), else the profile's entry for that block.
 */
function timesAt(p: ComputeProfile, bits: number, block: number): BlockComputeProfile | undefined {
  return blockOfWeights(block, bits) === DEFAULT_BLOCK_SIZE ? p : p.blocks?.[String(block)];
}

const atBlock = (bits: number, block: number) => (blockOfWeights(block, bits) !== DEFAULT_BLOCK_SIZE ? ` at block ${block}` : '');

function prefillMs(p: ComputeProfile, bits: number, block: number): number {
  return timesAt(p, bits, block)?.layerPrefillMsPerToken?.[String(bits)] ?? layerMs(p, bits, block);
}

/** The cloud's final norm + LM head at `bits` (32: the float one every profile has). */
function headMs(p: ComputeProfile, bits: number, block: number): number {
  if (bits === 32) return p.headMs;
  const v = timesAt(p, bits, block)?.headMsByBits?.[String(bits)];
  if (v === undefined) throw new SplitLLMError('E_BAD_CONFIG', `profile has no LM head latency for ${bits}-bit weights${atBlock(bits, block)}: profile that precision`);
  return v;
}

function layerMs(p: ComputeProfile, bits: number, block: number): number {
  const v = timesAt(p, bits, block)?.layerDecodeMs[String(bits)];
  if (v === undefined) throw new SplitLLMError('E_BAD_CONFIG', `profile has no decode latency for ${bits}-bit layers${atBlock(bits, block)}: profile that precision`);
  return v;
}

/** The quantization block a configuration runs at. */
export function blockOf(pr: Problem, c: Pick<Config, 'blockSize'>): number {
  return c.blockSize ?? pr.blockSize ?? DEFAULT_BLOCK_SIZE;
}

/** Whether a configuration quantizes anything blockwise (a layer on either side, or the head): only then does its block matter. */
export function quantizesBlockwise(m: ShapeConfig, c: Pick<Config, 'split' | 'frontBits' | 'backBits' | 'headBits'>): boolean {
  return (c.split > 0 && isBlockwise(c.frontBits)) || (c.split < m.nLayers && isBlockwise(c.backBits)) || isBlockwise(c.headBits ?? 32);
}

/** ppl increase of the weights of a configuration, from the accuracy profile's table at its block (NaN: not measured). */
function weightsLoss(pr: Problem, c: Config, block: number): number {
  const key = `${c.split}/${c.frontBits}/${c.backBits}`;
  const layersQuantized = quantizesBlockwise(pr.model, { ...c, headBits: 32 });
  const table = !layersQuantized || block === DEFAULT_BLOCK_SIZE ? pr.accuracy.weights : pr.accuracy.blocks?.[String(block)]?.weights;
  return table?.[key] ?? NaN;
}

function headLoss(pr: Problem, bits: number, block: number): number {
  if (bits === 32) return 0;
  const table = blockOfWeights(block, bits) === DEFAULT_BLOCK_SIZE ? pr.accuracy.heads : pr.accuracy.blocks?.[String(block)]?.heads;
  return table?.[String(bits)] ?? NaN;
}

/** Memory a device holds to run `seg` for `maxSeq` positions, by the rule above: the edge's rule and the runtime's baseline. */
export function heldMemory(m: ShapeConfig, seg: SegmentBytes, maxSeq: number, baselineBytes: number): number {
  return heldBytes(m, seg, maxSeq) + baselineBytes;
}

/**
 * The whole model on the device (quantization alone, no split), by the same rule as a plan's front: every
 * layer at `bits` under a weight strategy's accounting (`quantized`), the embedding and the LM head at
 * their own bits.
 */
export function localMemory(
  m: ShapeConfig,
  o: { bits: number; maxSeq: number; baselineBytes: number; blockSize?: number; quantized?: QuantizedBytes; embedBits?: number; headBits?: number },
): number {
  const seg = segmentBytes(m, 0, m.nLayers, { embed: true, head: true, bitsOf: () => o.bits, blockSize: o.blockSize ?? DEFAULT_BLOCK_SIZE, quantized: o.quantized, embedBits: o.embedBits, headBits: o.headBits });
  return heldMemory(m, seg, o.maxSeq, o.baselineBytes);
}

/** A front segment's bytes by model (treated as immutable) and split/bits/block/embedding bits: a search asks for the same few many times. */
const fronts = new WeakMap<ShapeConfig, Map<string, SegmentBytes>>();

function frontBytes(m: ShapeConfig, split: number, bits: number, block: number, embedBits: number): SegmentBytes {
  let byKey = fronts.get(m);
  if (!byKey) fronts.set(m, (byKey = new Map()));
  const key = `${split}/${bits}/${block}/${embedBits}`;
  let seg = byKey.get(key);
  if (!seg) byKey.set(key, (seg = segmentBytes(m, 0, split, { embed: true, head: false, bitsOf: () => bits, blockSize: block, embedBits })));
  return seg;
}

export function predict(pr: Problem, c: Config): Prediction {
  const m = pr.model;
  const eb = c.embedBits ?? 32;
  const block = blockOf(pr, c);
  const seg = frontBytes(m, c.split, c.frontBits, block, eb);
  const memory = heldMemory(m, seg, c.maxSeq, pr.edge.baselineBytes);
  const codec = pr.accuracy.codecs[`${c.split}/${c.codec}`];
  const bitsPerValue = codec?.bitsPerValue ?? (c.codec === 'fp32' ? 32 : c.codec === 'fp16' ? 16 : NaN);
  const bytesPerToken = (bitsPerValue * m.dim) / 8 + STEP_WIRE_BYTES;
  const edgeMs = pr.edge.embedMs + c.split * layerMs(pr.edge, c.frontBits, block);
  const hb = c.headBits ?? 32;
  const head = headMs(pr.cloud, hb, block);
  const cloudMs = (m.nLayers - c.split) * layerMs(pr.cloud, c.backBits, block) + head;
  const latency = edgeMs + (1000 * bytesPerToken) / pr.link.bytesPerSec + pr.link.rttMs + cloudMs;
  const n = pr.budgets.promptTokens ?? 1;
  const stages = (t: number): [number, number, number] => [
    pr.edge.embedMs + c.split * (layerMs(pr.edge, c.frontBits, block) + (t - 1) * prefillMs(pr.edge, c.frontBits, block)),
    (1000 * ((t * bitsPerValue * m.dim) / 8 + PREFILL_WIRE_BYTES)) / pr.link.bytesPerSec,
    (m.nLayers - c.split) * (layerMs(pr.cloud, c.backBits, block) + (t - 1) * prefillMs(pr.cloud, c.backBits, block)),
  ];
  const { chunk: prefillChunk, ms: pipelineMs } = bestPrefillChunk(n, stages);
  const firstTokenMs = 2 * pr.link.rttMs + pipelineMs + head;
  // the embedding's blocks are its own (32), whatever the plan's
  const accuracy = weightsLoss(pr, c, block) + (codec?.pplIncrease ?? (c.codec === 'fp32' ? 0 : NaN)) + headLoss(pr, hb, block) + (eb === 32 ? 0 : (pr.accuracy.embeds?.[String(eb)] ?? NaN));
  // speculation: each drafted position adds its front and back prefill share, its bytes and the cloud's
  // head on it, plus the proposer's own time (early exit: the head on the edge)
  const perPosition =
    c.split * prefillMs(pr.edge, c.frontBits, block) + (1000 * (bitsPerValue * m.dim)) / 8 / pr.link.bytesPerSec + (m.nLayers - c.split) * prefillMs(pr.cloud, c.backBits, block) + head;
  const speculation = bestSpeculation(pr, c, latency, perPosition, memory);
  return {
    memory: memory + (speculation?.edgeBytes ?? 0),
    latency: speculation?.latency ?? latency,
    accuracy,
    bytesPerToken,
    firstTokenMs,
    prefillChunk,
    ...(speculation ? { speculation: speculation.choice } : {}),
  };
}

/**
 * Speculation is chosen only when it is predicted at least 5% faster than plain steps: the acceptance is
 * measured teacher-forced on text, not on the session, and a marginal gain is within that error.
 */
export const SPECULATION_MARGIN = 0.95;

/** Expected tokens of a round that drafts k with per-draft acceptance α (the accepted drafts and the token after them). */
export function expectedTokens(alpha: number, k: number): number {
  return alpha >= 1 ? k + 1 : (1 - alpha ** (k + 1)) / (1 - alpha);
}

/**
 * The proposer and draft length with the lowest expected per-token latency, where it beats a plain step:
 * a round that drafts k costs plain + k × (per drafted position + the proposer's own time) and yields
 * expectedTokens(α, k) where the proposer drafts (coverage), one token where it does not.
 */
export function bestSpeculation(
  pr: Problem,
  c: Config,
  plain: number,
  perPosition: number,
  memory: number,
): { latency: number; edgeBytes: number; choice: NonNullable<Prediction['speculation']> } | undefined {
  let best: { latency: number; edgeBytes: number; choice: NonNullable<Prediction['speculation']> } | undefined;
  const m = pr.model;
  const block = blockOf(pr, c);
  for (const s of pr.speculation ?? []) {
    if (s.split !== undefined && s.split !== c.split) continue;
    // what drafting holds on the edge: a draft model, or the early exit's float32 head and final norm
    const edgeBytes = s.proposer === 'early-exit' ? 4 * (m.vocabSize + 1) * m.dim : (s.edgeBytes ?? 0);
    if (memory + edgeBytes > pr.budgets.edgeMemory) continue;
    // early exit runs the front one draft at a time (a decode step, not a prefill share) and the head on the edge
    const own = s.proposer === 'early-exit' ? c.split * (layerMs(pr.edge, c.frontBits, block) - prefillMs(pr.edge, c.frontBits, block)) + pr.edge.headMs : s.draftMsPerToken;
    for (let k = 1; k <= (pr.maxDraft ?? 4); k++) {
      const tokens = s.coverage * expectedTokens(s.acceptance, k) + (1 - s.coverage);
      const ms = (plain + s.coverage * k * (perPosition + own)) / tokens;
      if (ms < (best?.latency ?? plain * SPECULATION_MARGIN)) best = { latency: ms, edgeBytes, choice: { proposer: s.proposer, draftTokens: k, tokensPerRound: tokens, plainLatency: plain } };
    }
  }
  return best;
}

/**
 * The chunk size (positions) that gets a prompt of `n` through a pipeline of stages soonest, and that
 * time: with chunks of c, ⌈n/c⌉ − 1 full chunks and a last one of the rest; the first chunk goes through
 * every stage, each later one adds the slowest stage of its size (stages overlap across chunks).
 */
export function bestPrefillChunk(n: number, stages: (tokens: number) => readonly number[]): { chunk: number; ms: number } {
  let best = { chunk: n, ms: Infinity };
  // the whole prompt, and chunks of 1, 2, 3, 4, 6, 8, 12, 16, … positions below it
  const candidates = [n];
  for (let p = 1; p < n; p *= 2) candidates.push(p, Math.floor(p * 1.5));
  for (const c of candidates) {
    if (c < 1 || c > n) continue;
    const full = Math.ceil(n / c) - 1;
    const rest = n - full * c;
    const first = stages(full > 0 ? c : rest);
    const slowest = Math.max(...stages(c));
    const ms = first.reduce((a, b) => a + b, 0) + Math.max(0, full - 1) * slowest + (full > 0 ? Math.max(...stages(rest)) : 0);
    if (ms < best.ms) best = { chunk: c, ms };
  }
  return best;
}

/**
 * What a cloud operator can learn of a prompt from what the cloud receives: the hidden states at the split,
 * after the codec's round trip. The operator holds the weights (the handshake checks their hash), so it
 * can run the edge's own front layers. Three attacks, from the costliest to the cheapest:
 *
 * - **white-box sequential inversion** (`invert`): for each position, run candidate tokens appended to the
 *   prefix recovered so far through the front [0, K) and keep the one whose hidden state is nearest to the
 *   one received. Candidates are tried in the order a cheap attack ranks them, and the search stops at a
 *   candidate that explains the received state within the codec's own error on it (an exact match with a
 *   lossless codec); otherwise every candidate of the vocabulary (or the `maxCandidates` best ranked, for a
 *   large vocabulary) is tried and the nearest wins.
 * - **nearest embedding row** (`EmbeddingRanker`): the token whose embedding row is most similar (cosine)
 *   to the received state — no search, no model run.
 * - **linear map** (`LinearRanker`): a ridge regression from hidden states to token ids, fitted on public
 *   text the operator runs through the same front.
 *
 * Used by `bench/privacy` and `splitllm audit privacy`. Nothing here is a defence.
 */
import { SplitLLMError } from '../shared/errors.js';
import type { Codec } from '../quantization/activations/codec.js';
import type { SegmentRuntime } from '../models/runtime/segment-runtime.js';

/** Ranks the vocabulary for one received hidden state: ids, best first. */
export interface Ranker {
  readonly name: string;
  rank(h: Float32Array): Int32Array;
}

/** The hidden states [T, D] the cloud gets for `ids`: the front's output through the codec's round trip. */
export async function receivedStates(front: SegmentRuntime, codec: Codec, ids: number[], dim: number): Promise<Float32Array> {
  front.reset();
  const out = await front.run(ids, ids.length, { keepCache: false });
  return codec.decode(codec.encode(out.data, ids.length, dim)).x;
}

/** ‖a − b‖² / ‖b‖² (0 for an exact match). */
function relativeDistance(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return num / Math.max(den, 1e-30);
}

/** Every id, ordered by `scores`, best first. */
function topIds(scores: Float64Array | Float32Array): Int32Array {
  const ids = Int32Array.from({ length: scores.length }, (_, i) => i);
  ids.sort((a, b) => scores[b]! - scores[a]!);
  return ids;
}

/** The cosine-nearest embedding rows (the embedding as the operator holds it: float, [V, D]). */
export class EmbeddingRanker implements Ranker {
  readonly name = 'nearest embedding row';
  private readonly norms: Float32Array;
  constructor(
    private readonly embedding: Float32Array,
    private readonly vocab: number,
    private readonly dim: number,
  ) {
    this.norms = new Float32Array(vocab);
    for (let v = 0; v < vocab; v++) {
      let s = 0;
      for (let d = 0; d < dim; d++) s += embedding[v * dim + d]! ** 2;
      this.norms[v] = Math.sqrt(s) || 1;
    }
  }
  rank(h: Float32Array): Int32Array {
    const scores = new Float64Array(this.vocab);
    for (let v = 0; v < this.vocab; v++) {
      let s = 0;
      for (let d = 0; d < this.dim; d++) s += this.embedding[v * this.dim + d]! * h[d]!;
      scores[v] = s / this.norms[v]!;
    }
    return topIds(scores);
  }
}

/**
 * A ridge regression from a hidden state to the one-hot of its token, fitted on states the operator
 * computes itself from public text: W = (HᵀH + λI)⁻¹ Hᵀ Y, scored by h·W (a bias column included).
 */
export class LinearRanker implements Ranker {
  readonly name = 'linear map';
  private constructor(
    /** [D + 1, V] */
    private readonly w: Float64Array,
    private readonly vocab: number,
    private readonly dim: number,
  ) {}

  /** Fits on `states` [N, D] whose tokens are `ids` (N of them); `lambda` scales the ridge by the mean diagonal of HᵀH. */
  static fit(states: Float32Array, ids: number[], vocab: number, dim: number, lambda = 1e-3): LinearRanker {
    const n = ids.length;
    const p = dim + 1;
    const gram = new Float64Array(p * p);
    const hty = new Float64Array(p * vocab);
    const row = new Float64Array(p);
    for (let i = 0; i < n; i++) {
      for (let d = 0; d < dim; d++) row[d] = states[i * dim + d]!;
      row[dim] = 1;
      for (let a = 0; a < p; a++) {
        const ra = row[a]!;
        if (ra === 0) continue;
        for (let b = a; b < p; b++) gram[a * p + b]! += ra * row[b]!;
        hty[a * vocab + ids[i]!]! += ra;
      }
    }
    let trace = 0;
    for (let a = 0; a < p; a++) {
      for (let b = 0; b < a; b++) gram[a * p + b] = gram[b * p + a]!;
      trace += gram[a * p + a]!;
    }
    const ridge = lambda * (trace / p);
    for (let a = 0; a < p; a++) gram[a * p + a]! += ridge;
    // Cholesky: gram = L Lᵀ, then solve for every column of HᵀY
    const l = gram;
    for (let j = 0; j < p; j++) {
      let s = l[j * p + j]!;
      for (let k = 0; k < j; k++) s -= l[j * p + k]! ** 2;
      const djj = Math.sqrt(Math.max(s, 1e-12));
      l[j * p + j] = djj;
      for (let i = j + 1; i < p; i++) {
        let t = l[i * p + j]!;
        for (let k = 0; k < j; k++) t -= l[i * p + k]! * l[j * p + k]!;
        l[i * p + j] = t / djj;
      }
    }
    const w = new Float64Array(p * vocab);
    const y = new Float64Array(p);
    for (let v = 0; v < vocab; v++) {
      for (let i = 0; i < p; i++) {
        let t = hty[i * vocab + v]!;
        for (let k = 0; k < i; k++) t -= l[i * p + k]! * y[k]!;
        y[i] = t / l[i * p + i]!;
      }
      for (let i = p - 1; i >= 0; i--) {
        let t = y[i]!;
        for (let k = i + 1; k < p; k++) t -= l[k * p + i]! * w[k * vocab + v]!;
        w[i * vocab + v] = t / l[i * p + i]!;
      }
    }
    return new LinearRanker(w, vocab, dim);
  }

  rank(h: Float32Array): Int32Array {
    const scores = new Float64Array(this.vocab);
    for (let d = 0; d <= this.dim; d++) {
      const x = d === this.dim ? 1 : h[d]!;
      if (x === 0) continue;
      const off = d * this.vocab;
      for (let v = 0; v < this.vocab; v++) scores[v]! += x * this.w[off + v]!;
    }
    return topIds(scores);
  }
}

export interface InversionOptions {
  /** the order candidates are tried in (default: id order) */
  ranker?: Ranker;
  /** try at most this many candidates per position, best ranked first (default: the whole vocabulary) */
  maxCandidates?: number;
}

export interface Inversion {
  ids: number[];
  /** front runs of one candidate, in all */
  tried: number;
  ms: number;
}

/**
 * The white-box sequential inversion of `received` [T, D] through `front` (a fresh front segment as the
 * edge runs it) and `codec`. A candidate whose state is within twice the codec's own round-trip error of
 * the received one (plus float noise) is taken at once; else the nearest tried wins.
 */
export async function invert(front: SegmentRuntime, codec: Codec, received: Float32Array, tokens: number, vocab: number, dim: number, opts: InversionOptions = {}): Promise<Inversion> {
  const t0 = performance.now();
  const max = Math.min(vocab, opts.maxCandidates ?? vocab);
  const ids: number[] = [];
  let tried = 0;
  front.reset();
  for (let t = 0; t < tokens; t++) {
    const target = received.subarray(t * dim, (t + 1) * dim);
    const order = opts.ranker ? opts.ranker.rank(target) : Int32Array.from({ length: vocab }, (_, i) => i);
    let best = -1;
    let bestDistance = Infinity;
    for (let i = 0; i < max; i++) {
      const c = order[i]!;
      const h = (await front.run([c], 1, { keepCache: false })).data;
      tried++;
      const d = relativeDistance(h, target);
      if (d < bestDistance) {
        bestDistance = d;
        best = c;
      }
      // explained within the codec's own error on this state (a lossless codec: float noise only)
      const own = codec.lossless ? 0 : relativeDistance(codec.decode(codec.encode(h, 1, dim)).x, h);
      if (d <= 4 * own + 1e-6) break;
    }
    ids.push(best);
    await front.run([best], 1);
  }
  return { ids, tried, ms: performance.now() - t0 };
}

/** The share of positions where `got` has the token of `want`. */
export function recoveryRate(got: number[], want: number[]): number {
  let n = 0;
  for (let i = 0; i < want.length; i++) if (got[i] === want[i]) n++;
  return want.length ? n / want.length : 0;
}

/** Prompts of `tokens` ids (BOS first) from a text: its paragraphs (split on blank lines) long enough, in order. */
export function promptsOf(text: string, encode: (s: string) => number[], count: number, tokens: number, skip = 0): number[][] {
  const out: number[][] = [];
  let seen = 0;
  for (const p of text.split(/\n\s*\n/)) {
    const para = p.trim();
    if (!para) continue;
    const ids = encode(para);
    if (ids.length < tokens) continue;
    if (seen++ < skip) continue;
    out.push(ids.slice(0, tokens));
    if (out.length >= count) break;
  }
  return out;
}

/**
 * A text's paragraphs as an audit uses them: the first `fit` (whole, up to `maxSeq` ids) to fit the linear
 * map on, then `count` prompts of `tokens` ids from the paragraphs after them (held out). E_USAGE when the
 * text is too short for either.
 */
export function auditTexts(text: string, encode: (s: string) => number[], o: { fit: number; count: number; tokens: number; maxSeq: number; where: string }): { fit: number[][]; prompts: number[][] } {
  const paragraphs = text.split(/\n\s*\n/).map((p) => p.trim()).filter((p) => p.length > 0);
  if (paragraphs.length <= o.fit) throw new SplitLLMError('E_USAGE', `--text ${o.where} has ${paragraphs.length} paragraphs: it needs more than --fit ${o.fit} (the fit) and then the prompts; lower --fit or give a longer text`);
  const fit = paragraphs.slice(0, o.fit).map((p) => encode(p).slice(0, o.maxSeq));
  const prompts = promptsOf(paragraphs.slice(o.fit).join('\n\n'), encode, o.count, Math.min(o.tokens, o.maxSeq));
  if (prompts.length === 0) throw new SplitLLMError('E_USAGE', `no paragraph after the first ${o.fit} of ${o.where} has ${o.tokens} tokens: lower --tokens or --fit`);
  return { fit, prompts };
}

export interface SplitAudit {
  split: number;
  codec: string;
  prompts: number;
  /** positions attacked, BOS included */
  tokens: number;
  whiteBox: { rate: number; triedPerToken: number; msPerToken: number; maxCandidates: number };
  embedding: { rate: number };
  linear: { rate: number; fitTokens: number };
}

/**
 * The three attacks on what the cloud receives at one split: `front` makes a fresh front segment [0, split)
 * as the edge runs it (its weights, its embedding), `codec` is the edge's codec there; the linear map is
 * fitted on `fit` (public text, already tokenized) through a front of the same weights; `embedding` is the
 * float token embedding [V, D] the operator holds.
 */
export async function auditSplit(opts: {
  split: number;
  codec: Codec;
  front: () => Promise<SegmentRuntime>;
  prompts: number[][];
  fit: number[][];
  embedding: Float32Array;
  vocab: number;
  dim: number;
  maxCandidates?: number;
}): Promise<SplitAudit> {
  const { codec, vocab, dim } = opts;
  const front = await opts.front();
  try {
    // the operator's own states on public text: the linear map's training set
    const states: Float32Array[] = [];
    const ids: number[] = [];
    for (const p of opts.fit) {
      front.reset();
      states.push((await front.run(p, p.length, { keepCache: false })).data.slice());
      ids.push(...p);
    }
    const all = new Float32Array(ids.length * dim);
    let o = 0;
    for (const s of states) {
      all.set(s, o);
      o += s.length;
    }
    const linear = LinearRanker.fit(all, ids, vocab, dim);
    const nearest = new EmbeddingRanker(opts.embedding, vocab, dim);
    let positions = 0;
    let white = 0;
    let emb = 0;
    let lin = 0;
    let tried = 0;
    let ms = 0;
    for (const p of opts.prompts) {
      const got = await receivedStates(front, codec, p, dim);
      for (let t = 0; t < p.length; t++) {
        const h = got.subarray(t * dim, (t + 1) * dim);
        if (nearest.rank(h)[0] === p[t]) emb++;
        if (linear.rank(h)[0] === p[t]) lin++;
      }
      const inv = await invert(front, codec, got, p.length, vocab, dim, { ranker: linear, maxCandidates: opts.maxCandidates });
      white += recoveryRate(inv.ids, p) * p.length;
      tried += inv.tried;
      ms += inv.ms;
      positions += p.length;
    }
    return {
      split: opts.split,
      codec: codec.spec,
      prompts: opts.prompts.length,
      tokens: positions,
      whiteBox: { rate: Math.round(white) / positions, triedPerToken: tried / positions, msPerToken: ms / positions, maxCandidates: Math.min(vocab, opts.maxCandidates ?? vocab) },
      embedding: { rate: emb / positions },
      linear: { rate: lin / positions, fitTokens: ids.length },
    };
  } finally {
    await front.release();
  }
}

/**
 * A segment at run time: an onnxruntime session for layers [from, to) and the KV cache of those
 * layers. Prefill and decode are the same call with T tokens; positions continue from the cache length.
 * It runs on whichever inference backend is in use (backend.ts): onnxruntime-node, or onnxruntime-web in
 * a browser.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { float32Of, inferenceBackend, type InferenceBackend, type InferenceSession, type SpinMode, type Tensor } from './backend.js';
import type { ModelConfig } from '../manifest.js';
import type { ModelPackage } from '../package.js';
import type { BuiltSegment, SegmentOptions } from '../onnx/segment.js';
import { cachedSegment, defaultCacheEvents, removeTemporary, uncachedSegment } from './segment-cache.js';
import { KvCache, KvSlab, type LayerKV } from './kv-cache.js';

export type { LayerKV } from './kv-cache.js';

export interface SegmentOutput {
  /** logits [T, V] for the last segment, hidden states [T, D] otherwise */
  data: Float32Array;
  tokens: number;
  width: number;
}

export interface RuntimeOptions extends SegmentOptions {
  /** onnxruntime intra-op threads (default: $SPLITLLM_THREADS, else the cores this process may use) */
  threads?: number;
  /** how idle intra-op workers wait: 'alone' (spin between runs) for a session that runs by itself, 'turns' (default) where sessions take turns */
  spin?: SpinMode;
  /** false: build the segment afresh and keep no copy, not through the package's segment cache (a one-off segment: a layer of an accuracy sweep, a calibration half) */
  cache?: false;
}

/**
 * The buffers a gathered batch copies its sessions' caches into, kept per onnxruntime session from one
 * batch to the next: allocating them afresh every step (two per layer, as long as the batch's longest
 * cache) made V8 collect external memory every few steps — at 16 sessions of the default model about
 * two-thirds of the time of the batched run itself. They follow the batch's size (a quarter more when they grow, cut
 * when a step needs less than a quarter of them) and go when a runtime of the session is released, so a
 * burst holds nothing once its sessions leave. One batch at a time uses them; another (there is none
 * while the pool serializes its batches) gets fresh arrays.
 */
class GatherBuffers {
  private bufs: Float32Array[] = [];
  busy = false;
  /** `n` zeroed floats in slot `slot` */
  take(slot: number, n: number): Float32Array {
    let b = this.bufs[slot];
    if (!b || b.length < n || b.length > 4 * n) this.bufs[slot] = b = new Float32Array(Math.ceil(n * 1.25));
    const v = b.subarray(0, n);
    v.fill(0);
    return v;
  }
  clear(): void {
    this.bufs = [];
  }
}
const gatherBuffers = new WeakMap<InferenceSession, GatherBuffers>();

/** An onnxruntime session shared by the runtimes of one segment, with the backend that made it. */
export interface SharedSession {
  session: InferenceSession;
  backend: InferenceBackend;
}

export class SegmentRuntime {
  private readonly kv: KvCache;

  private constructor(
    readonly config: ModelConfig,
    readonly segment: BuiltSegment,
    private readonly session: InferenceSession,
    private readonly backend: InferenceBackend,
    private readonly ownsSession = true,
    slab?: KvSlab,
  ) {
    this.kv = new KvCache(segment.attention === 'resident' ? 'capacity' : 'concat', segment.from, segment.to, config.nKvHeads, config.headDim, config.maxSeq, backend, slab);
  }

  /** Buffers for the KV caches of the runtimes of one resident segment, to batch their steps without gathering (`withSession`). */
  static slabFor(config: ModelConfig, seg: BuiltSegment, shared: SharedSession): KvSlab | undefined {
    return seg.attention === 'resident' ? new KvSlab(seg.from, seg.to, config.nKvHeads, config.headDim, shared.backend) : undefined;
  }

  private get cached(): number {
    return this.segment.recompute ? this.history.length : this.kv.length;
  }

  /** a recompute segment's inputs so far: token ids, or hidden-state rows [D] each */
  private history: (number | Float32Array)[] = [];

  /** An onnxruntime session for a built segment, to share between runtimes (one per client session). */
  static async openSession(seg: BuiltSegment, opts: RuntimeOptions = {}): Promise<SharedSession> {
    const backend = await inferenceBackend();
    const model = seg.modelPath ?? seg.model;
    if (model === undefined) throw new SplitLLMError('E_RUNTIME', `segment [${seg.from}, ${seg.to}) has no model bytes left to load`);
    try {
      return { session: await backend.createSession(model, { threads: opts.threads, spin: opts.spin, ...(seg.externalData ? { externalData: seg.externalData } : {}) }), backend };
    } catch (e) {
      throw new SplitLLMError('E_RUNTIME', `segment [${seg.from}, ${seg.to}): ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      // a segment past 2 GB built without a folder: its files are loaded (or failed to load), not kept
      if (seg.temporaryDir) {
        removeTemporary(seg.temporaryDir);
        seg.modelPath = undefined;
        seg.temporaryDir = undefined;
      }
    }
  }

  /** A runtime with its own KV cache over a shared session (the weights are held once). */
  /** `onRelease` is told (once) when this runtime is released: the owner of the shared session counts its users. */
  static withSession(config: ModelConfig, seg: BuiltSegment, shared: SharedSession, onRelease?: () => void, slab?: KvSlab): SegmentRuntime {
    const r = new SegmentRuntime(config, { ...seg, model: undefined }, shared.session, shared.backend, false, slab);
    r.onRelease = onRelease;
    return r;
  }
  private onRelease: (() => void) | undefined;

  /**
   * One decode step for several runtimes of the same segment and session, as one batch. A resident
   * segment masks each row by its own length (position_ids); the reference graph takes key_positions,
   * −1 marking the padding. The caches are gathered into one batch tensor as long as the longest, and
   * each runtime gets back only its new position and its output row.
   */
  static async runBatch(rts: SegmentRuntime[], xs: Float32Array[]): Promise<SegmentOutput[]> {
    const first = rts[0]!;
    const c = first.config;
    // an export without past inputs cannot batch: its steps run one after another
    if (first.segment.recompute) {
      const outs: SegmentOutput[] = [];
      for (let b = 0; b < rts.length; b++) outs.push(await rts[b]!.run(xs[b]!, 1));
      return outs;
    }
    const resident = first.segment.attention === 'resident';
    if (first.segment.first || (!resident && !first.segment.keyPositions)) throw new SplitLLMError('E_RUNTIME', 'batched steps need a hidden-state segment with resident attention or key positions');
    if (rts.some((r) => r.session !== first.session)) throw new SplitLLMError('E_RUNTIME', 'a batch must share one onnxruntime session');
    for (const r of rts) {
      if (r.cached + 1 > c.maxSeq) throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `sequence would pass the model's maximum of ${c.maxSeq}`);
    }
    const slab = first.kv.slab;
    if (slab && rts.every((r) => r.kv.slab === slab)) return SegmentRuntime.runSlab(slab, rts, xs);
    const B = rts.length;
    const D = c.dim;
    const Pmax = Math.max(...rts.map((r) => r.cached));
    const S = Pmax + 1;
    const hidden = new Float32Array(B * D);
    xs.forEach((x, b) => hidden.set(x, b * D));
    const pos = new BigInt64Array(B);
    rts.forEach((r, b) => (pos[b] = BigInt(r.cached)));
    const bk = first.backend;
    const feeds: Record<string, Tensor> = {
      hidden_states: bk.float32(hidden, [B, 1, D]),
      position_ids: bk.int64(pos, [B, 1]),
    };
    // resident: the batch's cache holds the past only (masked per row by position_ids); reference: key_positions mark padding
    const W = resident ? Math.max(Pmax, 1) : Pmax;
    if (!resident) {
      const kp = new BigInt64Array(B * S).fill(-1n);
      rts.forEach((r, b) => {
        for (let j = 0; j < r.cached; j++) kp[b * S + j] = BigInt(j);
        kp[b * S + Pmax] = BigInt(r.cached);
      });
      feeds['key_positions'] = bk.int64(kp, [B, S]);
    }
    let scratch = gatherBuffers.get(first.session);
    if (!scratch) gatherBuffers.set(first.session, (scratch = new GatherBuffers()));
    const own = !scratch.busy;
    const buffer = (slot: number, n: number) => (own ? scratch.take(slot, n) : new Float32Array(n));
    if (own) scratch.busy = true;
    try {
      return await SegmentRuntime.runGathered(rts, feeds, buffer, W, S, Pmax, resident);
    } finally {
      if (own) scratch.busy = false;
    }
  }

  /** The gathered batch's caches copied into `buffer`s (padding rows and positions zero), run, and each runtime's new position and output row. */
  private static async runGathered(rts: SegmentRuntime[], feeds: Record<string, Tensor>, buffer: (slot: number, n: number) => Float32Array, W: number, S: number, Pmax: number, resident: boolean): Promise<SegmentOutput[]> {
    const first = rts[0]!;
    const c = first.config;
    const B = rts.length;
    const { nKvHeads: KV, headDim: hd, dim: D } = c;
    const bk = first.backend;
    for (let i = first.from; i < first.to; i++) {
      const key = buffer(2 * (i - first.from), B * KV * W * hd);
      const value = buffer(2 * (i - first.from) + 1, B * KV * W * hd);
      rts.forEach((r, b) => {
        const own = r.kv.raw(i);
        const P = r.cached;
        for (let h = 0; h < KV; h++) {
          const src = h * own.stride * hd;
          const dst = (b * KV + h) * W * hd;
          value.set(own.value.subarray(src, src + P * hd), dst);
          if (own.keysTransposed) {
            for (let d = 0; d < hd; d++) key.set(own.key.subarray((h * hd + d) * own.stride, (h * hd + d) * own.stride + P), dst + d * W);
          } else key.set(own.key.subarray(src, src + P * hd), dst);
        }
      });
      feeds[`past_key_${i}`] = bk.float32(key, resident ? [B, KV, hd, W] : [B, KV, W, hd]);
      feeds[`past_value_${i}`] = bk.float32(value, [B, KV, W, hd]);
    }
    const out = await first.session.run(feeds);
    const main = float32Of(out, first.segment.last ? 'logits' : 'hidden_out').data;
    const width = first.segment.last ? c.vocabSize : D;
    return rts.map((r, b) => {
      if (resident) r.kv.appendRow(out, b);
      else {
        // present [B, KV, S, hd]: row b's new position sits at index Pmax
        r.kv.append((i, key, value) => {
          const pk = float32Of(out, `present_key_${i}`).data;
          const pv = float32Of(out, `present_value_${i}`).data;
          for (let h = 0; h < KV; h++) {
            const at = ((b * KV + h) * S + Pmax) * hd;
            key(h).set(pk.subarray(at, at + hd));
            value(h).set(pv.subarray(at, at + hd));
          }
        });
      }
      return { data: main.slice(b * width, (b + 1) * width), tokens: 1, width };
    });
  }

  /**
   * A batched step over every slot of a slab: the steps' runtimes at their slots, the slab's other
   * caches as padding rows (their outputs dropped, their caches untouched). The slab's buffers are fed as
   * they are.
   */
  private static async runSlab(slab: KvSlab, rts: SegmentRuntime[], xs: Float32Array[]): Promise<SegmentOutput[]> {
    const first = rts[0]!;
    const c = first.config;
    const D = c.dim;
    // (runBatch checked the model's maximum) room for each step's new position, before the feeds view the buffers
    for (const r of rts) r.kv.reserve(r.cached + 1);
    const members = slab.members;
    const n = members.length;
    const hidden = new Float32Array(n * D);
    const pos = new BigInt64Array(n);
    members.forEach((m, b) => (pos[b] = BigInt(Math.min(m.length, c.maxSeq - 1))));
    const rows = rts.map((r) => slab.slotOf(r.kv));
    rows.forEach((b, j) => hidden.set(xs[j]!, b * D));
    const bk = first.backend;
    const feeds: Record<string, Tensor> = { hidden_states: bk.float32(hidden, [n, 1, D]), position_ids: bk.int64(pos, [n, 1]) };
    slab.feed(feeds, 0, n);
    const out = await first.session.run(feeds);
    const main = float32Of(out, first.segment.last ? 'logits' : 'hidden_out').data;
    const width = first.segment.last ? c.vocabSize : D;
    return rts.map((r, j) => {
      const b = rows[j]!;
      // a runtime released while the batch ran has no slot left to write to
      if (slab.has(r.kv)) r.kv.appendRow(out, b);
      return { data: main.slice(b * width, (b + 1) * width), tokens: 1, width };
    });
  }

  static async create(pkg: ModelPackage, from: number, to: number, opts: RuntimeOptions = {}): Promise<SegmentRuntime> {
    // a package on disk keeps its built segments (models/runtime/segment-cache.ts)
    const seg = opts.cache === false ? uncachedSegment(pkg, from, to, opts, defaultCacheEvents) : cachedSegment(pkg, from, to, opts, defaultCacheEvents);
    return SegmentRuntime.fromBuilt(pkg.config, seg, opts);
  }

  static async fromBuilt(config: ModelConfig, seg: BuiltSegment, opts: RuntimeOptions = {}): Promise<SegmentRuntime> {
    const { session, backend } = await SegmentRuntime.openSession(seg, opts);
    return new SegmentRuntime(config, { ...seg, model: undefined }, session, backend); // the session holds its own copy of the bytes
  }

  get from(): number {
    return this.segment.from;
  }
  get to(): number {
    return this.segment.to;
  }
  /** Number of positions in the KV cache. */
  get length(): number {
    return this.cached;
  }

  /** Positions the KV buffers have room for before they grow. */
  get capacity(): number {
    return this.kv.capacity;
  }

  /** Caps the KV cache's growth at `positions` (a cloud session's position limit). */
  limitPositions(positions: number): void {
    this.kv.limitPositions(positions);
  }

  reset(): void {
    this.kv.clear();
    this.history = [];
  }

  /** Drops the positions from `length` on (the rejected drafts of a speculative step): a length change, no copy. */
  truncate(length: number): void {
    if (this.segment.recompute) this.history.length = Math.min(this.history.length, length);
    else this.kv.truncate(length);
  }

  /**
   * Runs T new tokens. `input` is token ids for the first segment, hidden states [T, D] otherwise.
   * With `keepCache: false` the cache is left unchanged (for perplexity windows).
   */
  async run(input: ArrayLike<number> | Float32Array, tokens: number, opts: { keepCache?: boolean } = {}): Promise<SegmentOutput> {
    const c = this.config;
    if (tokens <= 0) throw new SplitLLMError('E_BAD_ARGUMENT', 'a step needs at least one token');
    if (this.cached + tokens > c.maxSeq) {
      throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `sequence would reach ${this.cached + tokens} positions, past the model's maximum of ${c.maxSeq}: shorten the prompt or --max-tokens`);
    }
    if (this.segment.recompute) return this.runRecompute(input, tokens, opts.keepCache !== false);
    const quirks = this.segment.quirks;
    if (quirks && tokens > 1 && this.cached > 0) {
      if (quirks.onePositionAfterPrefill) return this.runOneByOne(input, tokens, opts.keepCache !== false);
      try {
        return await this.runFeeds(input, tokens, opts);
      } catch (e) {
        // an export that takes several positions only from an empty cache: learn it once, then go one by one
        // (onnxruntime's own failure; a typed error is the caller's and stands)
        if (e instanceof SplitLLMError) throw e;
        quirks.onePositionAfterPrefill = true;
        return this.runOneByOne(input, tokens, opts.keepCache !== false);
      }
    }
    return this.runFeeds(input, tokens, opts);
  }

  /** `tokens` positions as single-position runs (an imported export's quirk), outputs concatenated. */
  private async runOneByOne(input: ArrayLike<number> | Float32Array, tokens: number, keep: boolean): Promise<SegmentOutput> {
    const start = this.cached;
    const per = input.length / tokens;
    const parts: Float32Array[] = [];
    for (let i = 0; i < tokens; i++) {
      const slice = input instanceof Float32Array ? input.subarray(i * per, (i + 1) * per) : Array.from({ length: per }, (_, j) => input[i * per + j]!);
      parts.push((await this.runFeeds(slice, 1, {})).data.slice());
    }
    if (!keep) this.truncate(start);
    const width = parts[0]!.length;
    const data = new Float32Array(width * tokens);
    parts.forEach((p, i) => data.set(p, i * width));
    return { data, tokens, width };
  }

  private async runFeeds(input: ArrayLike<number> | Float32Array, tokens: number, opts: { keepCache?: boolean }): Promise<SegmentOutput> {
    const c = this.config;
    const feeds: Record<string, Tensor> = {};
    if (this.segment.first) {
      if (input.length !== tokens) throw new SplitLLMError('E_BAD_ARGUMENT', `expected ${tokens} token ids, got ${input.length}`);
      const ids = new BigInt64Array(tokens);
      for (let i = 0; i < tokens; i++) {
        const id = input[i]!;
        if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new SplitLLMError('E_BAD_ARGUMENT', `token id ${id} is outside the vocabulary of ${c.vocabSize}`);
        ids[i] = BigInt(id);
      }
      feeds['input_ids'] = this.backend.int64(ids, [1, tokens]);
    } else {
      if (input.length !== tokens * c.dim) {
        throw new SplitLLMError('E_BAD_ARGUMENT', `hidden state has ${input.length} values, expected ${tokens}×${c.dim}`);
      }
      const h = input instanceof Float32Array ? input : Float32Array.from(input);
      feeds['hidden_states'] = this.backend.float32(h, [1, tokens, c.dim]);
    }
    if (this.to > this.from) {
      const pos = new BigInt64Array(tokens);
      for (let i = 0; i < tokens; i++) pos[i] = BigInt(this.cached + i);
      feeds['position_ids'] = this.backend.int64(pos, [1, tokens]);
      if (this.segment.keyPositions) {
        const kp = new BigInt64Array(this.cached + tokens);
        for (let j = 0; j < kp.length; j++) kp[j] = BigInt(j);
        feeds['key_positions'] = this.backend.int64(kp, [1, kp.length]);
      }
    }
    this.kv.feed(feeds, tokens);
    const mainName = this.segment.last ? 'logits' : 'hidden_out';
    const out = await this.session.run(feeds);
    this.kv.advance(out, tokens, opts.keepCache !== false);
    const main = float32Of(out, mainName);
    return { data: main.data, tokens, width: this.segment.last ? c.vocabSize : c.dim };
  }

  /** An export without past inputs: every position so far runs again, the last `tokens` rows are returned. */
  private async runRecompute(input: ArrayLike<number> | Float32Array, tokens: number, keep: boolean): Promise<SegmentOutput> {
    const c = this.config;
    const D = c.dim;
    const fresh: (number | Float32Array)[] = [];
    if (this.segment.first) {
      if (input.length !== tokens) throw new SplitLLMError('E_BAD_ARGUMENT', `expected ${tokens} token ids, got ${input.length}`);
      for (let i = 0; i < tokens; i++) {
        const id = input[i]!;
        if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new SplitLLMError('E_BAD_ARGUMENT', `token id ${id} is outside the vocabulary of ${c.vocabSize}`);
        fresh.push(id);
      }
    } else {
      if (input.length !== tokens * D) throw new SplitLLMError('E_BAD_ARGUMENT', `hidden state has ${input.length} values, expected ${tokens}×${D}`);
      const h = input instanceof Float32Array ? input : Float32Array.from(input);
      for (let i = 0; i < tokens; i++) fresh.push(h.slice(i * D, (i + 1) * D));
    }
    const all = [...this.history, ...fresh];
    const n = all.length;
    const feeds: Record<string, Tensor> = {};
    if (this.segment.first) feeds['input_ids'] = this.backend.int64(BigInt64Array.from(all, (v) => BigInt(typeof v === 'number' ? v : 0)), [1, n]);
    else {
      const rows = new Float32Array(n * D);
      all.forEach((v, i) => typeof v !== 'number' && rows.set(v, i * D));
      feeds['hidden_states'] = this.backend.float32(rows, [1, n, D]);
    }
    if (this.to > this.from) {
      const pos = BigInt64Array.from({ length: n }, (_, i) => BigInt(i));
      feeds['position_ids'] = this.backend.int64(pos, [1, n]);
      feeds['key_positions'] = this.backend.int64(pos.slice(), [1, n]);
    }
    const out = await this.session.run(feeds);
    if (keep) this.history = all;
    const width = this.segment.last ? c.vocabSize : D;
    const main = float32Of(out, this.segment.last ? 'logits' : 'hidden_out').data;
    return { data: main.slice((n - tokens) * width), tokens, width };
  }

  /** Copies out the KV cache of layers [from, to) ∩ own layers (for streaming to the other side). */
  exportKV(from = this.from, to = this.to): LayerKV[] {
    if (this.segment.recompute) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', 'this model is an ONNX export without past inputs: it has no KV cache to move (re-split and resume need an export with past_key_values inputs)');
    const out: LayerKV[] = [];
    for (let i = Math.max(from, this.from); i < Math.min(to, this.to); i++) out.push({ layer: i, ...this.kv.compact(i), length: this.cached });
    return out;
  }

  /**
   * Takes in the KV cache of this segment's layers at `length` positions; every own layer must be given,
   * at that length. A segment without layers (the embedding alone) keeps only the length.
   */
  importKV(entries: LayerKV[], length = entries[0]?.length ?? 0): void {
    if (this.segment.recompute) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', 'this model is an ONNX export without past inputs: it takes no KV cache (re-split and resume need an export with past_key_values inputs)');
    const { nKvHeads: KV, headDim: hd } = this.config;
    const byLayer = new Map(entries.map((e) => [e.layer, e]));
    if (entries.some((e) => e.length !== length)) throw new SplitLLMError('E_BAD_ARGUMENT', `KV entries disagree on the sequence length (${length} expected)`);
    for (let i = this.from; i < this.to; i++) {
      const e = byLayer.get(i);
      if (!e) throw new SplitLLMError('E_BAD_ARGUMENT', `KV for layer ${i} is missing: segment [${this.from}, ${this.to}) needs all its layers`);
      if (e.key.length !== KV * length * hd || e.value.length !== KV * length * hd) {
        throw new SplitLLMError('E_BAD_ARGUMENT', `KV for layer ${i} has ${e.key.length} values, expected ${KV}×${length}×${hd}`);
      }
    }
    if (length > this.config.maxSeq) throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `KV of ${length} positions is past the model's maximum of ${this.config.maxSeq}`);
    this.kv.load(byLayer, length);
  }

  /** false once `release` was called */
  get live(): boolean {
    return !this.released;
  }
  private released = false;

  /** Drops the KV cache and releases the onnxruntime session when this runtime owns it (a shared one stays open). */
  async release(): Promise<void> {
    this.released = true;
    const told = this.onRelease;
    this.onRelease = undefined;
    // the cache's buffers (or its slab slot) go now, whoever still holds this object
    this.kv.dispose();
    // and the batch buffers sized for it (the next batch sizes them anew)
    const scratch = gatherBuffers.get(this.session);
    if (scratch && !scratch.busy) scratch.clear();
    told?.();
    if (this.ownsSession) await this.session.release();
  }
}

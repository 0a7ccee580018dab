/**
 * The KV cache of one runtime's layers, in the layout its segment's attention wants:
 * - 'capacity' ('resident' attention): per layer a key buffer [1, KV, hd, C] (transposed) and a value
 *   buffer [1, KV, C, hd] with room for C positions, fed to onnxruntime as read-only inputs (no copy);
 *   a step returns only its T new positions, written here after `length`. The capacity grows by a
 *   quarter (at least 64 positions) up to the position limit — amortized O(1) copies per position —
 *   and `truncate` rolls the cache back without touching its data (speculative decoding drops
 *   rejected drafts that way).
 * - 'concat' (the reference graph): the present tensors a step returns become the next past.
 *
 * A 'capacity' cache either owns its buffers or lives in a slot of a `KvSlab`, the buffers the caches of
 * one shared segment's sessions hold together ([S, KV, hd, C] keys, [S, KV, C, hd] values): a slot is
 * one contiguous batch row, so a single run feeds a view of its slot and a batched run of the slab's
 * sessions feeds the slab itself, without gathering any cache.
 */
import { SplitLLMError } from '../../shared/errors.js';
import type { InferenceBackend, InferenceSession, Tensor } from './backend.js';
import { float32Of } from './backend.js';
import { KV_CAPACITY_STEP, KV_MIN_GROWTH } from '../../quantization/weights/memory.js';

export interface LayerKV {
  layer: number;
  /** [KV, length, headDim] (batch 1) */
  key: Float32Array;
  value: Float32Array;
  length: number;
}

export type KvLayout = 'capacity' | 'concat';

interface LayerBuffers {
  key: Float32Array;
  value: Float32Array;
  keyT: Tensor;
  valueT: Tensor;
}

/** The smallest capacity a buffer is given, and its smallest growth (positions): the accounting's rule. */
const MIN_CAPACITY = KV_MIN_GROWTH;
/** The fewest slots a slab's buffers have room for. */
const MIN_SLAB_ROWS = 4;

export class KvCache {
  private layers = new Map<number, LayerBuffers>();
  private cap = 0;
  private len = 0;
  private limit: number;

  constructor(
    readonly layout: KvLayout,
    private readonly from: number,
    private readonly to: number,
    private readonly kvHeads: number,
    private readonly headDim: number,
    private readonly maxSeq: number,
    private readonly backend: InferenceBackend,
    /** the shared buffers this cache takes a slot of ('capacity' layout) */
    readonly slab?: KvSlab,
  ) {
    if (slab && layout !== 'capacity') throw new SplitLLMError('E_RUNTIME', 'a KV slab holds capacity-layout caches only');
    this.limit = maxSeq;
    slab?.attach(this);
    this.clear();
  }

  /** Gives the slab slot back (a cache of its own just clears). */
  dispose(): void {
    this.clear();
    this.slab?.detach(this);
  }

  /** One layer's buffers with the stride of their positions (the capacity). */
  private buf(layer: number): { key: Float32Array; value: Float32Array } {
    if (this.slab) return this.slab.view(layer, this);
    const b = this.layers.get(layer);
    if (!b) throw new SplitLLMError('E_RUNTIME', `no KV cache for layer ${layer}`);
    return b;
  }

  /** positions each (head, dim) row of keys and each head of values has room for */
  private get stride(): number {
    return this.slab ? this.slab.capacity : this.cap;
  }

  /** Positions held. */
  get length(): number {
    return this.len;
  }

  /** Positions the buffers have room for ('concat': the length). */
  get capacity(): number {
    return this.layout === 'capacity' ? this.stride : this.len;
  }

  /** Caps growth at `positions` (a cloud session's position limit, so it never holds more than it reserved). */
  limitPositions(positions: number): void {
    this.limit = Math.max(1, Math.min(this.maxSeq, Math.floor(positions)));
  }

  clear(): void {
    this.len = 0;
    this.cap = 0;
    this.layers.clear();
    if (this.slab) return;
    for (let i = this.from; i < this.to; i++) this.layers.set(i, this.buffers(new Float32Array(0), new Float32Array(0), 0));
  }

  /** Drops positions from `length` on (their data stays, to be overwritten). */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.len) throw new SplitLLMError('E_BAD_ARGUMENT', `cannot truncate a KV cache of ${this.len} positions to ${length}`);
    if (this.layout === 'concat') {
      for (const i of this.layers.keys()) {
        const { key, value } = this.compact(i, length);
        this.layers.set(i, this.buffers(key, value, length));
      }
    }
    this.len = length;
  }

  /** Adds past_* feeds for a step of `tokens` new positions (growing the buffers first when they are full). */
  feed(feeds: Record<string, Tensor>, tokens: number): void {
    if (this.layout === 'capacity') this.reserve(this.len + tokens);
    if (this.slab) return this.slab.feed(feeds, this.slab.slotOf(this), 1);
    for (const [i, b] of this.layers) {
      feeds[`past_key_${i}`] = b.keyT;
      feeds[`past_value_${i}`] = b.valueT;
    }
  }

  /** Takes in a step's outputs: `tokens` more positions, unless `keep` is false (a perplexity window). */
  advance(out: InferenceSession.OnnxValueMapType, tokens: number, keep = true): void {
    if (!keep) return;
    if (this.layout === 'concat') {
      for (const i of this.layers.keys()) {
        const k = float32Of(out, `present_key_${i}`);
        const v = float32Of(out, `present_value_${i}`);
        this.layers.set(i, { key: k.data, value: v.data, keyT: k.tensor, valueT: v.tensor });
      }
    } else {
      for (let i = this.from; i < this.to; i++) {
        const k = float32Of(out, `new_key_${i}`).data; // [1, KV, T, hd]
        const v = float32Of(out, `new_value_${i}`).data;
        this.put(this.buf(i), k, v, 0, tokens, this.len);
      }
    }
    this.len += tokens;
  }

  /**
   * Writes `tokens` positions from new rows [rows, KV, T, hd] (row `row`) into a layer's buffers at
   * position `at` ('capacity' layout: keys transposed).
   */
  private put(b: { key: Float32Array; value: Float32Array }, k: Float32Array, v: Float32Array, row: number, tokens: number, at: number): void {
    const { kvHeads: KV, headDim: hd } = this;
    const cap = this.stride;
    for (let h = 0; h < KV; h++) {
      const src = (row * KV + h) * tokens * hd;
      b.value.set(v.subarray(src, src + tokens * hd), (h * cap + at) * hd);
      const kbase = h * hd * cap + at;
      for (let t = 0; t < tokens; t++) {
        const s0 = src + t * hd;
        for (let d = 0; d < hd; d++) b.key[kbase + d * cap + t] = k[s0 + d]!;
      }
    }
  }

  /** Takes in row `row` of a batched step's new_* outputs [B, KV, 1, hd] as one more position. */
  appendRow(out: InferenceSession.OnnxValueMapType, row: number): void {
    if (this.layout !== 'capacity') throw new SplitLLMError('E_RUNTIME', 'appendRow needs the capacity layout');
    this.reserve(this.len + 1);
    for (let i = this.from; i < this.to; i++) this.put(this.buf(i), float32Of(out, `new_key_${i}`).data, float32Of(out, `new_value_${i}`).data, row, 1, this.len);
    this.len += 1;
  }

  /** Keys and values of one layer at [0, length), [KV, length, hd], as a copy. */
  compact(layer: number, length = this.len): { key: Float32Array; value: Float32Array } {
    const b = this.buf(layer);
    const { kvHeads: KV, headDim: hd } = this;
    if (this.layout === 'concat') return { key: rows(b.key, KV, hd, this.len, length), value: rows(b.value, KV, hd, this.len, length) };
    const cap = this.stride;
    const key = new Float32Array(KV * length * hd);
    for (let h = 0; h < KV; h++) for (let p = 0; p < length; p++) for (let d = 0; d < hd; d++) key[(h * length + p) * hd + d] = b.key[(h * hd + d) * cap + p]!;
    return { key, value: rows(b.value, KV, hd, cap, length) };
  }

  /** One layer's buffers as they are, with the positions' stride (the capacity) and whether keys are transposed. */
  raw(layer: number): { key: Float32Array; value: Float32Array; stride: number; keysTransposed: boolean } {
    const b = this.buf(layer);
    return { key: b.key, value: b.value, stride: this.layout === 'capacity' ? this.stride : this.len, keysTransposed: this.layout === 'capacity' };
  }

  /**
   * Adds one position ('concat' layout): `fill` writes each own layer's new key and value rows, per
   * KV head, into the rows it is given (a batched step of the reference graph).
   */
  append(fill: (layer: number, key: (head: number) => Float32Array, value: (head: number) => Float32Array) => void): void {
    if (this.layout !== 'concat') throw new SplitLLMError('E_RUNTIME', 'append needs the concat layout');
    const hd = this.headDim;
    const P = this.len;
    for (const [i, b] of this.layers) {
      const key = new Float32Array(this.kvHeads * (P + 1) * hd);
      const value = new Float32Array(this.kvHeads * (P + 1) * hd);
      copyRows(b.key, P, key, P + 1, this.kvHeads, hd, P);
      copyRows(b.value, P, value, P + 1, this.kvHeads, hd, P);
      const at = (h: number): number => (h * (P + 1) + P) * hd;
      fill(i, (h) => key.subarray(at(h), at(h) + hd), (h) => value.subarray(at(h), at(h) + hd));
      this.layers.set(i, this.buffers(key, value, P + 1));
    }
    this.len = P + 1;
  }

  /** Replaces the cache with `length` positions of every own layer ([KV, length, hd] each). */
  load(entries: Map<number, { key: Float32Array; value: Float32Array }>, length: number): void {
    if (this.layout === 'concat') {
      for (let i = this.from; i < this.to; i++) {
        const e = entries.get(i)!;
        this.layers.set(i, this.buffers(e.key, e.value, length));
      }
      this.len = length;
      return;
    }
    this.clear();
    this.reserve(Math.max(length, 1));
    for (let i = this.from; i < this.to; i++) {
      const e = entries.get(i)!;
      // [KV, length, hd] → [1, KV, length, hd] new rows, written at 0
      this.put(this.buf(i), e.key, e.value, 0, length, 0);
    }
    this.len = length;
  }

  /** Room for `positions` ('capacity' layout): a quarter more (at least 64), within the position limit. */
  reserve(positions: number): void {
    if (positions <= this.stride) return;
    if (positions > this.maxSeq) throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `sequence would reach ${positions} positions, past the model's maximum of ${this.maxSeq}`);
    if (this.slab) return this.slab.grow(positions, this.limit);
    const next = grownCapacity(this.cap, positions, this.limit);
    const { kvHeads: KV, headDim: hd } = this;
    for (const [i, b] of this.layers) {
      const grown = { key: new Float32Array(KV * next * hd), value: new Float32Array(KV * next * hd) };
      moveRows(b, grown, this.cap, next, KV, hd, this.len);
      this.layers.set(i, this.buffers(grown.key, grown.value, next));
    }
    this.cap = next;
  }

  private buffers(key: Float32Array, value: Float32Array, positions: number): LayerBuffers {
    const dims = [1, this.kvHeads, positions, this.headDim];
    const keyDims = this.layout === 'capacity' ? [1, this.kvHeads, this.headDim, positions] : dims;
    return { key, value, keyT: this.backend.float32(key, keyDims), valueT: this.backend.float32(value, dims) };
  }
}

/** Capacity after growing from `cap` to hold `positions`: a quarter more (at least 64), in steps of 16, within `limit`. */
export function grownCapacity(cap: number, positions: number, limit: number): number {
  const grown = Math.max(positions, cap + Math.max(MIN_CAPACITY, Math.ceil(cap / 4)));
  return Math.min(Math.max(limit, positions), Math.ceil(grown / KV_CAPACITY_STEP) * KV_CAPACITY_STEP);
}

/** Copies the first `length` positions of one cache's layer from buffers of capacity `from` to buffers of capacity `to` (keys [KV, hd, C]: each (head, dim) row of positions moves to the wider stride; values [KV, C, hd]). */
function moveRows(src: { key: Float32Array; value: Float32Array }, dst: { key: Float32Array; value: Float32Array }, from: number, to: number, kvHeads: number, hd: number, length: number): void {
  for (let r = 0; r < kvHeads * hd; r++) dst.key.set(src.key.subarray(r * from, r * from + length), r * to);
  copyRows(src.value, from, dst.value, to, kvHeads, hd, length);
}

/**
 * The capacity buffers of one shared segment's KV caches: per layer keys [S, KV, hd, C] and values
 * [S, KV, C, hd] for S slots of C positions. Slots stay dense — [0, n) are the n attached caches — so a
 * batch of all of them feeds the buffers' first n rows with no copy; a cache that leaves hands its slot
 * to the last one (a copy of that one cache). C grows as the caches' growth rule asks, S doubles; both
 * shrink as sessions leave (S by half at a quarter in use, C to twice the longest cache when all hold at
 * most a quarter of it), and the buffers go with the last cache, so a burst of sessions does not keep
 * its memory.
 */
export class KvSlab {
  private keys = new Map<number, Float32Array>();
  private values = new Map<number, Float32Array>();
  private cap = 0;
  private rows = 0;
  private readonly caches: KvCache[] = [];
  private readonly slots = new Map<KvCache, number>();

  constructor(
    private readonly from: number,
    private readonly to: number,
    private readonly kvHeads: number,
    private readonly headDim: number,
    private readonly backend: InferenceBackend,
  ) {}

  /** positions each slot has room for */
  get capacity(): number {
    return this.cap;
  }
  /** caches attached (slots [0, size) in use) */
  get size(): number {
    return this.caches.length;
  }
  /** bytes the buffers hold */
  get bytes(): number {
    return 2 * (this.to - this.from) * this.rows * this.slotFloats * 4;
  }
  private get slotFloats(): number {
    return this.kvHeads * this.headDim * this.cap;
  }

  has(c: KvCache): boolean {
    return this.slots.has(c);
  }

  slotOf(c: KvCache): number {
    const s = this.slots.get(c);
    if (s === undefined) throw new SplitLLMError('E_RUNTIME', 'this KV cache has no slot in the slab (released?)');
    return s;
  }

  attach(c: KvCache): void {
    if (this.slots.has(c)) return;
    if (this.caches.length === this.rows && this.cap > 0) this.realloc(Math.max(MIN_SLAB_ROWS, this.rows * 2), this.cap);
    this.slots.set(c, this.caches.length);
    this.caches.push(c);
  }

  /** Frees a cache's slot: the last cache moves into it; the buffers go when no cache is left. */
  detach(c: KvCache): void {
    const s = this.slots.get(c);
    if (s === undefined) return;
    this.slots.delete(c);
    const last = this.caches.pop()!;
    if (last !== c) {
      this.caches[s] = last;
      this.slots.set(last, s);
      // (before the first reserve there are no buffers and nothing to move)
      const n = this.slotFloats;
      for (const buffer of [...this.keys.values(), ...this.values.values()]) buffer.copyWithin(s * n, this.caches.length * n, (this.caches.length + 1) * n);
    }
    if (this.caches.length === 0) {
      this.keys.clear();
      this.values.clear();
      this.cap = 0;
      this.rows = 0;
      return;
    }
    // memory follows the sessions down: at a quarter of the rows in use, half of them go; when every
    // cache holds at most a quarter of the capacity, the capacity shrinks to twice the longest
    const longest = Math.max(...this.caches.map((m) => m.length));
    const rows = this.caches.length <= this.rows / 4 && this.rows > MIN_SLAB_ROWS ? Math.max(MIN_SLAB_ROWS, this.rows / 2) : this.rows;
    const cap = longest <= this.cap / 4 && this.cap > MIN_CAPACITY ? Math.max(MIN_CAPACITY, Math.ceil((2 * longest) / KV_CAPACITY_STEP) * KV_CAPACITY_STEP) : this.cap;
    if (rows !== this.rows || cap !== this.cap) this.realloc(rows, cap);
  }

  /** Room for `positions` in every slot (a cache's growth rule, within its `limit`). */
  grow(positions: number, limit: number): void {
    if (positions <= this.cap) return;
    this.realloc(Math.max(this.rows, this.caches.length, 1), grownCapacity(this.cap, positions, limit));
  }

  private realloc(rows: number, cap: number): void {
    const { kvHeads: KV, headDim: hd } = this;
    const n = KV * hd * cap;
    const old = this.slotFloats;
    for (let i = this.from; i < this.to; i++) {
      const key = new Float32Array(rows * n);
      const value = new Float32Array(rows * n);
      const ok = this.keys.get(i);
      const ov = this.values.get(i);
      if (ok && ov) {
        this.caches.forEach((c, s) =>
          moveRows({ key: ok.subarray(s * old, (s + 1) * old), value: ov.subarray(s * old, (s + 1) * old) }, { key: key.subarray(s * n, (s + 1) * n), value: value.subarray(s * n, (s + 1) * n) }, this.cap, cap, KV, hd, Math.min(c.length, this.cap)),
        );
      }
      this.keys.set(i, key);
      this.values.set(i, value);
    }
    this.rows = rows;
    this.cap = cap;
  }

  /** One layer's buffers of a cache's slot. */
  view(layer: number, c: KvCache): { key: Float32Array; value: Float32Array } {
    const s = this.slotOf(c);
    const n = this.slotFloats;
    const key = this.keys.get(layer);
    const value = this.values.get(layer);
    if (!key || !value) return { key: new Float32Array(0), value: new Float32Array(0) };
    return { key: key.subarray(s * n, (s + 1) * n), value: value.subarray(s * n, (s + 1) * n) };
  }

  /** past_* feeds of slots [first, first + count) as one batch: views of the buffers, no copy. */
  feed(feeds: Record<string, Tensor>, first: number, count: number): void {
    const n = this.slotFloats;
    const { kvHeads: KV, headDim: hd, cap } = this;
    for (let i = this.from; i < this.to; i++) {
      const key = this.keys.get(i) ?? new Float32Array(0);
      const value = this.values.get(i) ?? new Float32Array(0);
      feeds[`past_key_${i}`] = this.backend.float32(key.subarray(first * n, (first + count) * n), [count, KV, hd, cap]);
      feeds[`past_value_${i}`] = this.backend.float32(value.subarray(first * n, (first + count) * n), [count, KV, cap, hd]);
    }
  }

  /** The attached caches in slot order. */
  get members(): readonly KvCache[] {
    return this.caches;
  }
}

/** The first `length` positions of a [heads, stride, hd] buffer as [heads, length, hd]. */
function rows(src: Float32Array, heads: number, hd: number, stride: number, length: number): Float32Array {
  const out = new Float32Array(heads * length * hd);
  copyRows(src, stride, out, length, heads, hd, length);
  return out;
}

/** Copies positions [0, length) of every head between [heads, stride, hd] buffers of different strides. */
function copyRows(src: Float32Array, srcStride: number, dst: Float32Array, dstStride: number, heads: number, hd: number, length: number): void {
  if (length === 0) return;
  if (srcStride === dstStride && srcStride === length) {
    dst.set(src.subarray(0, heads * length * hd));
    return;
  }
  for (let h = 0; h < heads; h++) dst.set(src.subarray(h * srcStride * hd, (h * srcStride + length) * hd), h * dstStride * hd);
}

/**
 * The KV cache of one runtime's layers, in the layout its segment's attention wants:
 * - 'capacity' ('resident' attention): per layer a key buffer [1, KV, hd, C] (transposed) and a value
 *   buffer [1, KV, C, hd] with room for C positions, fed to onnxruntime as read-only inputs (no copy);
 *   a step returns only its T new positions, written here after `length`. The capacity grows by a
 *   quarter (at least 64 positions) up to the position limit — amortized O(1) copies per position —
 *   and `truncate` rolls the cache back without touching its data (speculative decoding drops
 *   rejected drafts that way).
 * - 'concat' (the reference graph): the present tensors a step returns become the next past.
 */
import { SplitLLMError } from '../../shared/errors.js';
import type { InferenceBackend, InferenceSession, Tensor } from './backend.js';
import { float32Of } from './backend.js';

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

/** The smallest capacity a buffer is given (positions). */
const MIN_CAPACITY = 64;

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
  ) {
    this.limit = maxSeq;
    this.clear();
  }

  /** Positions held. */
  get length(): number {
    return this.len;
  }

  /** Positions the buffers have room for ('concat': the length). */
  get capacity(): number {
    return this.layout === 'capacity' ? this.cap : this.len;
  }

  /** Caps growth at `positions` (a cloud session's position limit, so it never holds more than it reserved). */
  limitPositions(positions: number): void {
    this.limit = Math.max(1, Math.min(this.maxSeq, Math.floor(positions)));
  }

  clear(): void {
    this.len = 0;
    this.cap = 0;
    this.layers.clear();
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
      for (const [i, b] of this.layers) {
        const k = float32Of(out, `new_key_${i}`).data; // [1, KV, T, hd]
        const v = float32Of(out, `new_value_${i}`).data;
        this.put(b, k, v, 0, tokens, this.len);
      }
    }
    this.len += tokens;
  }

  /**
   * Writes `tokens` positions from new rows [rows, KV, T, hd] (row `row`) into a layer's buffers at
   * position `at` ('capacity' layout: keys transposed).
   */
  private put(b: LayerBuffers, k: Float32Array, v: Float32Array, row: number, tokens: number, at: number): void {
    const { kvHeads: KV, headDim: hd, cap } = this;
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
    for (const [i, b] of this.layers) this.put(b, float32Of(out, `new_key_${i}`).data, float32Of(out, `new_value_${i}`).data, row, 1, this.len);
    this.len += 1;
  }

  /** Keys and values of one layer at [0, length), [KV, length, hd], as a copy. */
  compact(layer: number, length = this.len): { key: Float32Array; value: Float32Array } {
    const b = this.layers.get(layer);
    if (!b) throw new SplitLLMError('E_RUNTIME', `no KV cache for layer ${layer}`);
    const { kvHeads: KV, headDim: hd } = this;
    if (this.layout === 'concat') return { key: rows(b.key, KV, hd, this.len, length), value: rows(b.value, KV, hd, this.len, length) };
    const key = new Float32Array(KV * length * hd);
    for (let h = 0; h < KV; h++) for (let p = 0; p < length; p++) for (let d = 0; d < hd; d++) key[(h * length + p) * hd + d] = b.key[(h * hd + d) * this.cap + p]!;
    return { key, value: rows(b.value, KV, hd, this.cap, length) };
  }

  /** One layer's buffers as they are, with the positions' stride (the capacity) and whether keys are transposed. */
  raw(layer: number): { key: Float32Array; value: Float32Array; stride: number; keysTransposed: boolean } {
    const b = this.layers.get(layer);
    if (!b) throw new SplitLLMError('E_RUNTIME', `no KV cache for layer ${layer}`);
    return { key: b.key, value: b.value, stride: this.layout === 'capacity' ? this.cap : this.len, keysTransposed: this.layout === 'capacity' };
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
      this.put(this.layers.get(i)!, e.key, e.value, 0, length, 0);
    }
    this.len = length;
  }

  /** Room for `positions` ('capacity' layout): a quarter more (at least 64), within the position limit. */
  reserve(positions: number): void {
    if (positions <= this.cap) return;
    if (positions > this.maxSeq) throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `sequence would reach ${positions} positions, past the model's maximum of ${this.maxSeq}`);
    const grown = Math.max(positions, this.cap + Math.max(MIN_CAPACITY, Math.ceil(this.cap / 4)));
    const next = Math.min(Math.max(this.limit, positions), Math.ceil(grown / 16) * 16);
    const { kvHeads: KV, headDim: hd } = this;
    for (const [i, b] of this.layers) {
      const key = new Float32Array(KV * next * hd);
      const value = new Float32Array(KV * next * hd);
      // keys [KV, hd, cap]: each (head, dim) row of positions moves to the wider stride
      for (let r = 0; r < KV * hd; r++) key.set(b.key.subarray(r * this.cap, r * this.cap + this.len), r * next);
      copyRows(b.value, this.cap, value, next, KV, hd, this.len);
      this.layers.set(i, this.buffers(key, value, next));
    }
    this.cap = next;
  }

  private buffers(key: Float32Array, value: Float32Array, positions: number): LayerBuffers {
    const dims = [1, this.kvHeads, positions, this.headDim];
    const keyDims = this.layout === 'capacity' ? [1, this.kvHeads, this.headDim, positions] : dims;
    return { key, value, keyT: this.backend.float32(key, keyDims), valueT: this.backend.float32(value, dims) };
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

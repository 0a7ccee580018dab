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
import { buildSegment, type BuiltSegment, type SegmentOptions } from '../onnx/segment.js';

export interface LayerKV {
  layer: number;
  /** [KV, length, headDim] (batch 1) */
  key: Float32Array;
  value: Float32Array;
  length: number;
}

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
}

/** An onnxruntime session shared by the runtimes of one segment, with the backend that made it. */
export interface SharedSession {
  session: InferenceSession;
  backend: InferenceBackend;
}

export class SegmentRuntime {
  private past = new Map<number, { key: Tensor; value: Tensor }>();
  private cached = 0;

  private constructor(
    readonly config: ModelConfig,
    readonly segment: BuiltSegment,
    private readonly session: InferenceSession,
    private readonly backend: InferenceBackend,
    private readonly ownsSession = true,
  ) {
    this.reset();
  }

  /** An onnxruntime session for a built segment, to share between runtimes (one per client session). */
  static async openSession(seg: BuiltSegment, opts: RuntimeOptions = {}): Promise<SharedSession> {
    const backend = await inferenceBackend();
    const model = seg.modelPath ?? seg.model;
    if (model === undefined) throw new SplitLLMError('E_RUNTIME', `segment [${seg.from}, ${seg.to}) has no model bytes left to load`);
    try {
      return { session: await backend.createSession(model, { threads: opts.threads, spin: opts.spin }), backend };
    } catch (e) {
      throw new SplitLLMError('E_RUNTIME', `segment [${seg.from}, ${seg.to}): ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** A runtime with its own KV cache over a shared session (the weights are held once). */
  /** `onRelease` is told (once) when this runtime is released: the owner of the shared session counts its users. */
  static withSession(config: ModelConfig, seg: BuiltSegment, shared: SharedSession, onRelease?: () => void): SegmentRuntime {
    const r = new SegmentRuntime(config, { ...seg, model: undefined }, shared.session, shared.backend, false);
    r.onRelease = onRelease;
    return r;
  }
  private onRelease: (() => void) | undefined;

  /**
   * One decode step for several runtimes of the same segment and session, as one batch: caches of
   * different lengths are padded (key_positions marks the padding), and each runtime gets back its own
   * cache and output row. The segment must take hidden states and key_positions.
   */
  static async runBatch(rts: SegmentRuntime[], xs: Float32Array[]): Promise<SegmentOutput[]> {
    const first = rts[0]!;
    const c = first.config;
    if (!first.segment.keyPositions || first.segment.first) throw new SplitLLMError('E_RUNTIME', 'batched steps need a hidden-state segment built with key positions');
    if (rts.some((r) => r.session !== first.session)) throw new SplitLLMError('E_RUNTIME', 'a batch must share one onnxruntime session');
    const B = rts.length;
    const { nKvHeads: KV, headDim: hd, dim: D } = c;
    const Pmax = Math.max(...rts.map((r) => r.cached));
    const S = Pmax + 1;
    for (const r of rts) {
      if (r.cached + 1 > c.maxSeq) throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `sequence would pass the model's maximum of ${c.maxSeq}`);
    }
    const hidden = new Float32Array(B * D);
    xs.forEach((x, b) => hidden.set(x, b * D));
    const pos = new BigInt64Array(B);
    const kp = new BigInt64Array(B * S).fill(-1n);
    rts.forEach((r, b) => {
      pos[b] = BigInt(r.cached);
      for (let j = 0; j < r.cached; j++) kp[b * S + j] = BigInt(j);
      kp[b * S + Pmax] = BigInt(r.cached);
    });
    const bk = first.backend;
    const feeds: Record<string, Tensor> = {
      hidden_states: bk.float32(hidden, [B, 1, D]),
      position_ids: bk.int64(pos, [B, 1]),
      key_positions: bk.int64(kp, [B, S]),
    };
    for (let i = first.from; i < first.to; i++) {
      for (const which of ['key', 'value'] as const) {
        const padded = new Float32Array(B * KV * Pmax * hd);
        rts.forEach((r, b) => {
          const src = r.pastData(i, which);
          const P = r.cached;
          for (let h = 0; h < KV; h++) padded.set(src.subarray(h * P * hd, (h + 1) * P * hd), ((b * KV + h) * Pmax) * hd);
        });
        feeds[`past_${which}_${i}`] = bk.float32(padded, [B, KV, Pmax, hd]);
      }
    }
    const out = await first.session.run(feeds);
    const main = float32Of(out, first.segment.last ? 'logits' : 'hidden_out').data;
    const width = first.segment.last ? c.vocabSize : D;
    return rts.map((r, b) => {
      const P = r.cached;
      for (let i = r.from; i < r.to; i++) {
        const own = (which: 'key' | 'value'): Tensor => {
          const present = float32Of(out, `present_${which}_${i}`).data; // [B, KV, S, hd]
          const mine = new Float32Array(KV * (P + 1) * hd);
          for (let h = 0; h < KV; h++) {
            const base = (b * KV + h) * S * hd;
            mine.set(present.subarray(base, base + P * hd), h * (P + 1) * hd);
            mine.set(present.subarray(base + Pmax * hd, base + S * hd), (h * (P + 1) + P) * hd);
          }
          return bk.float32(mine, [1, KV, P + 1, hd]);
        };
        r.past.set(i, { key: own('key'), value: own('value') });
      }
      r.cached = P + 1;
      return { data: main.slice(b * width, (b + 1) * width), tokens: 1, width };
    });
  }

  static async create(pkg: ModelPackage, from: number, to: number, opts: RuntimeOptions = {}): Promise<SegmentRuntime> {
    const seg = buildSegment(pkg.config, pkg.weights, from, to, opts);
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

  reset(): void {
    const { nKvHeads: KV, headDim: hd } = this.config;
    this.past.clear();
    for (let i = this.from; i < this.to; i++) {
      this.past.set(i, {
        key: this.backend.float32(new Float32Array(0), [1, KV, 0, hd]),
        value: this.backend.float32(new Float32Array(0), [1, KV, 0, hd]),
      });
    }
    this.cached = 0;
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
    for (const [i, kv] of this.past) {
      feeds[`past_key_${i}`] = kv.key;
      feeds[`past_value_${i}`] = kv.value;
    }
    const out = await this.session.run(feeds);
    if (opts.keepCache !== false) {
      for (const i of this.past.keys()) this.past.set(i, { key: float32Of(out, `present_key_${i}`).tensor, value: float32Of(out, `present_value_${i}`).tensor });
      this.cached += tokens;
    }
    const main = float32Of(out, this.segment.last ? 'logits' : 'hidden_out');
    return { data: main.data, tokens, width: this.segment.last ? c.vocabSize : c.dim };
  }

  /** Copies out the KV cache of layers [from, to) ∩ own layers (for streaming to the other side). */
  exportKV(from = this.from, to = this.to): LayerKV[] {
    const out: LayerKV[] = [];
    for (let i = Math.max(from, this.from); i < Math.min(to, this.to); i++) {
      out.push({ layer: i, key: this.pastData(i, 'key').slice(), value: this.pastData(i, 'value').slice(), length: this.cached });
    }
    return out;
  }

  /**
   * Takes in the KV cache of this segment's layers at `length` positions; every own layer must be given,
   * at that length. A segment without layers (the embedding alone) keeps only the length.
   */
  importKV(entries: LayerKV[], length = entries[0]?.length ?? 0): void {
    const { nKvHeads: KV, headDim: hd } = this.config;
    const byLayer = new Map(entries.map((e) => [e.layer, e]));
    if (entries.some((e) => e.length !== length)) throw new SplitLLMError('E_BAD_ARGUMENT', `KV entries disagree on the sequence length (${length} expected)`);
    const len = length;
    for (let i = this.from; i < this.to; i++) {
      const e = byLayer.get(i);
      if (!e) throw new SplitLLMError('E_BAD_ARGUMENT', `KV for layer ${i} is missing: segment [${this.from}, ${this.to}) needs all its layers`);
      if (e.key.length !== KV * len * hd || e.value.length !== KV * len * hd) {
        throw new SplitLLMError('E_BAD_ARGUMENT', `KV for layer ${i} has ${e.key.length} values, expected ${KV}×${len}×${hd}`);
      }
    }
    for (let i = this.from; i < this.to; i++) {
      const e = byLayer.get(i)!;
      this.past.set(i, {
        key: this.backend.float32(e.key, [1, KV, len, hd]),
        value: this.backend.float32(e.value, [1, KV, len, hd]),
      });
    }
    this.cached = len;
  }

  /** The cached keys or values of one own layer, [KV, length, headDim]. */
  private pastData(layer: number, which: 'key' | 'value'): Float32Array {
    const data = this.past.get(layer)?.[which].data;
    if (!(data instanceof Float32Array)) throw new SplitLLMError('E_RUNTIME', `no float32 KV cache for layer ${layer}`);
    return data;
  }

  /** Drops the KV cache and releases the onnxruntime session when this runtime owns it (a shared one stays open). */
  async release(): Promise<void> {
    const told = this.onRelease;
    this.onRelease = undefined;
    // the cache's buffers go now, whoever still holds this object
    this.past.clear();
    this.cached = 0;
    told?.();
    if (this.ownsSession) await this.session.release();
  }
}

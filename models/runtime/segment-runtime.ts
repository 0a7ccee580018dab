/**
 * A segment at run time: an onnxruntime-node session for layers [from, to) and the KV cache of those
 * layers. Prefill and decode are the same call with T tokens; positions continue from the cache length.
 */
import ort from 'onnxruntime-node';
import { SplitLLMError } from '../../shared/errors.js';
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
  /** onnxruntime intra-op threads (default: onnxruntime's choice) */
  threads?: number;
}

export class SegmentRuntime {
  private past = new Map<number, { key: ort.Tensor; value: ort.Tensor }>();
  private cached = 0;

  private constructor(
    readonly config: ModelConfig,
    readonly segment: BuiltSegment,
    private readonly session: ort.InferenceSession,
  ) {
    this.reset();
  }

  static async create(pkg: ModelPackage, from: number, to: number, opts: RuntimeOptions = {}): Promise<SegmentRuntime> {
    const seg = buildSegment(pkg.config, pkg.weights, from, to, opts);
    return SegmentRuntime.fromBuilt(pkg.config, seg, opts);
  }

  static async fromBuilt(config: ModelConfig, seg: BuiltSegment, opts: RuntimeOptions = {}): Promise<SegmentRuntime> {
    const so: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all' };
    if (opts.threads) so.intraOpNumThreads = opts.threads;
    let session: ort.InferenceSession;
    try {
      session = seg.modelPath ? await ort.InferenceSession.create(seg.modelPath, so) : await ort.InferenceSession.create(seg.model!, so);
    } catch (e) {
      throw new SplitLLMError('E_RUNTIME', `onnxruntime could not load segment [${seg.from}, ${seg.to}): ${(e as Error).message.split('\n')[0]}`);
    }
    return new SegmentRuntime(config, { ...seg, model: undefined }, session); // the session holds its own copy of the bytes
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
        key: new ort.Tensor('float32', new Float32Array(0), [1, KV, 0, hd]),
        value: new ort.Tensor('float32', new Float32Array(0), [1, KV, 0, hd]),
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
    const feeds: Record<string, ort.Tensor> = {};
    if (this.segment.first) {
      if (input.length !== tokens) throw new SplitLLMError('E_BAD_ARGUMENT', `expected ${tokens} token ids, got ${input.length}`);
      const ids = new BigInt64Array(tokens);
      for (let i = 0; i < tokens; i++) {
        const id = input[i]!;
        if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new SplitLLMError('E_BAD_ARGUMENT', `token id ${id} is outside the vocabulary of ${c.vocabSize}`);
        ids[i] = BigInt(id);
      }
      feeds['input_ids'] = new ort.Tensor('int64', ids, [1, tokens]);
    } else {
      if (input.length !== tokens * c.dim) {
        throw new SplitLLMError('E_BAD_ARGUMENT', `hidden state has ${input.length} values, expected ${tokens}×${c.dim}`);
      }
      const h = input instanceof Float32Array ? input : Float32Array.from(input);
      feeds['hidden_states'] = new ort.Tensor('float32', h, [1, tokens, c.dim]);
    }
    if (this.to > this.from) {
      const pos = new BigInt64Array(tokens);
      for (let i = 0; i < tokens; i++) pos[i] = BigInt(this.cached + i);
      feeds['position_ids'] = new ort.Tensor('int64', pos, [1, tokens]);
    }
    for (const [i, kv] of this.past) {
      feeds[`past_key_${i}`] = kv.key;
      feeds[`past_value_${i}`] = kv.value;
    }
    const out = await this.session.run(feeds);
    if (opts.keepCache !== false) {
      for (const i of this.past.keys()) this.past.set(i, { key: out[`present_key_${i}`]!, value: out[`present_value_${i}`]! });
      this.cached += tokens;
    }
    const main = out[this.segment.last ? 'logits' : 'hidden_out']!;
    return { data: main.data as Float32Array, tokens, width: this.segment.last ? c.vocabSize : c.dim };
  }

  /** Copies out the KV cache of layers [from, to) ∩ own layers (for streaming to the other side). */
  exportKV(from = this.from, to = this.to): LayerKV[] {
    const out: LayerKV[] = [];
    for (let i = Math.max(from, this.from); i < Math.min(to, this.to); i++) {
      const kv = this.past.get(i)!;
      out.push({ layer: i, key: (kv.key.data as Float32Array).slice(), value: (kv.value.data as Float32Array).slice(), length: this.cached });
    }
    return out;
  }

  /** Takes in the KV cache of this segment's layers; every own layer must be given, at one length. */
  importKV(entries: LayerKV[]): void {
    const { nKvHeads: KV, headDim: hd } = this.config;
    const byLayer = new Map(entries.map((e) => [e.layer, e]));
    const lengths = new Set(entries.map((e) => e.length));
    if (lengths.size > 1) throw new SplitLLMError('E_BAD_ARGUMENT', 'KV entries disagree on the sequence length');
    const len = entries[0]?.length ?? 0;
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
        key: new ort.Tensor('float32', e.key, [1, KV, len, hd]),
        value: new ort.Tensor('float32', e.value, [1, KV, len, hd]),
      });
    }
    this.cached = len;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/**
 * The ONNX segment builder: layers [from, to) of a Llama-family model as one ONNX graph.
 *
 *   inputs   input_ids int64 [B,T]            (from = 0)     | hidden_states float [B,T,D] (from > 0)
 *            position_ids int64 [B,T]         (when the segment has layers)
 *            past_key_i, past_value_i float [B,KV,P,hd] for each own layer i ('resident': see below)
 *   outputs  logits float [B,T,V]             (to = L)       | hidden_out float [B,T,D]    (to < L)
 *            present_key_i, present_value_i float [B,KV,P+T,hd] ('reference') | new_key_i, new_value_i [B,KV,T,hd] ('resident')
 *
 * Attention comes in two forms that compute the same function (tested equal within 1e-4):
 * - 'resident' (default): the KV cache stays in the runtime's buffers and the graph only reads it.
 *   past_key_i is [B,KV,hd,C] (keys stored transposed, so scores are one MatMul) and past_value_i
 *   [B,KV,C,hd], for a capacity C ≥ P; row b holds position_ids[b,0] valid positions and the rest is
 *   masked. The outputs new_key_i / new_value_i [B,KV,T,hd] carry only the T new positions, which the
 *   runtime writes into its buffers (models/runtime/kv-cache.ts): no per-step copy of the cache, and
 *   sessions of different lengths batch without padding. Attention over the cache and over the new
 *   positions are scored apart and share one softmax.
 * - 'reference': standard ONNX ops in the textbook form (present = Concat(past, new) [B,KV,P+T,hd],
 *   a mask from position_ids or key_positions), the plain graph the other form is checked against.
 *
 * The resident graph uses onnxruntime's fused CPU kernels (SimplifiedLayerNormalization, its Skip form for
 * the residual adds, RotaryEmbedding, stacked projections with q's 1/√hd folded in); the reference graph
 * keeps plain ONNX ops.
 *
 * (onnxruntime's GroupQueryAttention with a shared past/present buffer was measured and not kept:
 * onnxruntime-node copies every output it returns, so a present buffer of C positions costs an
 * O(C) copy per layer and step — slower than the reference graph at position 1000.)
 *
 * Whether a segment starts from input_ids (`embed`) and ends with the final norm and LM head (`head`)
 * defaults to from = 0 and to = L; a chain sets them explicitly so that [0,0) is the embedding alone
 * (followed by [0,K) taking hidden states) and [L,L) the final norm and LM head alone. Attention is causal over
 * cached positions 0..P+T-1 (the KV cache holds positions 0..P-1 in order); the mask is built in the
 * graph from position_ids. Linear layers go through a `LinearEmitter` so that weight quantizers can
 * replace the float MatMul with MatMulNBits or integer kernels.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import { basename, join } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { layerLayout, type LinearSpec, TENSORS as W } from '../../shared/decoder.js';
import { ropeTables } from '../../shared/rope.js';
import type { ModelConfig } from '../manifest.js';
import type { WeightSource } from '../package.js';
import type { ExternalDataFile } from '../runtime/backend.js';
import { dtypeBytes, widen } from '../safetensors.js';
import { quantizedEmbedding } from './embedding.js';
import { DT, GraphBuilder } from './graph.js';

export interface LinearWeight {
  /** package tensor name, e.g. model.layers.0.self_attn.q_proj.weight */
  name: string;
  /** [outDim, inDim] row-major */
  data: Float32Array;
  outDim: number;
  inDim: number;
  layer: number;
}

/** A matrix's rows in order, in pieces of at most `rows` rows each (the last may be shorter). */
export type RowPieces = (rows: number) => Iterable<Float32Array>;

/** Emits y = x · Wᵀ for x [B,T,in]; returns y's value name. */
export interface LinearEmitter {
  readonly id: string;
  /**
   * Linears that read the same input may run as one (the rows of their weights stacked, the output
   * split): true for emitters whose weight handling is per output row and keyed by nothing but the rows
   * (float, plain blockwise), not for those with per-weight transforms or folds.
   */
  readonly stackable?: boolean;
  linear(g: GraphBuilder, x: string, w: LinearWeight): string;
  /**
   * The same linear from its weight's rows read a piece at a time (a large-vocabulary head: the table is
   * never held whole in float32), for emitters whose weight handling is per output row; the segment
   * builder uses it where an emitter has it and the package streams the table.
   */
  linearRows?(g: GraphBuilder, x: string, w: Omit<LinearWeight, 'data'> & { rows: RowPieces }): string;
  /**
   * A vector s to fold into an RMSNorm: the norm's weight is divided by s (SmoothQuant moves activation
   * scale into the linears that read the norm's output, which multiply their weights by s).
   */
  normScale?(normWeight: string): Float32Array | undefined;
}

/** float32 weights: one MatMul against the transposed [in, out] initializer. */
export const float32Linear: LinearEmitter = {
  id: 'fp32',
  stackable: true,
  linear(g, x, w) {
    const t = new Float32Array(w.data.length);
    const { outDim: O, inDim: I, data } = w;
    for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) t[i * O + o] = data[o * I + i]!;
    return g.op('MatMul', [x, g.f32(`${w.name}.T`, [I, O], t)]);
  },
};

/** How a segment computes attention (see the header). */
export const ATTENTION_KINDS = ['resident', 'reference'] as const;
export type AttentionKind = (typeof ATTENTION_KINDS)[number];

export interface SegmentOptions {
  /** attention form (default 'resident'; 'reference' is the textbook graph) */
  attention?: AttentionKind;
  /** the segment starts from input_ids through the embedding (default: from = 0) */
  embed?: boolean;
  /** the token embedding's weight bits (default 32: float; 8 or 4: blockwise codes in blocks of 32, models/onnx/embedding.ts) */
  embedBits?: number;
  /** a float embedding in the package's stored type (bf16/f16, gathered then cast; default true) or float32 (false: the browser edge) */
  embedAsStored?: boolean;
  /** the segment ends with the final norm and LM head (default: to = L) */
  head?: boolean;
  /** take key_positions [B, P+T] (−1 = padding), so that sessions of different lengths run as one batch */
  keyPositions?: boolean;
  /** Emitter for linear layers of each layer index (default float32). */
  linearFor?: (layer: number) => LinearEmitter;
  /**
   * Emitter of the LM head (default float32; with tied embeddings a float32 head shares the embedding's
   * initializer). A quantized head (MatMulNBits) reads a quarter or an eighth of the bytes per token.
   */
  headLinear?: LinearEmitter;
  /**
   * Write initializers to external data when the segment's weights pass this many bytes (default
   * 1.9 GB, below protobuf's 2 GB limit), in `dir` or else a temporary folder.
   */
  externalDataThreshold?: number;
  /** Folder for the external data file (and the model file when external data is used). */
  dir?: string;
  /** 'always' (with `dir`): the model file and its external data go to `dir` whatever the size, streamed as built (the segment cache) */
  externalData?: 'always';
  /** told after each layer is emitted (layers done, layers in the segment): a long build's progress */
  onLayer?: (done: number, total: number) => void;
}

export interface SegmentIO {
  from: number;
  to: number;
  nLayers: number;
  first: boolean;
  last: boolean;
  inputNames: string[];
  outputNames: string[];
  keyPositions: boolean;
  attention: AttentionKind;
}

export interface BuiltSegment extends SegmentIO {
  /** the serialized model when it holds its weights inline */
  model?: Uint8Array;
  /** the model file path when the weights went to external data */
  modelPath?: string;
  /** with `model`: the external data files it names, in memory (a cached segment the browser edge fetched) */
  externalData?: ExternalDataFile[];
  /** a temporary folder holding modelPath and its data, removed once a session has loaded them */
  temporaryDir?: string;
  /** sha256 (hex) of the files a streamed build wrote, by file name */
  sha256?: Record<string, string>;
  weightBytes: number;
  /** an imported export without past inputs (models/onnx-import): the runtime feeds every position each step */
  recompute?: boolean;
  /**
   * an imported export's quirks, learned at run time and shared by the runtimes of the segment:
   * `onePositionAfterPrefill` — the export runs several positions only from an empty cache (onnxruntime-genai's
   * mask subgraph), so later multi-position runs (prefill chunks, drafts) go one position at a time
   */
  quirks?: { onePositionAfterPrefill?: boolean };
}

export function segmentIO(c: ModelConfig, from: number, to: number, opts: { embed?: boolean; head?: boolean; keyPositions?: boolean; attention?: AttentionKind } = {}): SegmentIO {
  checkRange(c, from, to);
  const first = opts.embed ?? from === 0;
  const last = opts.head ?? to === c.nLayers;
  if (first && from !== 0) throw new SplitLLMError('E_SPLIT_RANGE', `segment [${from}, ${to}) cannot start from token ids: only a segment starting at layer 0 holds the embedding`);
  if (last && to !== c.nLayers) throw new SplitLLMError('E_SPLIT_RANGE', `segment [${from}, ${to}) cannot end in logits: only a segment ending at layer ${c.nLayers} holds the LM head`);
  const inputNames = [first ? 'input_ids' : 'hidden_states'];
  const outputNames = [last ? 'logits' : 'hidden_out'];
  if (to > from) inputNames.push('position_ids');
  const attention = opts.attention ?? 'resident';
  const keyPositions = to > from && attention === 'reference' && !!opts.keyPositions;
  if (keyPositions) inputNames.push('key_positions');
  const out = attention === 'resident' ? 'new' : 'present';
  for (let i = from; i < to; i++) {
    inputNames.push(`past_key_${i}`, `past_value_${i}`);
    outputNames.push(`${out}_key_${i}`, `${out}_value_${i}`);
  }
  return { from, to, nLayers: c.nLayers, first, last, inputNames, outputNames, keyPositions, attention };
}

export function checkRange(c: ModelConfig, from: number, to: number): void {
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > c.nLayers || from > to) {
    throw new SplitLLMError('E_SPLIT_RANGE', `segment [${from}, ${to}) is outside the model's ${c.nLayers} layers: use 0 ≤ from ≤ to ≤ ${c.nLayers}`);
  }
}

/** The model's RoPE tables [maxSeq, headDim/2] (shared/rope.ts: plain, or with the config's scaling). */
export function modelRopeTables(c: ModelConfig): { cos: Float32Array; sin: Float32Array } {
  return ropeTables(c.maxSeq, c.headDim, c.ropeTheta, c.ropeScaling);
}

/** A full disk while a segment is written is the user's to fix: a typed one-line error naming the folder. */
function diskError(e: unknown, dir: string, bytes: number): unknown {
  const code = e instanceof Error && 'code' in e ? e.code : undefined;
  if (code !== 'ENOSPC' && code !== 'EDQUOT') return e;
  return new SplitLLMError('E_RUNTIME', `no space left in ${dir} for a segment${bytes ? ` of ${(bytes / 1e9).toFixed(2)} GB` : ''}: free disk space, or point $SPLITLLM_SEGMENT_CACHE (and $TMPDIR) at a disk with room`);
}

export function buildSegment(c: ModelConfig, weights: WeightSource, from: number, to: number, opts: SegmentOptions = {}): BuiltSegment {
  // an imported ONNX export cuts its own graph (models/onnx-import)
  if (weights.buildSegment) return weights.buildSegment(c, from, to, opts);
  const io = segmentIO(c, from, to, opts);
  const g = new GraphBuilder(`splitllm_${from}_${to}`);
  // a segment written to a folder streams its weights to external data as they are made (memory: a tensor)
  const streamTo = opts.dir && opts.externalData === 'always' ? join(opts.dir, `segment_${from}_${to}.onnx`) : undefined;
  if (streamTo) g.streamExternal(`${streamTo}.data`);
  try {
    emit();
  } catch (e) {
    g.abandon();
    throw e;
  }
  function emit(): void {
    const D = c.dim;
    const KV = c.nKvHeads;
    const hd = c.headDim;
    const G = c.nHeads / c.nKvHeads;
    const linearFor = opts.linearFor ?? (() => float32Linear);
    // linear weights are read into one buffer reused from linear to linear: an emitter keeps what it
    // makes of a weight (a transposed copy, codes), never the weight it is given, and fresh memory is
    // slow to touch (a bf16 1B layer read afresh cost more than its quantization)
    let scratch = new Float32Array(0);
    const take = (n: number): Float32Array => {
      if (scratch.length < n) scratch = new Float32Array(Math.max(n, Math.ceil(scratch.length * 1.25)));
      return scratch.subarray(0, n);
    };
    const weightOf = (name: string, n: number, into?: Float32Array): Float32Array => {
      if (weights.readInto) return weights.readInto(name, into ?? take(n));
      const w = weights.get(name);
      if (into) into.set(w);
      return into ?? w;
    };

    /** A [·, D] tensor's rows widened from the package's stored bytes a piece at a time, where it streams them. */
    const storedRows = (name: string): RowPieces | undefined => {
      const st = weights.stored?.(name);
      if (!st) return undefined;
      return function* (n) {
        for (const b of st.chunks(n * D * dtypeBytes(st.dtype))) yield widen(b, st.dtype);
      };
    };
    /**
     * The token embedding as a float32 initializer: widened from the package's stored table a chunk at a
     * time (straight to the external data file when the segment streams: a 1B table is 1 GB as float32).
     */
    const floatTable = (): string => {
      const rows = storedRows(W.embed);
      if (!rows) return g.f32(W.embed, [c.vocabSize, D], weights.get(W.embed));
      const pieces = function* (): Iterable<Uint8Array> {
        for (const f of rows(Math.max(1, Math.floor((4 << 20) / D)))) yield new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
      };
      return g.initializerPieces(W.embed, DT.FLOAT, [c.vocabSize, D], pieces(), c.vocabSize * D * 4);
    };
    let x: string;
    // a float embedding stays in the type the package stores it in (a bf16 or f16 table is half a float32
    // one: the largest tensor of a 1B or 8B front), gathered and cast to float; where a float32 tied head
    // shares its table, or a caller asks for float (the browser edge), float32
    const tiedFloatHead = io.last && c.tiedEmbeddings && (opts.headLinear ?? float32Linear) === float32Linear;
    const stored = io.first && (opts.embedBits ?? 32) >= 32 && opts.embedAsStored !== false && !tiedFloatHead ? weights.stored?.(W.embed) : undefined;
    const halfEmbedding = stored && stored.dtype !== 'F32' ? stored : undefined;
    if (io.first) {
      g.input('input_ids', DT.INT64, ['batch', 'tokens']);
      if ((opts.embedBits ?? 32) < 32) {
        // quantized a piece of the stored table at a time where the package can stream it (never the float32 table)
        x = quantizedEmbedding(g, W.embed, storedRows(W.embed) ?? weights.get(W.embed), c.vocabSize, D, opts.embedBits!, 32, 'input_ids');
      }
      else if (halfEmbedding) {
        // copied a chunk at a time (straight to the external data file when the segment streams)
        const t = g.initializerPieces(W.embed, halfEmbedding.dtype === 'BF16' ? DT.BFLOAT16 : DT.FLOAT16, [c.vocabSize, D], halfEmbedding.chunks(16 << 20), c.vocabSize * D * 2);
        x = g.op('Cast', [g.op('Gather', [t, 'input_ids'], { axis: 0 })], { to: DT.FLOAT });
      } else x = g.op('Gather', [floatTable(), 'input_ids'], { axis: 0 });
    } else {
      x = g.input('hidden_states', DT.FLOAT, ['batch', 'tokens', D]);
    }

    // the default graph uses onnxruntime's fused kernels where they are faster (measured: bench/kv-position
    // and bench/decode); the reference graph stays in plain ONNX ops, the form the fused one is tested against
    const fused = io.attention === 'resident';
    const normWeight = (wname: string, fold?: LinearEmitter): string => {
      let nw = weights.get(wname);
      const s = fold?.normScale?.(wname);
      if (s) nw = nw.map((v, i) => v / s[i]!);
      return g.f32(wname, [D], nw);
    };
    const rms = (v: string, wname: string, fold?: LinearEmitter): string => {
      if (fused) return g.op('SimplifiedLayerNormalization', [v, normWeight(wname, fold)], { axis: -1, epsilon: { float: c.normEps }, stash_type: 1 });
      const sq = g.op('Mul', [v, v]);
      const mean = g.op('ReduceMean', [sq], { axes: [-1], keepdims: 1 });
      const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [mean, g.scalar(c.normEps)])])]);
      return g.op('Mul', [g.op('Mul', [v, inv]), normWeight(wname, fold)]);
    };
    /**
     * The residual stream is x + `skip` (a sublayer's output not yet added): the fused graph adds it inside
     * the next norm (SkipSimplifiedLayerNormalization, which also returns the sum), the plain one with an Add.
     */
    let skip: string | undefined;
    const addSkip = (): void => {
      if (skip) x = g.op('Add', [x, skip]);
      skip = undefined;
    };
    const residualNorm = (wname: string, fold?: LinearEmitter): string => {
      if (!fused || !skip) {
        addSkip();
        return rms(x, wname, fold);
      }
      const sum = g.fresh('residual');
      const [n] = g.opMulti('SkipSimplifiedLayerNormalization', [x, skip, normWeight(wname, fold)], { epsilon: { float: c.normEps } }, { domain: 'com.microsoft', outputs: [g.fresh('norm'), '', '', sum] });
      x = sum;
      skip = undefined;
      return n!;
    };

    if (to > from) {
      g.input('position_ids', DT.INT64, ['batch', 'tokens']);
      if (io.keyPositions) g.input('key_positions', DT.INT64, ['batch', 'total']);
      const { cos, sin } = modelRopeTables(c);
      const cosT = g.f32('rope_cos', [c.maxSeq, hd / 2], cos);
      const sinT = g.f32('rope_sin', [c.maxSeq, hd / 2], sin);
      // [B,T,1,hd/2]: broadcast over heads
      const cosP = fused ? '' : g.op('Unsqueeze', [g.op('Gather', [cosT, 'position_ids'], { axis: 0 }), g.i64([2])]);
      const sinP = fused ? '' : g.op('Unsqueeze', [g.op('Gather', [sinT, 'position_ids'], { axis: 0 }), g.i64([2])]);

      /** rotates the heads of a projection [B,T,heads·hd]; returns [B,T,heads,hd] (the fused graph: `shape`, one Reshape) */
      const rope = (flat: string, heads: number, shape: number[] = [0, 0, heads, hd]): string => {
        if (fused) {
          // com.microsoft RotaryEmbedding with the same tables
          const r = g.op('RotaryEmbedding', [flat, 'position_ids', cosT, sinT], { interleaved: c.ropeStyle === 'interleaved' ? 1 : 0, num_heads: heads }, { domain: 'com.microsoft' });
          return g.op('Reshape', [r, g.i64(shape)]);
        }
        const v = g.op('Reshape', [flat, g.i64([0, 0, heads, hd])]);
        if (c.ropeStyle === 'interleaved') {
          const pairs = g.op('Reshape', [v, g.i64([0, 0, heads, hd / 2, 2])]);
          const x0 = g.op('Gather', [pairs, g.i64([0], true)], { axis: 4 });
          const x1 = g.op('Gather', [pairs, g.i64([1], true)], { axis: 4 });
          const o0 = g.op('Sub', [g.op('Mul', [x0, cosP]), g.op('Mul', [x1, sinP])]);
          const o1 = g.op('Add', [g.op('Mul', [x0, sinP]), g.op('Mul', [x1, cosP])]);
          const both = g.op('Concat', [g.op('Unsqueeze', [o0, g.i64([4])]), g.op('Unsqueeze', [o1, g.i64([4])])], { axis: 4 });
          return g.op('Reshape', [both, g.i64([0, 0, heads, hd])]);
        }
        const x1 = g.op('Slice', [v, g.i64([0]), g.i64([hd / 2]), g.i64([3])]);
        const x2 = g.op('Slice', [v, g.i64([hd / 2]), g.i64([hd]), g.i64([3])]);
        const o1 = g.op('Sub', [g.op('Mul', [x1, cosP]), g.op('Mul', [x2, sinP])]);
        const o2 = g.op('Add', [g.op('Mul', [x2, cosP]), g.op('Mul', [x1, sinP])]);
        return g.op('Concat', [o1, o2], { axis: 3 });
      };

      let mask: string | undefined;
      let newMask: string | undefined;
      let capacity: string | undefined;
      const scale = g.scalar(1 / Math.sqrt(hd));

      for (let i = from; i < to; i++) {
        const lin = linearFor(i);
        const layer = layerLayout(c, i);
        const linear = (v: string, l: LinearSpec): string => {
          const y = lin.linear(g, v, { name: l.name, data: weightOf(l.name, l.out * l.in), outDim: l.out, inDim: l.in, layer: i });
          return l.bias ? g.op('Add', [y, g.f32(l.bias, [l.out], weights.get(l.bias))]) : y;
        };
        /**
         * linears reading the same input: one stacked MatMul and a Split in the fused graph (the first one's
         * rows and bias times `firstScale`), else one each
         */
        const stacked = fused && lin.stackable;
        const linears = (v: string, ls: LinearSpec[], firstScale = 1): string[] => {
          if (!stacked) return ls.map((l) => linear(v, l));
          const out = ls.reduce((n, l) => n + l.out, 0);
          const data = take(out * ls[0]!.in);
          let row = 0;
          for (const l of ls) {
            weightOf(l.name, l.out * l.in, data.subarray(row * l.in, (row + l.out) * l.in));
            row += l.out;
          }
          if (firstScale !== 1) for (let j = 0; j < ls[0]!.out * ls[0]!.in; j++) data[j]! *= firstScale;
          let y = lin.linear(g, v, { name: ls.map((l) => l.name).join('+'), data, outDim: out, inDim: ls[0]!.in, layer: i });
          if (ls.some((l) => l.bias)) {
            const bias = new Float32Array(out);
            let at = 0;
            for (const [j, l] of ls.entries()) {
              if (l.bias) bias.set(j === 0 && firstScale !== 1 ? weights.get(l.bias).map((b) => b * firstScale) : weights.get(l.bias), at);
              at += l.out;
            }
            y = g.op('Add', [y, g.f32(ls.map((l) => l.bias ?? 'none').join('+'), [out], bias)]);
          }
          return g.opMulti('Split', [y, g.i64(ls.map((l) => l.out))], { axis: -1 }, { outputs: ls.map((l) => g.fresh(`${l.name}.out`)) });
        };
        const L = layer.linears;
        const resident = io.attention === 'resident';
        g.input(`past_key_${i}`, DT.FLOAT, resident ? ['batch', KV, hd, 'capacity'] : ['batch', KV, 'past', hd]);
        g.input(`past_value_${i}`, DT.FLOAT, ['batch', KV, resident ? 'capacity' : 'past', hd]);

        const h = residualNorm(layer.attnNorm, lin);
        // the stacked projection carries the attention's 1/√hd in q's rows (rotation is linear, so it commutes)
        const [qLin, kLin, v] = linears(h, [L.q, L.k, L.v], 1 / Math.sqrt(hd)) as [string, string, string];
        const k = rope(kLin, KV);
        let merged: string;
        if (resident) {
          // q → [B,KV,G·T,hd] (rows g-major; head h = kv·G + g, as Hugging Face's repeat_kv and llama2.c's h / kv_mul)
          const qr = rope(qLin, c.nHeads, [0, 0, KV, G, hd]);
          const q5 = g.op('Transpose', [stacked ? qr : g.op('Mul', [qr, scale])], { perm: [0, 2, 3, 1, 4] });
          const q4 = g.op('Reshape', [q5, g.i64([0, KV, -1, hd])]);
          const newK = g.op('Transpose', [k], { perm: [0, 2, 1, 3] }, { outputs: [`new_key_${i}`] }); // [B,KV,T,hd]
          const newV = g.op('Transpose', [g.op('Reshape', [v, g.i64([0, 0, KV, hd])])], { perm: [0, 2, 1, 3] }, { outputs: [`new_value_${i}`] });
          g.output(`new_key_${i}`, DT.FLOAT, ['batch', KV, 'tokens', hd]);
          g.output(`new_value_${i}`, DT.FLOAT, ['batch', KV, 'tokens', hd]);
          if (!mask) {
            // cached position j is visible when j < the row's length (position_ids[b,0]): [B,1,1,C];
            // new position u to new position t when u ≤ t, rows g-major: [G·T,T]
            // every layer's cache has the same capacity C (one KvCache): its Shape is read once
            capacity = g.op('Gather', [g.op('Shape', [`past_key_${i}`]), g.i64([3])], { axis: 0 }); // [1]
            const C = g.op('Squeeze', [capacity, g.i64([0])]);
            const T = g.op('Gather', [g.op('Shape', ['position_ids']), g.i64([1], true)], { axis: 0 });
            const len = g.op('Slice', ['position_ids', g.i64([0]), g.i64([1]), g.i64([1])]); // [B,1]
            const cached = g.op('Less', [g.op('Range', [g.i64([0], true), C, g.i64([1], true)]), len]); // [B,C]
            mask = g.op('Unsqueeze', [g.op('Where', [cached, g.scalar(0), g.scalar(-Infinity)]), g.i64([1, 2])]);
            const steps = g.op('Range', [g.i64([0], true), T, g.i64([1], true)]);
            const causal = g.op('LessOrEqual', [steps, g.op('Unsqueeze', [steps, g.i64([1])])]); // [T,T]
            newMask = g.op('Tile', [g.op('Where', [causal, g.scalar(0), g.scalar(-Infinity)]), g.i64([G, 1])]);
          }
          const scoresPast = g.op('Add', [g.op('MatMul', [q4, `past_key_${i}`]), mask]); // [B,KV,G·T,C]
          const scoresNew = g.op('Add', [g.op('MatMul', [q4, g.op('Transpose', [newK], { perm: [0, 1, 3, 2] })]), newMask!]); // [B,KV,G·T,T]
          const probs = g.op('Softmax', [g.op('Concat', [scoresPast, scoresNew], { axis: 3 })], { axis: -1 }); // [B,KV,G·T,C+T]
          const pPast = g.op('Slice', [probs, g.i64([0]), capacity!, g.i64([3])]);
          const pNew = g.op('Slice', [probs, capacity!, g.i64([Number.MAX_SAFE_INTEGER]), g.i64([3])]);
          const ctx = g.op('Add', [g.op('MatMul', [pPast, `past_value_${i}`]), g.op('MatMul', [pNew, newV])]); // [B,KV,G·T,hd]
          const ctx5 = g.op('Reshape', [ctx, g.i64([0, KV, G, -1, hd])]); // [B,KV,G,T,hd]
          merged = g.op('Reshape', [g.op('Transpose', [ctx5], { perm: [0, 3, 1, 2, 4] }), g.i64([0, 0, c.nHeads * hd])]);
        } else {
          // q → [B,KV,G,T,hd] (head h = kv·G + g, as Hugging Face's repeat_kv and llama2.c's h / kv_mul)
          const q = rope(qLin, c.nHeads);
          const q5 = g.op('Transpose', [g.op('Mul', [g.op('Reshape', [q, g.i64([0, 0, KV, G, hd])]), scale])], { perm: [0, 2, 3, 1, 4] });
          const kT = g.op('Transpose', [k], { perm: [0, 2, 1, 3] });
          const vT = g.op('Transpose', [g.op('Reshape', [v, g.i64([0, 0, KV, hd])])], { perm: [0, 2, 1, 3] });
          const presentK = g.op('Concat', [`past_key_${i}`, kT], { axis: 2 }, { outputs: [`present_key_${i}`] });
          const presentV = g.op('Concat', [`past_value_${i}`, vT], { axis: 2 }, { outputs: [`present_value_${i}`] });
          g.output(`present_key_${i}`, DT.FLOAT, ['batch', KV, 'total', hd]);
          g.output(`present_value_${i}`, DT.FLOAT, ['batch', KV, 'total', hd]);

          if (!mask) {
            // mask [B,1,1,T,S]: a key is visible to a query at position p when its position is ≤ p. Keys sit at
            // their positions (key j at position j) unless the segment takes key_positions [B,S] — batches of
            // sessions with different lengths pad their caches and mark padding with −1.
            const queryPos = g.op('Unsqueeze', ['position_ids', g.i64([-1])]); // [B,T,1]
            let visible: string;
            if (io.keyPositions) {
              const kp = g.op('Unsqueeze', ['key_positions', g.i64([1])]); // [B,1,S]
              visible = g.op('And', [g.op('LessOrEqual', [kp, queryPos]), g.op('GreaterOrEqual', [kp, g.i64([0], true)])]);
            } else {
              const S = g.op('Gather', [g.op('Shape', [presentK]), g.i64([2], true)], { axis: 0 });
              visible = g.op('LessOrEqual', [g.op('Range', [g.i64([0], true), S, g.i64([1], true)]), queryPos]);
            }
            const bias = g.op('Where', [visible, g.scalar(0), g.scalar(-Infinity)]);
            mask = g.op('Unsqueeze', [bias, g.i64([1, 2])]);
          }
          const keys = g.op('Unsqueeze', [g.op('Transpose', [presentK], { perm: [0, 1, 3, 2] }), g.i64([2])]); // [B,KV,1,hd,S]
          const scores = g.op('Add', [g.op('MatMul', [q5, keys]), mask]); // [B,KV,G,T,S]
          const probs = g.op('Softmax', [scores], { axis: -1 });
          const ctx = g.op('MatMul', [probs, g.op('Unsqueeze', [presentV, g.i64([2])])]); // [B,KV,G,T,hd]
          merged = g.op('Reshape', [g.op('Transpose', [ctx], { perm: [0, 3, 1, 2, 4] }), g.i64([0, 0, c.nHeads * hd])]);
        }
        skip = linear(merged, L.o);

        const f = residualNorm(layer.ffnNorm, lin);
        const [gate, up] = linears(f, [L.gate, L.up]) as [string, string];
        const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
        skip = linear(act, L.down);
        opts.onLayer?.(i + 1 - from, to - from);
      }
    }

    if (io.last) {
      const h = residualNorm(W.norm);
      const headLinear = opts.headLinear ?? float32Linear;
      if (headLinear !== float32Linear) {
        // a head at its own precision: its own initializers, also when tied to the embedding
        // a tied head reads the embedding's table under the head's own name: a quantized embedding in the
        // same segment has initializers of its own under the embedding's
        const table = c.tiedEmbeddings ? W.embed : W.lmHead;
        const rows = headLinear.linearRows ? storedRows(table) : undefined;
        const shape = { name: W.lmHead, outDim: c.vocabSize, inDim: D, layer: c.nLayers };
        // quantized a piece of rows at a time where the emitter can (a 1B tied table is 1 GB as float32)
        const head = rows && headLinear.linearRows ? headLinear.linearRows(g, h, { ...shape, rows }) : headLinear.linear(g, h, { ...shape, data: weights.get(table) });
        g.op('Identity', [head], {}, { outputs: ['logits'] });
      } else if (c.tiedEmbeddings) {
        // Gemm with transB shares the [V,D] embedding initializer instead of storing a transposed copy
        // (a quantized embedding leaves no float table to share)
        const embed = io.first && (opts.embedBits ?? 32) >= 32 && !halfEmbedding ? W.embed : floatTable();
        const flat = g.op('Reshape', [h, g.i64([-1, D])]);
        const y = g.op('Gemm', [flat, embed], { transB: 1 });
        const outShape = g.op('Concat', [g.op('Slice', [g.op('Shape', [h]), g.i64([0]), g.i64([2])]), g.i64([c.vocabSize])], { axis: 0 });
        g.op('Reshape', [y, outShape], {}, { outputs: ['logits'] });
      } else {
        const head = float32Linear.linear(g, h, { name: W.lmHead, data: weights.get(W.lmHead), outDim: c.vocabSize, inDim: D, layer: c.nLayers });
        g.op('Identity', [head], {}, { outputs: ['logits'] });
      }
      g.output('logits', DT.FLOAT, ['batch', 'tokens', c.vocabSize]);
    } else {
      addSkip();
      g.op('Identity', [x], {}, { outputs: ['hidden_out'] });
      g.output('hidden_out', DT.FLOAT, ['batch', 'tokens', D]);
    }

  }

  const weightBytes = g.initializerBytes();
  if (streamTo) {
    const model = g.serialize();
    writeFileSync(streamTo, model);
    // the files' sha256 as written (the segment cache records them without reading gigabytes back)
    const sha256 = { [basename(streamTo)]: createHash('sha256').update(model).digest('hex'), [`${basename(streamTo)}.data`]: g.externalSha256! };
    return { ...io, modelPath: streamTo, weightBytes, sha256 };
  }
  const threshold = opts.externalDataThreshold ?? 1.9e9;
  if (weightBytes > threshold) {
    // past protobuf's 2 GB: external data in the folder given, else in a temporary one the runtime removes once loaded
    const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'splitllm-segment-'));
    const modelPath = join(dir, `segment_${from}_${to}.onnx`);
    try {
      const bytes = g.serialize(`${modelPath}.data`);
      writeFileSync(modelPath, bytes);
    } catch (e) {
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
      throw diskError(e, dir, weightBytes);
    }
    return { ...io, modelPath, weightBytes, ...(opts.dir ? {} : { temporaryDir: dir }) };
  }
  return { ...io, model: g.serialize(), weightBytes };
}

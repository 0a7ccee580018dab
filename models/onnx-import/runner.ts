/**
 * Drives one segment of an imported export (or the whole export) by its `SegmentIO`: ids or the float32
 * stream in, the stream or logits out, attention mask and position ids made here, each own layer's
 * present handed back as the next step's past (the export's own Concat: the cache is the export's).
 * An export without past inputs runs by recomputation: every step feeds the whole sequence so far (the
 * stream rows a back segment received are kept) and the last rows are returned.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { f16ArrayToF32 } from '../../shared/tensor.js';
import { inferenceBackend, type BackendSessionOptions, type InferenceBackend, type InferenceSession, type Tensor } from '../runtime/backend.js';
import type { ExportIO, FloatType, IdDtype } from './analyze.js';
import type { SegmentIO } from './cut.js';
import { encodeOnnx, type OnnxGraph } from './load.js';

/** The whole export as one segment: ids in, logits out, every layer's cache. */
export function wholeIO(io: ExportIO): SegmentIO {
  return {
    from: 0,
    to: io.nLayers,
    ids: { ...io.inputIds, shapeOnly: false },
    logits: io.logits,
    ...(io.attentionMask ? { attentionMask: io.attentionMask } : {}),
    ...(io.positionIds ? { positionIds: io.positionIds } : {}),
    past: io.past ?? { key: [], value: [] },
    present: io.past && io.present ? io.present : { key: [], value: [] },
  };
}

export type SegmentInput = { ids: readonly number[] } | { hidden: Float32Array; tokens: number };

export class ImportedSegmentRunner {
  private past = new Map<string, Tensor>();
  private length = 0;
  /** recomputation: everything fed so far */
  private historyIds: number[] = [];
  private historyHidden: Float32Array[] = [];

  private constructor(
    private readonly session: InferenceSession,
    private readonly backend: InferenceBackend,
    readonly io: SegmentIO,
    private readonly exportIO: ExportIO,
  ) {}

  /** `graph`: a cut segment, ONNX bytes, or the path of an export file (its external data beside it). */
  static async create(graph: OnnxGraph | Uint8Array | string, io: SegmentIO, exportIO: ExportIO, opts: BackendSessionOptions = {}): Promise<ImportedSegmentRunner> {
    const backend = await inferenceBackend();
    const model = typeof graph === 'string' || graph instanceof Uint8Array ? graph : encodeOnnx(graph);
    return new ImportedSegmentRunner(await backend.createSession(model, opts), backend, io, exportIO);
  }

  get positions(): number {
    return this.length;
  }

  get recomputes(): boolean {
    return this.io.past.key.length === 0 && this.exportIO.past === undefined;
  }

  reset(): void {
    this.past.clear();
    this.length = 0;
    this.historyIds = [];
    this.historyHidden = [];
  }

  /** Runs `input`'s new tokens; returns their rows of the stream [T, D] or of the logits [T, V]. */
  async run(input: SegmentInput): Promise<{ data: Float32Array; tokens: number }> {
    const io = this.io;
    const D = this.exportIO.hiddenSize;
    const T = 'ids' in input ? input.ids.length : input.tokens;
    if (T <= 0) throw new SplitLLMError('E_BAD_ARGUMENT', 'a step needs at least one token');
    if ('hidden' in input && input.hidden.length !== T * D) throw new SplitLLMError('E_BAD_ARGUMENT', `the stream has ${input.hidden.length} values, ${T} tokens of ${D} need ${T * D}`);
    const recompute = this.recomputes;
    if (recompute) {
      if ('ids' in input) this.historyIds.push(...input.ids);
      else this.historyHidden.push(input.hidden);
    }
    const P = recompute ? 0 : this.length;
    const fed = recompute ? this.length + T : T;
    const feeds: Record<string, Tensor> = {};
    if (io.ids) {
      const ids = io.ids.shapeOnly ? new Array<number>(fed).fill(0) : 'ids' in input ? (recompute ? this.historyIds : [...input.ids]) : undefined;
      if (!ids) throw new SplitLLMError('E_RUNTIME', 'this segment reads token ids');
      feeds[io.ids.name] = this.idTensor(io.ids.dtype, ids, [1, fed]);
    }
    if (io.hiddenIn) {
      if (!('hidden' in input)) throw new SplitLLMError('E_RUNTIME', 'this segment reads the hidden stream');
      let rows = input.hidden;
      if (recompute) {
        rows = new Float32Array(fed * D);
        let o = 0;
        for (const h of this.historyHidden) {
          rows.set(h, o);
          o += h.length;
        }
      }
      feeds[io.hiddenIn] = this.backend.float32(rows, [1, fed, D]);
    }
    if (io.attentionMask) feeds[io.attentionMask.name] = this.idTensor(io.attentionMask.dtype, new Array<number>(P + fed).fill(1), [1, P + fed]);
    if (io.positionIds) feeds[io.positionIds.name] = this.idTensor(io.positionIds.dtype, Array.from({ length: fed }, (_, i) => P + i), [1, fed]);
    io.past.key.forEach((k, i) => {
      feeds[k] = this.past.get(k) ?? this.emptyCache();
      const v = io.past.value[i]!;
      feeds[v] = this.past.get(v) ?? this.emptyCache();
    });
    const out = await this.session.run(feeds);
    io.past.key.forEach((k, i) => {
      const pk = out[io.present.key[i]!];
      const pv = out[io.present.value[i]!];
      if (!pk || !pv) throw new SplitLLMError('E_RUNTIME', `the segment did not return ${io.present.key[i]}`);
      this.past.set(k, pk);
      this.past.set(io.past.value[i]!, pv);
    });
    this.length += T;
    const name = io.hiddenOut ?? io.logits;
    if (!name) throw new SplitLLMError('E_RUNTIME', 'the segment has no output');
    const data = floatData(out[name], name);
    const width = io.hiddenOut ? D : this.exportIO.vocabSize;
    if (data.length !== fed * width) throw new SplitLLMError('E_RUNTIME', `${name} has ${data.length} values, expected ${fed} × ${width}`);
    return { data: fed === T ? data : data.slice((fed - T) * width), tokens: T };
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  private idTensor(dtype: IdDtype, values: readonly number[], dims: number[]): Tensor {
    return dtype === 'int64' ? this.backend.int64(BigInt64Array.from(values, (v) => BigInt(v)), dims) : this.backend.int32(Int32Array.from(values), dims);
  }

  private emptyCache(): Tensor {
    const dims = [1, this.exportIO.kvHeads, 0, this.exportIO.headDim];
    return cacheTensor(this.backend, this.exportIO.floatType, dims);
  }
}

function cacheTensor(b: InferenceBackend, t: FloatType, dims: number[]): Tensor {
  return t === 'float16' ? b.float16(new Uint16Array(0), dims) : b.float32(new Float32Array(0), dims);
}

/** A float32 or float16 output as float32. */
export function floatData(t: Tensor | undefined, name: string): Float32Array {
  const d = t?.data;
  if (d instanceof Float32Array) return d;
  if (t?.type === 'float16' && d instanceof Uint16Array) return f16ArrayToF32(d);
  throw new SplitLLMError('E_RUNTIME', `segment output ${name} is missing or not float32/float16`);
}

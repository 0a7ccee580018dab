/**
 * Graph surgery: an imported export cut at a layer boundary K into a front graph (token ids → the
 * residual stream after layer K−1, layers [0, K)) and a back graph (that stream → logits, layers [K, L)).
 *
 * - The tensors that cross the cut are those the front produces and the back reads. One tensor is the
 *   residual stream itself; two are the inputs of the back's first skip-norm (fused exports carry the
 *   stream as `input + skip`, the sum being the node's extra output): the front then sends their sum and
 *   the back's node becomes the plain norm of it. Anything else is refused, naming the tensors.
 * - What depends only on graph inputs other than the ids' values (masks, position ids, rotary caches,
 *   shapes) is recomputed on each side that needs it, not sent. A back that needs the ids only for their
 *   shape (masks built from `Shape(input_ids)`) gets a zero tensor of that shape: the ids are not sent
 *   (the hidden states are, and they reveal the ids to a cloud holding the weights). A side that reads another side's past KV only for its shape reads its own first layer's.
 * - Each side keeps its own layers' KV inputs and outputs under the export's names. The stream crosses as
 *   float32 [B, T, D] (`hidden_states` in, `hidden_out` out), cast from and to the export's float type.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { nodeRegions, type ExportIO, type IdDtype, type Region } from './analyze.js';
import { castTo, DT, nameOf, node, valueInfo, type OnnxGraph, type OnnxNode, type TensorProto, type ValueInfo } from './load.js';

export const HIDDEN_IN = 'hidden_states';
export const HIDDEN_OUT = 'hidden_out';

/** How to drive one cut segment (recorded beside its graph). */
export interface SegmentIO {
  from: number;
  to: number;
  /** the ids input: real ids on the front; on the back a zero tensor of their shape (`shapeOnly`) */
  ids?: { name: string; dtype: IdDtype; shapeOnly: boolean };
  hiddenIn?: string;
  hiddenOut?: string;
  logits?: string;
  attentionMask?: { name: string; dtype: IdDtype };
  positionIds?: { name: string; dtype: IdDtype };
  /** own layers' past inputs and present outputs (empty when the export has no past inputs) */
  past: { key: string[]; value: string[] };
  present: { key: string[]; value: string[] };
}

export interface CutSegment {
  graph: OnnxGraph;
  io: SegmentIO;
}

const AXIS_LAST = { name: 'axis', type: 2, i: -1 };
const SKIP_NORMS = new Set(['Add', 'SkipSimplifiedLayerNormalization', 'SkipLayerNormalization']);
/** Ops whose outputs say nothing about their input's values. */
const SHAPE_OPS = new Set(['Shape', 'Size']);

/** Front [0, K) from ids and back [K, L) to logits. */
export function cutExport(g: OnnxGraph, io: ExportIO, K: number, where = 'the export'): { front: CutSegment; back: CutSegment } {
  if (!Number.isInteger(K) || K < 0 || K > io.nLayers) throw new SplitLLMError('E_SPLIT_RANGE', `split ${K} is outside 0..${io.nLayers} for this ${io.nLayers}-layer model`);
  const cut = new ExportCutter(g, io, where);
  return { front: cut.segment(0, K, true, false), back: cut.segment(K, io.nLayers, false, true) };
}

interface Boundary {
  /** the tensors that cross it (one, or a skip-norm's two inputs) */
  tensors: string[];
  /** the node reading both tensors, rewritten on the later side */
  rewrite?: number;
}

/** The analysis shared by every cut of one export. */
export class ExportCutter {
  private readonly nodes: OnnxNode[];
  private readonly regions: Region[];
  private readonly producer = new Map<string, number>();
  private readonly consumers = new Map<string, number[]>();
  private readonly graphInputs: Map<string, ValueInfo>;
  /** tensors whose values depend on the ids' values (Shape/Size break the chain) */
  private readonly tainted = new Set<string>();

  constructor(
    private readonly g: OnnxGraph,
    private readonly io: ExportIO,
    private readonly where: string,
  ) {
    this.nodes = g.nodes;
    this.regions = nodeRegions(g, io);
    this.nodes.forEach((n, i) => n.output.forEach((o) => o && this.producer.set(o, i)));
    this.nodes.forEach((n, i) => n.input.forEach((x) => x && this.consumers.set(x, [...(this.consumers.get(x) ?? []), i])));
    this.graphInputs = new Map(g.inputs.map((v) => [nameOf(v), v]));
    this.tainted.add(io.inputIds.name);
    for (const n of this.nodes) {
      if (SHAPE_OPS.has(n.opType)) continue;
      if (n.input.some((x) => x && this.tainted.has(x))) for (const o of n.output) if (o) this.tainted.add(o);
    }
  }

  private layerByOutput?: Map<string, number>;

  /** The layer of the node that makes `tensor` (the LM head's epilogue is L; −1: no layer, or not made by a node). */
  layerOf(tensor: string): number {
    if (!this.layerByOutput) {
      const m = new Map<string, number>();
      this.nodes.forEach((n, i) => {
        const r = this.regions[i]!;
        const l = r.kind === 'layer' ? r.layer : r.kind === 'epilogue' ? this.io.nLayers : -1;
        for (const o of n.output) if (o) m.set(o, l);
      });
      this.layerByOutput = m;
    }
    return this.layerByOutput.get(tensor) ?? -1;
  }

  /** Which side of boundary K node i is on ('shared': constants and what only reads graph inputs' shapes and non-id inputs). */
  private sideOf(i: number, K: number): 'before' | 'after' | 'shared' {
    const r = this.regions[i]!;
    if (r.kind === 'layer') return r.layer < K ? 'before' : 'after';
    if (r.kind === 'epilogue') return 'after';
    if (r.kind === 'prologue' && this.nodes[i]!.output.some((o) => o && this.tainted.has(o))) return 'before';
    return 'shared';
  }

  boundary(K: number): Boundary {
    const { nodes, consumers, where } = this;
    const crossing: string[] = [];
    nodes.forEach((n, i) => {
      if (this.sideOf(i, K) !== 'before') return;
      for (const o of n.output) {
        if (o && (consumers.get(o) ?? []).some((c) => this.sideOf(c, K) === 'after') && !crossing.includes(o)) crossing.push(o);
      }
    });
    if (crossing.length === 0 || crossing.length > 2) {
      throw new SplitLLMError(
        'E_UNSUPPORTED_FORMAT',
        `${where}: the cut before layer ${K} is crossed by ${crossing.length} tensors (${crossing.slice(0, 4).join(', ') || 'none'}): splitllm cuts where the residual stream is one tensor or the two inputs of a skip-norm`,
      );
    }
    if (crossing.length === 1) return { tensors: crossing };
    const users = new Set(crossing.flatMap((t) => (consumers.get(t) ?? []).filter((c) => this.sideOf(c, K) === 'after')));
    const [only] = [...users];
    const n = only === undefined ? undefined : nodes[only];
    const ok =
      users.size === 1 && n !== undefined && SKIP_NORMS.has(n.opType) &&
      new Set([n.input[0], n.input[1]]).size === 2 && crossing.every((t) => t === n.input[0] || t === n.input[1]) &&
      !(n.opType === 'SkipLayerNormalization' && n.input[4]);
    if (!ok || only === undefined) {
      throw new SplitLLMError(
        'E_UNSUPPORTED_FORMAT',
        `${where}: the cut before layer ${K} is crossed by ${crossing.join(' and ')}, which are not the two inputs of one skip-norm or Add: this export cannot be cut there`,
      );
    }
    return { tensors: crossing, rewrite: only };
  }

  segment(from: number, to: number, embed: boolean, head: boolean): CutSegment {
    const { io, nodes } = this;
    const L = io.nLayers;
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > L || from > to) {
      throw new SplitLLMError('E_SPLIT_RANGE', `segment [${from}, ${to}) is outside the export's ${L} layers`);
    }
    if (embed && from !== 0) throw new SplitLLMError('E_SPLIT_RANGE', `segment [${from}, ${to}) cannot start from token ids`);
    if (head && to !== L) throw new SplitLLMError('E_SPLIT_RANGE', `segment [${from}, ${to}) cannot end in logits`);
    const floatElem = io.floatType === 'float16' ? DT.FLOAT16 : DT.FLOAT;
    const cache = io.past && io.present ? { past: io.past, present: io.present } : undefined;
    const inB = embed ? undefined : this.boundary(from);
    const outB = head ? undefined : this.boundary(to);
    const pre: OnnxNode[] = [];
    const post: OnnxNode[] = [];
    const stream = inB ? (inB.tensors.length === 1 ? inB.tensors[0]! : '__splitllm_stream') : undefined;
    if (stream) {
      pre.push(floatElem === DT.FLOAT ? node('Identity', [HIDDEN_IN], [stream]) : node('Cast', [HIDDEN_IN], [stream], [castTo(floatElem)]));
    }
    const outputs: ValueInfo[] = [];
    const targets: string[] = [];
    if (head) {
      targets.push(io.logits);
      outputs.push(this.outputInfo(io.logits));
    } else {
      const t = outB!.tensors;
      // an empty segment [K, K) between two cuts passes the stream through
      const src = from === to && stream ? [stream] : t;
      if (!(from === to && stream)) targets.push(...t);
      const sum = src.length === 2 ? '__splitllm_stream_sum' : src[0]!;
      if (src.length === 2) post.push(node('Add', [src[0]!, src[1]!], [sum]));
      post.push(floatElem === DT.FLOAT ? node('Identity', [sum], [HIDDEN_OUT]) : node('Cast', [sum], [HIDDEN_OUT], [castTo(DT.FLOAT)]));
      outputs.push(valueInfo(HIDDEN_OUT, DT.FLOAT, ['batch_size', 'sequence_length', io.hiddenSize]));
    }
    const present = cache ? ownNames(cache.present, from, to) : [];
    targets.push(...present);
    outputs.push(...present.map((o) => this.outputInfo(o)));
    const cl = this.closure(targets, new Set(inB?.tensors ?? []), from, to, embed, head);
    const body = cl.nodes.map((i) => (inB?.rewrite === i && stream ? rewriteSkipNorm(nodes[i]!, stream) : [substitute(nodes[i]!, cl.rename)])).flat();
    const inputs: ValueInfo[] = [];
    if (stream) inputs.push(valueInfo(HIDDEN_IN, DT.FLOAT, ['batch_size', 'sequence_length', io.hiddenSize]));
    inputs.push(...[...this.graphInputs.keys()].filter((n) => cl.inputs.has(n)).map((n) => this.graphInputs.get(n)!));
    const graph: OnnxGraph = {
      name: `${this.g.name}_${from}_${to}`,
      irVersion: this.g.irVersion,
      opsets: this.g.opsets,
      nodes: [...pre, ...body, ...post],
      initializers: cl.initializers,
      inputs,
      outputs,
    };
    const segIO: SegmentIO = {
      from,
      to,
      ...(stream ? { hiddenIn: HIDDEN_IN } : {}),
      ...(head ? { logits: io.logits } : { hiddenOut: HIDDEN_OUT }),
      past: cache ? { key: cache.past.key.slice(from, to), value: cache.past.value.slice(from, to) } : { key: [], value: [] },
      present: cache ? { key: cache.present.key.slice(from, to), value: cache.present.value.slice(from, to) } : { key: [], value: [] },
      ...(io.attentionMask && cl.inputs.has(io.attentionMask.name) ? { attentionMask: io.attentionMask } : {}),
      ...(io.positionIds && cl.inputs.has(io.positionIds.name) ? { positionIds: io.positionIds } : {}),
    };
    if (cl.inputs.has(io.inputIds.name)) segIO.ids = { ...io.inputIds, shapeOnly: !embed };
    return { graph, io: segIO };
  }

  /** The nodes (in graph order) a segment needs for `targets`, the graph inputs it reads and the initializers it uses. */
  private closure(targets: string[], stops: Set<string>, from: number, to: number, embed: boolean, head: boolean) {
    const { nodes, io, where, consumers } = this;
    const need = new Set<number>();
    const inputs = new Set<string>();
    const initNames = new Set<string>();
    const rename = new Map<string, string>();
    const stack = [...targets];
    const seen = new Set<string>();
    const ownLayer = (l: number) => l >= from && l < to;
    while (stack.length) {
      const t = stack.pop()!;
      if (!t || seen.has(t) || stops.has(t)) continue;
      seen.add(t);
      if (this.g.initializers.has(t)) {
        initNames.add(t);
        continue;
      }
      if (this.graphInputs.has(t)) {
        const layer = this.pastLayerOf(t);
        if (layer !== undefined && !ownLayer(layer)) {
          // another segment's cache, read for its shape only: read our own first layer's instead
          const uses = (consumers.get(t) ?? []).filter((c) => {
            const r = this.regions[c]!;
            return r.kind !== 'layer' || ownLayer(r.layer);
          });
          if (!uses.every((c) => SHAPE_OPS.has(nodes[c]!.opType)) || from === to || !io.past) {
            throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: segment [${from}, ${to}) needs ${t}, the cache of another segment`);
          }
          const mine = (io.past.key.includes(t) ? io.past.key : io.past.value)[from]!;
          rename.set(t, mine);
          stack.push(mine);
          continue;
        }
        inputs.add(t);
        continue;
      }
      const p = this.producer.get(t);
      if (p === undefined) throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${where}: tensor ${t} has no producer, initializer or graph input`);
      const r = this.regions[p]!;
      if (r.kind === 'layer' && r.layer < from) {
        throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: segment [${from}, ${to}) needs ${t} from layer ${r.layer} besides the residual stream`);
      }
      if ((r.kind === 'layer' && r.layer >= to) || (r.kind === 'epilogue' && !head)) {
        throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: segment [${from}, ${to}) needs ${t} from a later layer`);
      }
      need.add(p);
      for (const x of nodes[p]!.input) if (x) stack.push(x);
    }
    const ordered = [...need].sort((a, b) => a - b);
    // a segment that does not embed reads the ids as zeros: none of its outputs may depend on their values
    if (!embed) {
      const local = new Set([io.inputIds.name]);
      for (const i of ordered) {
        const n = nodes[i]!;
        if (SHAPE_OPS.has(n.opType)) continue;
        if (n.input.some((x) => x && !stops.has(x) && local.has(x))) for (const o of n.output) if (o) local.add(o);
      }
      const leak = targets.find((o) => local.has(o));
      if (leak) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: ${leak} of segment [${from}, ${to}) would depend on the token ids' values`);
    }
    const initializers = new Map<string, TensorProto>();
    for (const n of initNames) {
      const t = this.g.initializers.get(n);
      if (t) initializers.set(n, t);
    }
    return { nodes: ordered, inputs, initializers, rename };
  }

  private pastLayerOf(name: string): number | undefined {
    const past = this.io.past;
    if (!past) return undefined;
    const k = past.key.indexOf(name);
    if (k >= 0) return k;
    const v = past.value.indexOf(name);
    return v >= 0 ? v : undefined;
  }

  private outputInfo(name: string): ValueInfo {
    const v = this.g.outputs.find((o) => o.name === name);
    if (!v) throw new SplitLLMError('E_RUNTIME', `graph output ${name} not found`);
    return v;
  }
}

function ownNames(p: { key: string[]; value: string[] }, from: number, to: number): string[] {
  const out: string[] = [];
  for (let i = from; i < to; i++) out.push(p.key[i]!, p.value[i]!);
  return out;
}


function substitute(n: OnnxNode, rename: Map<string, string>): OnnxNode {
  if (rename.size === 0) return n;
  return { ...n, input: n.input.map((x) => rename.get(x) ?? x) };
}

/** The back's first skip-norm, fed the sum the front computed: a plain norm of it, the sum passed through. */
function rewriteSkipNorm(n: OnnxNode, stream: string): OnnxNode[] {
  const outs = n.output;
  const attrs = n.attribute.filter((a) => a.name === 'epsilon');
  const out: OnnxNode[] = [];
  if (n.opType === 'Add') return [node('Identity', [stream], [outs[0]!])];
  const gamma = n.input[2] ?? '';
  if (outs[0]) {
    if (n.opType === 'SkipSimplifiedLayerNormalization') out.push(node('SimplifiedLayerNormalization', [stream, gamma], [outs[0]], [...attrs, AXIS_LAST]));
    else out.push(node('LayerNormalization', [stream, gamma, ...(n.input[3] ? [n.input[3]] : [])], [outs[0]], [...attrs, AXIS_LAST]));
  }
  // outputs 1 and 2 (mean, inverse std) are training outputs; 3 is input + skip
  if (outs[3]) out.push(node('Identity', [stream], [outs[3]]));
  if (outs[1] || outs[2]) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${n.name}: a skip-norm whose mean/variance outputs are used cannot be rewritten`);
  return out;
}

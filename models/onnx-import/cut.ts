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
 *   shape (masks built from `Shape(input_ids)`) gets a zero tensor of that shape: the ids never leave the
 *   device. A side that reads another side's past KV only for its shape reads its own first layer's.
 * - Each side keeps its own layers' KV inputs and outputs under the export's names. The stream crosses as
 *   float32 [B, T, D] (`hidden_states` in, `hidden_out` out), cast from and to the export's float type.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { nodeRegions, type ExportIO, type IdDtype, type Region } from './analyze.js';
import { DT, nameOf, valueInfo, type Attribute, type OnnxGraph, type OnnxNode, type TensorProto, type ValueInfo } from './load.js';

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

const SKIP_NORMS = new Set(['Add', 'SkipSimplifiedLayerNormalization', 'SkipLayerNormalization']);
/** Ops whose outputs say nothing about their input's values. */
const SHAPE_OPS = new Set(['Shape', 'Size']);

export function cutExport(g: OnnxGraph, io: ExportIO, K: number, where = 'the export'): { front: CutSegment; back: CutSegment } {
  const L = io.nLayers;
  if (!Number.isInteger(K) || K < 0 || K > L) throw new SplitLLMError('E_SPLIT_RANGE', `split ${K} is outside 0..${L} for this ${L}-layer model`);
  const nodes = g.nodes;
  const regions = nodeRegions(g, io);
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => n.output.forEach((o) => o && producer.set(o, i)));
  const consumers = new Map<string, number[]>();
  nodes.forEach((n, i) => n.input.forEach((x) => x && consumers.set(x, [...(consumers.get(x) ?? []), i])));
  const inits = g.initializers;
  const graphInputs = new Map(g.inputs.map((v) => [nameOf(v), v]));

  // value taint: which tensors depend on the ids' values (Shape/Size break the chain)
  const tainted = new Set<string>([io.inputIds.name]);
  for (const n of nodes) {
    if (SHAPE_OPS.has(n.opType)) continue;
    if (n.input.some((x) => x && tainted.has(x))) for (const o of n.output) if (o) tainted.add(o);
  }
  const side = (i: number): 'front' | 'back' | 'shared' => {
    const r: Region = regions[i]!;
    if (r.kind === 'layer') return r.layer < K ? 'front' : 'back';
    if (r.kind === 'epilogue') return 'back';
    if (r.kind === 'prologue' && nodes[i]!.output.some((o) => o && tainted.has(o))) return 'front';
    return 'shared';
  };
  const sides = nodes.map((_, i) => side(i));

  // the crossing: front-produced tensors read by back nodes
  const crossing: string[] = [];
  nodes.forEach((n, i) => {
    if (sides[i] !== 'front') return;
    for (const o of n.output) {
      if (o && (consumers.get(o) ?? []).some((c) => sides[c] === 'back') && !crossing.includes(o)) crossing.push(o);
    }
  });
  if (crossing.length === 0 || crossing.length > 2) {
    throw new SplitLLMError(
      'E_UNSUPPORTED_FORMAT',
      `${where}: the cut before layer ${K} is crossed by ${crossing.length} tensors (${crossing.slice(0, 4).join(', ') || 'none'}): splitllm cuts where the residual stream is one tensor or the two inputs of a skip-norm`,
    );
  }
  let rewrite: { node: number; kind: string } | undefined;
  if (crossing.length === 2) {
    const users = new Set(crossing.flatMap((t) => (consumers.get(t) ?? []).filter((c) => sides[c] === 'back')));
    const [only] = [...users];
    const n = only === undefined ? undefined : nodes[only];
    const ok =
      users.size === 1 && n !== undefined && SKIP_NORMS.has(n.opType) &&
      new Set([n.input[0], n.input[1]]).size === 2 && crossing.every((t) => t === n.input[0] || t === n.input[1]) &&
      !(n.opType === 'SkipLayerNormalization' && n.input[4]);
    if (!ok || only === undefined || n === undefined) {
      throw new SplitLLMError(
        'E_UNSUPPORTED_FORMAT',
        `${where}: the cut before layer ${K} is crossed by ${crossing.join(' and ')}, which are not the two inputs of one skip-norm or Add: this export cannot be cut there`,
      );
    }
    rewrite = { node: only, kind: n.opType };
  }
  const floatElem = io.floatType === 'float16' ? DT.FLOAT16 : DT.FLOAT;

  // ---- back
  // without past inputs the caches are recomputed every step: the segments return none
  const cache = io.past && io.present ? { past: io.past, present: io.present } : undefined;
  const backOutputs = [io.logits, ...(cache ? ownNames(cache.present, K, L) : [])];
  const backPast = io.past ? { key: io.past.key.slice(K), value: io.past.value.slice(K) } : { key: [], value: [] };
  const backNodes: OnnxNode[] = [];
  const backIn = closure(backOutputs, new Set(crossing), 'back');
  // the stream in: cast to the export's float type under the name the back reads
  const streamName = crossing.length === 1 ? crossing[0]! : '__splitllm_stream';
  const backPre: OnnxNode[] = [];
  if (floatElem === DT.FLOAT) backPre.push(node('Identity', [HIDDEN_IN], [streamName]));
  else backPre.push(node('Cast', [HIDDEN_IN], [streamName], [{ name: 'to', type: 2, i: floatElem }]));
  for (const i of backIn.nodes) {
    const n = nodes[i]!;
    if (rewrite && i === rewrite.node) backNodes.push(...rewriteSkipNorm(n, streamName));
    else backNodes.push(substitute(n, backIn.rename));
  }
  const back = segmentGraph(g, 'back', [...backPre, ...backNodes], [
    valueInfo(HIDDEN_IN, DT.FLOAT, ['batch_size', 'sequence_length', io.hiddenSize]),
    ...inputInfos(backIn.inputs),
  ], backOutputs.map((o) => outputInfo(o)), backIn.initializers);
  const backIO: SegmentIO = {
    from: K,
    to: L,
    hiddenIn: HIDDEN_IN,
    logits: io.logits,
    past: backPast,
    present: cache ? { key: cache.present.key.slice(K), value: cache.present.value.slice(K) } : { key: [], value: [] },
    ...commonInputs(backIn.inputs),
  };
  if (backIn.inputs.has(io.inputIds.name)) backIO.ids = { ...io.inputIds, shapeOnly: true };

  // ---- front
  const frontPresent = cache ? ownNames(cache.present, 0, K) : [];
  const frontIn = closure([...crossing, ...frontPresent], new Set(), 'front');
  const frontNodes = frontIn.nodes.map((i) => substitute(nodes[i]!, frontIn.rename));
  const sum = crossing.length === 2 ? [node('Add', [crossing[0]!, crossing[1]!], ['__splitllm_stream_sum'])] : [];
  const streamOut = crossing.length === 2 ? '__splitllm_stream_sum' : crossing[0]!;
  const outCast = floatElem === DT.FLOAT ? node('Identity', [streamOut], [HIDDEN_OUT]) : node('Cast', [streamOut], [HIDDEN_OUT], [{ name: 'to', type: 2, i: DT.FLOAT }]);
  const front = segmentGraph(g, 'front', [...frontNodes, ...sum, outCast], inputInfos(frontIn.inputs), [
    valueInfo(HIDDEN_OUT, DT.FLOAT, ['batch_size', 'sequence_length', io.hiddenSize]),
    ...frontPresent.map((o) => outputInfo(o)),
  ], frontIn.initializers);
  const frontIO: SegmentIO = {
    from: 0,
    to: K,
    ids: { ...io.inputIds, shapeOnly: false },
    hiddenOut: HIDDEN_OUT,
    past: io.past ? { key: io.past.key.slice(0, K), value: io.past.value.slice(0, K) } : { key: [], value: [] },
    present: cache ? { key: cache.present.key.slice(0, K), value: cache.present.value.slice(0, K) } : { key: [], value: [] },
    ...commonInputs(frontIn.inputs),
  };
  return { front: { graph: front, io: frontIO }, back: { graph: back, io: backIO } };

  /** The nodes (in graph order) a side needs for `targets`, the graph inputs it reads and initializers it uses. */
  function closure(targets: string[], stops: Set<string>, which: 'front' | 'back') {
    const need = new Set<number>();
    const inputs = new Set<string>();
    const initNames = new Set<string>();
    const rename = new Map<string, string>();
    const own = which === 'front' ? [0, K] : [K, L];
    const stack = [...targets];
    const seen = new Set<string>();
    while (stack.length) {
      const t = stack.pop()!;
      if (!t || seen.has(t) || stops.has(t)) continue;
      seen.add(t);
      if (inits.has(t)) {
        initNames.add(t);
        continue;
      }
      if (graphInputs.has(t)) {
        const layer = pastLayerOf(t);
        if (layer !== undefined && (layer < own[0]! || layer >= own[1]!)) {
          // another side's cache, read for its shape only: read our own first layer's instead
          const other = which === 'front' ? 'back' : 'front';
          const uses = (consumers.get(t) ?? []).filter((c) => sides[c] !== other);
          if (!uses.every((c) => SHAPE_OPS.has(nodes[c]!.opType)) || own[0] === own[1] || !io.past) {
            throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: the ${which} segment of a cut at ${K} needs ${t}, a cache of the other side`);
          }
          const isKey = io.past.key.includes(t);
          const mine = (isKey ? io.past.key : io.past.value)[own[0]!]!;
          rename.set(t, mine);
          stack.push(mine);
          continue;
        }
        inputs.add(t);
        continue;
      }
      const p = producer.get(t);
      if (p === undefined) throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${where}: tensor ${t} has no producer, initializer or graph input`);
      const s = sides[p]!;
      if (which === 'front' && s === 'back') throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: the front of a cut at ${K} needs ${t} from a later layer`);
      const r = regions[p];
      if (which === 'back' && s === 'front' && r?.kind === 'layer') {
        throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: the back of a cut at ${K} needs ${t} from layer ${r.layer} besides the residual stream`);
      }
      need.add(p);
      for (const x of nodes[p]!.input) if (x) stack.push(x);
    }
    const ordered = [...need].sort((a, b) => a - b);
    // the back reads the ids as zeros: none of its outputs may depend on their values
    if (which === 'back') {
      const local = new Set([io.inputIds.name]);
      for (const i of ordered) {
        const n = nodes[i]!;
        if (SHAPE_OPS.has(n.opType)) continue;
        if (n.input.some((x) => x && !stops.has(x) && local.has(x))) for (const o of n.output) if (o) local.add(o);
      }
      const leak = targets.find((o) => local.has(o));
      if (leak) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: ${leak} would depend on the token ids' values on the back side of a cut at ${K}`);
    }
    const initializers = new Map<string, TensorProto>();
    for (const n of initNames) {
      const t = inits.get(n);
      if (t) initializers.set(n, t);
    }
    return { nodes: ordered, inputs, initializers, rename };
  }

  function pastLayerOf(name: string): number | undefined {
    if (!io.past) return undefined;
    const k = io.past.key.indexOf(name);
    if (k >= 0) return k;
    const v = io.past.value.indexOf(name);
    return v >= 0 ? v : undefined;
  }

  function inputInfos(names: Set<string>): ValueInfo[] {
    return [...graphInputs.keys()].filter((n) => names.has(n)).map((n) => graphInputs.get(n)!);
  }

  function outputInfo(name: string): ValueInfo {
    const v = g.outputs.find((o) => o.name === name);
    if (!v) throw new SplitLLMError('E_RUNTIME', `graph output ${name} not found`);
    return v;
  }

  function commonInputs(names: Set<string>): Pick<SegmentIO, 'attentionMask' | 'positionIds'> {
    return {
      ...(io.attentionMask && names.has(io.attentionMask.name) ? { attentionMask: io.attentionMask } : {}),
      ...(io.positionIds && names.has(io.positionIds.name) ? { positionIds: io.positionIds } : {}),
    };
  }
}

function ownNames(p: { key: string[]; value: string[] }, from: number, to: number): string[] {
  const out: string[] = [];
  for (let i = from; i < to; i++) out.push(p.key[i]!, p.value[i]!);
  return out;
}

function node(opType: string, input: string[], output: string[], attribute: Attribute[] = [], domain = ''): OnnxNode {
  return { opType, input, output, attribute, domain, name: `splitllm/${opType}/${output[0]}` };
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
    if (n.opType === 'SkipSimplifiedLayerNormalization') out.push(node('SimplifiedLayerNormalization', [stream, gamma], [outs[0]], [...attrs, { name: 'axis', type: 2, i: -1 }]));
    else out.push(node('LayerNormalization', [stream, gamma, ...(n.input[3] ? [n.input[3]] : [])], [outs[0]], [...attrs, { name: 'axis', type: 2, i: -1 }]));
  }
  // outputs 1 and 2 (mean, inverse std) are training outputs; 3 is input + skip
  if (outs[3]) out.push(node('Identity', [stream], [outs[3]]));
  if (outs[1] || outs[2]) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${n.name}: a skip-norm whose mean/variance outputs are used cannot be rewritten`);
  return out;
}

function segmentGraph(src: OnnxGraph, suffix: string, nodes: OnnxNode[], inputs: ValueInfo[], outputs: ValueInfo[], initializers: Map<string, TensorProto>): OnnxGraph {
  return { name: `${src.name}_${suffix}`, irVersion: src.irVersion, opsets: src.opsets, nodes, initializers, inputs, outputs };
}

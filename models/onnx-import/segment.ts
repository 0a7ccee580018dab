/**
 * An imported export's segment in the runtime's own contract (models/onnx/segment.ts, the 'reference'
 * attention form with key positions), so that it runs through the same SegmentRuntime, edge and cloud as
 * built segments: `input_ids` int64 or `hidden_states` float32 in, `position_ids` and `key_positions` int64
 * (the export's attention mask is `key_positions ≥ 0`: padding rows of a batch are masked), per own layer
 * `past_key_i` / `past_value_i` float32 [B, KV, P, hd] in and `present_key_i` / `present_value_i` out
 * (cast from and to the export's float type), `logits` or `hidden_out` float32 out.
 *
 * An export without past inputs becomes a `recompute` segment: the runtime feeds every position so far
 * each step and keeps the last rows.
 *
 * OPSC on the foreign graph: every MatMul of an own layer (and the LM head, with `headLinear`) whose
 * weight is a constant 2-D initializer is re-emitted by the weight plan's emitter (MatMulNBits at the
 * plan's bits, or AWQ / SmoothQuant's forms) from the weight's float values; the float32 emitter keeps
 * the export's own MatMul. fp16 exports run the quantized linear in float32 between two casts.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { f16ArrayToF32 } from '../../shared/tensor.js';
import type { ModelConfig } from '../manifest.js';
import { GraphBuilder } from '../onnx/graph.js';
import { float32Linear, segmentIO, type BuiltSegment, type LinearEmitter, type SegmentOptions } from '../onnx/segment.js';
import type { ExportIO } from './analyze.js';
import { ExportCutter, HIDDEN_IN, HIDDEN_OUT } from './cut.js';
import { castTo, DT, encodeOnnx, node, valueInfo, type OnnxGraph, type OnnxNode, type TensorProto, type ValueInfo } from './load.js';


/** The float32 values of a float32 or float16 initializer. */
export function initializerF32(t: TensorProto, name: string): Float32Array {
  const raw = t.rawData;
  if (!raw || raw.byteLength === 0) {
    if (t.floatData && t.floatData.length) return Float32Array.from(t.floatData);
    throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `initializer ${name} keeps its values in a form splitllm does not read (no raw_data)`);
  }
  const copy = new Uint8Array(raw); // aligned
  if (t.dataType === DT.FLOAT) return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
  if (t.dataType === DT.FLOAT16) return f16ArrayToF32(new Uint16Array(copy.buffer, 0, copy.byteLength / 2));
  throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `initializer ${name} has element type ${t.dataType}, not float32/float16`);
}

export function buildImportedSegment(c: ModelConfig, cutter: ExportCutter, io: ExportIO, from: number, to: number, opts: SegmentOptions = {}): BuiltSegment {
  const embed = opts.embed ?? from === 0;
  const head = opts.head ?? to === c.nLayers;
  const recompute = io.past === undefined;
  const contract = segmentIO(c, from, to, { embed, head, keyPositions: true, attention: 'reference' });
  const cut = cutter.segment(from, to, embed, head);
  const seg = cut.graph;
  const sio = cut.io;
  const floatElem = io.floatType === 'float16' ? DT.FLOAT16 : DT.FLOAT;

  // names the contract uses that the export's own tensors may also carry move aside
  const reserved = new Set(['input_ids', 'position_ids', 'key_positions', 'logits']);
  for (let i = from; i < to; i++) for (const k of ['past_key_', 'past_value_', 'present_key_', 'present_value_']) reserved.add(`${k}${i}`);
  const x = (n: string) => (reserved.has(n) ? `x/${n}` : n);
  let nodes = seg.nodes.map((n) => ({ ...n, input: n.input.map((t) => (t ? x(t) : t)), output: n.output.map((t) => (t ? x(t) : t)) }));
  const inits = new Map(seg.initializers);

  const opsets = [...seg.opsets];
  // an emitter may expose values as outputs (the calibration capture does)
  const exposed: ValueInfo[] = [];
  if (opts.linearFor || opts.headLinear) nodes = quantizeLinears(nodes, inits, opsets, exposed, cutter, io, from, to, opts, floatElem);

  const pre: OnnxNode[] = [];
  const post: OnnxNode[] = [];
  const inputs = [];
  const dims = ['batch', 'tokens'];
  const idsTo = (src: string, dtype: 'int64' | 'int32', dst: string) => pre.push(dtype === 'int64' ? node('Identity', [src], [dst]) : node('Cast', [src], [dst], [castTo(DT.INT32)]));
  if (embed) inputs.push(valueInfo('input_ids', DT.INT64, dims));
  else inputs.push(valueInfo(HIDDEN_IN, DT.FLOAT, ['batch', 'tokens', c.dim]));
  if (sio.ids) {
    if (sio.ids.shapeOnly) {
      // the ids' shape from the stream's: zeros, never the device's tokens
      const shape = node('Shape', [HIDDEN_IN], ['splitllm/ids_shape3']);
      const start = tensorInit(inits, 'splitllm/ids_slice_start', DT.INT64, [1], new BigInt64Array([0n]));
      const end = tensorInit(inits, 'splitllm/ids_slice_end', DT.INT64, [1], new BigInt64Array([2n]));
      pre.push(shape, node('Slice', ['splitllm/ids_shape3', start, end], ['splitllm/ids_shape']));
      pre.push({ ...node('ConstantOfShape', ['splitllm/ids_shape'], ['splitllm/ids_zero']), attribute: [{ name: 'value', type: 4, t: { dataType: DT.INT64, dims: [1], rawData: new Uint8Array(8) } }] });
      idsTo('splitllm/ids_zero', sio.ids.dtype, x(sio.ids.name));
    } else idsTo('input_ids', sio.ids.dtype, x(sio.ids.name));
  }
  if (to > from) {
    inputs.push(valueInfo('position_ids', DT.INT64, dims), valueInfo('key_positions', DT.INT64, ['batch', 'keys']));
  }
  if (sio.positionIds) {
    if (to === from) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `segment [${from}, ${to}) of this export needs position ids but holds no layer`);
    idsTo('position_ids', sio.positionIds.dtype, x(sio.positionIds.name));
  }
  if (sio.attentionMask) {
    if (to === from) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `segment [${from}, ${to}) of this export needs an attention mask but holds no layer`);
    const zero = tensorInit(inits, 'splitllm/zero_i64', DT.INT64, [], new BigInt64Array([0n]));
    pre.push(node('GreaterOrEqual', ['key_positions', zero], ['splitllm/mask_bool']));
    pre.push(node('Cast', ['splitllm/mask_bool'], [x(sio.attentionMask.name)], [castTo(sio.attentionMask.dtype === 'int64' ? DT.INT64 : DT.INT32)]));
  }
  sio.past.key.forEach((k, j) => {
    const i = from + j;
    for (const [ours, theirs] of [[`past_key_${i}`, k], [`past_value_${i}`, sio.past.value[j]!]] as const) {
      inputs.push(valueInfo(ours, DT.FLOAT, ['batch', io.kvHeads, 'past', io.headDim]));
      pre.push(floatElem === DT.FLOAT ? node('Identity', [ours], [x(theirs)]) : node('Cast', [ours], [x(theirs)], [castTo(floatElem)]));
    }
  });
  const outputs = [];
  if (head) {
    outputs.push(valueInfo('logits', DT.FLOAT, ['batch', 'tokens', c.vocabSize]));
    post.push(floatElem === DT.FLOAT ? node('Identity', [x(io.logits)], ['logits']) : node('Cast', [x(io.logits)], ['logits'], [castTo(DT.FLOAT)]));
  } else outputs.push(valueInfo(HIDDEN_OUT, DT.FLOAT, ['batch', 'tokens', c.dim]));
  sio.present.key.forEach((k, j) => {
    const i = from + j;
    for (const [ours, theirs] of [[`present_key_${i}`, k], [`present_value_${i}`, sio.present.value[j]!]] as const) {
      outputs.push(valueInfo(ours, DT.FLOAT, ['batch', io.kvHeads, 'total', io.headDim]));
      post.push(floatElem === DT.FLOAT ? node('Identity', [x(theirs)], [ours]) : node('Cast', [x(theirs)], [ours], [castTo(DT.FLOAT)]));
    }
  });
  for (const e of exposed) if (!outputs.some((o) => o.name === e.name)) outputs.push(e);
  const graph: OnnxGraph = { ...seg, opsets, nodes: [...pre, ...nodes, ...post], initializers: inits, inputs, outputs };
  const model = encodeOnnx(graph);
  let weightBytes = 0;
  for (const t of inits.values()) weightBytes += t.rawData?.byteLength ?? 0;
  const built: BuiltSegment = { ...contract, model, weightBytes, recompute, quirks: {} };
  if (recompute) {
    // no caches: inputs and outputs without past/present
    built.inputNames = contract.inputNames.filter((n) => !n.startsWith('past_'));
    built.outputNames = contract.outputNames.filter((n) => !n.startsWith('present_'));
  }
  return built;
}

function tensorInit(inits: Map<string, TensorProto>, name: string, dataType: number, dims: number[], data: BigInt64Array): string {
  inits.set(name, { name, dataType, dims, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
  return name;
}

/**
 * The own layers' (and, with `headLinear`, the head's) MatMuls against constant 2-D weights, re-emitted by
 * the weight plan's emitters.
 */
function quantizeLinears(
  nodes: OnnxNode[],
  inits: Map<string, TensorProto>,
  opsets: { domain: string; version: number }[],
  exposed: ValueInfo[],
  cutter: ExportCutter,
  io: ExportIO,
  from: number,
  to: number,
  opts: SegmentOptions,
  floatElem: number,
): OnnxNode[] {
  const out: OnnxNode[] = [];
  // how many inputs read each initializer: a weight goes once no node reads it any more
  const uses = new Map<string, number>();
  for (const n of nodes) for (const i of n.input) if (inits.has(i)) uses.set(i, (uses.get(i) ?? 0) + 1);
  for (const n of nodes) {
    const w = n.opType === 'MatMul' ? inits.get(n.input[1] ?? '') : undefined;
    // the node's own output name (a contract name moved aside is prefixed x/)
    const layer = cutter.layerOf((n.output[0] ?? '').replace(/^x\//, ''));
    let emitter: LinearEmitter | undefined;
    if (layer >= from && layer < to && layer < io.nLayers) emitter = opts.linearFor?.(layer);
    else if (layer === io.nLayers) emitter = opts.headLinear;
    if (!w || !emitter || emitter === float32Linear || (w.dims ?? []).length !== 2) {
      out.push(n);
      continue;
    }
    const [K, N] = (w.dims ?? []).map(Number) as [number, number];
    const wName = n.input[1]!;
    const values = initializerF32(w, wName);
    // [in, out] → the emitters' [out, in]
    const t = new Float32Array(values.length);
    for (let k = 0; k < K; k++) for (let o = 0; o < N; o++) t[o * K + k] = values[k * N + o]!;
    const gb = new GraphBuilder(`q_${wName}`);
    // the emitter's input is a graph-wide name (the calibration capture exposes it as an output)
    let xIn = n.input[0]!;
    if (floatElem !== DT.FLOAT) {
      xIn = `${wName}/x_f32`;
      out.push(node('Cast', [n.input[0]!], [xIn], [castTo(DT.FLOAT)]));
    }
    const y = emitter.linear(gb, xIn, { name: wName, data: t, outDim: N, inDim: K, layer: Math.min(layer, io.nLayers) });
    if (floatElem === DT.FLOAT) gb.op('Identity', [y], {}, { outputs: [n.output[0]!] });
    else gb.op('Cast', [y], { to: floatElem }, { outputs: [n.output[0]!] });
    // every name the emitter made gets the weight's prefix, but the output the graph reads
    const made = new Set<string>(gb.initializers.map((t) => t.name));
    for (const b of gb.nodes) for (const o of b.output ?? []) made.add(o);
    made.delete(n.output[0]!);
    const rn = (v: string) => (made.has(v) ? `${wName}/${v}` : v);
    for (const b of gb.nodes) {
      out.push({
        name: `${n.name}/${b.name ?? ''}`,
        opType: b.opType ?? '',
        domain: b.domain ?? '',
        input: (b.input ?? []).map(rn),
        output: (b.output ?? []).map(rn),
        attribute: b.attribute ?? [],
      });
    }
    for (const t of gb.initializers) inits.set(rn(t.name), { name: rn(t.name), dataType: t.dataType, dims: t.dims, rawData: t.bytes });
    for (const [domain, version] of gb.opsets) if (!opsets.some((o) => o.domain === domain)) opsets.push({ domain, version });
    exposed.push(...gb.outputs.map((o) => ({ ...o, name: rn(o.name ?? '') })));
    const left = (uses.get(wName) ?? 1) - 1;
    uses.set(wName, left);
    if (left === 0) inits.delete(wName);
  }
  return out;
}


/**
 * Reading a third-party ONNX export: the ModelProto (onnx-proto) with its external data pulled in, and
 * the checks that give a one-line error for what a user can hand us (a truncated .onnx, a missing or
 * short .data file, a graph with control flow).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx as P } from 'onnx-proto';
import { SplitLLMError } from '../../shared/errors.js';

const { onnx } = onnxProto;
export const DT = onnx.TensorProto.DataType;
export type TensorProto = P.ITensorProto;
export type ValueInfo = P.IValueInfoProto;
export type Attribute = P.IAttributeProto;

/** A node with its optional protobuf fields made definite (empty names stand for absent inputs). */
export interface OnnxNode {
  name: string;
  opType: string;
  domain: string;
  input: string[];
  output: string[];
  attribute: Attribute[];
}

/** A graph as the importer works on it: nodes in order, initializers by name, inputs without initializers. */
export interface OnnxGraph {
  name: string;
  irVersion: number;
  opsets: { domain: string; version: number }[];
  nodes: OnnxNode[];
  initializers: Map<string, TensorProto>;
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  /** the external data files the model file named (paths), now inlined */
  external?: string[];
}

/** Ops whose subgraphs make a cut at a layer boundary undefined. */
const CONTROL_FLOW = new Set(['If', 'Loop', 'Scan']);

/** Decodes `path`, inlines every external initializer (its bytes become raw_data) and checks the graph. */
export function loadOnnx(path: string): OnnxGraph {
  if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${path} does not exist: pass an ONNX model file or its folder`);
  let model: P.ModelProto;
  try {
    model = onnx.ModelProto.decode(readFileSync(path));
  } catch (e) {
    throw new SplitLLMError(
      'E_CHECKPOINT_CORRUPT',
      `${path} is not a readable ONNX model (${e instanceof Error ? e.message : String(e)}): the file is truncated or not ONNX; export it again`,
    );
  }
  const g = model.graph;
  const rawNodes = g?.node ?? [];
  if (!g || rawNodes.length === 0) throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path} holds no graph: the file is truncated or not an ONNX model`);
  const nodes: OnnxNode[] = rawNodes.map((n, i) => ({
    name: n.name || `node_${i}`,
    opType: n.opType ?? '',
    domain: n.domain ?? '',
    input: n.input ?? [],
    output: n.output ?? [],
    attribute: n.attribute ?? [],
  }));
  const cf = nodes.find((n) => CONTROL_FLOW.has(n.opType));
  if (cf) {
    throw new SplitLLMError(
      'E_UNSUPPORTED_FORMAT',
      `${path}: node ${cf.name} is an ${cf.opType} (control flow), which splitllm cannot cut at a layer boundary: export the model without control flow (e.g. optimum's non-merged decoder)`,
    );
  }
  const files = new Map<string, Buffer>();
  const initializers = new Map<string, TensorProto>();
  for (const t of g.initializer ?? []) {
    initializers.set(t.name ?? '', t);
    if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue;
    const kv = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
    const location = kv.get('location');
    if (!location) throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path}: initializer ${t.name} is external but names no file`);
    const rel = normalize(location);
    if (rel.startsWith('..') || rel.startsWith('/')) {
      throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path}: initializer ${t.name} points outside the model's folder (${location})`);
    }
    const file = join(dirname(path), rel);
    let data = files.get(file);
    if (!data) {
      if (!existsSync(file)) {
        throw new SplitLLMError('E_FILE_NOT_FOUND', `${path} keeps its weights in ${location}, which is missing: copy ${location} next to the model`);
      }
      data = readFileSync(file);
      files.set(file, data);
    }
    const offset = Number(kv.get('offset') ?? 0);
    const length = kv.has('length') ? Number(kv.get('length')) : data.length - offset;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > data.length) {
      throw new SplitLLMError(
        'E_CHECKPOINT_TRUNCATED',
        `${path}: initializer ${t.name} needs bytes ${offset}..${offset + length} of ${location}, which has ${statSync(file).size}: the data file is truncated, copy it again`,
      );
    }
    t.rawData = new Uint8Array(data.buffer, data.byteOffset + offset, length);
    t.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
    t.externalData = [];
  }
  return {
    name: g.name ?? 'model',
    irVersion: Number(model.irVersion ?? 8),
    opsets: (model.opsetImport ?? []).map((o) => ({ domain: o.domain ?? '', version: Number(o.version ?? 1) })),
    nodes,
    initializers,
    inputs: (g.input ?? []).filter((v) => !initializers.has(v.name ?? '')),
    outputs: g.output ?? [],
    external: [...files.keys()],
  };
}

/** The graph as ONNX bytes (initializers inline). */
export function encodeOnnx(g: OnnxGraph): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: g.irVersion,
    producerName: 'splitllm',
    producerVersion: '0.1.0',
    opsetImport: g.opsets,
    graph: { name: g.name, node: g.nodes, input: g.inputs, output: g.outputs, initializer: [...g.initializers.values()] },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** A node the importer adds (named after its first output). */
export function node(opType: string, input: string[], output: string[], attribute: Attribute[] = []): OnnxNode {
  return { opType, input, output, attribute, domain: '', name: `splitllm/${opType}/${output[0]}` };
}

/** Cast's `to` attribute. */
export function castTo(to: number): Attribute {
  return { name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: to };
}

export function nameOf(v: ValueInfo): string {
  return v.name ?? '';
}

/** Element type and symbolic/concrete dims of a value info. */
export function tensorTypeOf(v: ValueInfo): { elemType: number; dims: (number | string)[] } {
  const tt = v.type?.tensorType;
  return {
    elemType: tt?.elemType ?? 0,
    dims: (tt?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue ?? 0))),
  };
}

export function valueInfo(name: string, elemType: number, dims: (number | string)[]): ValueInfo {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

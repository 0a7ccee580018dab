/**
 * What a decoder-only LLM export is, read from its graph (and genai_config.json where there is one):
 * how to drive it (input names and dtypes, KV naming and layout, logits) and which decoder layer each
 * node belongs to — the two things graph surgery (cut.ts) needs.
 *
 * Layer membership comes from node names (`/model/layers.3/…`, `/transformer/h.3/…`, `model.layers.3.…`),
 * else from the output names, else from the layer whose past KV the node reads. Nodes without a layer are
 * constants (no graph input upstream), the prologue (upstream of every layer: embedding, masks, positions)
 * or the epilogue (downstream of a layer: final norm, LM head). A name numbered past the last layer
 * (onnxruntime-genai names its final norm `layers.L`) is epilogue.
 */
import { SplitLLMError } from '../../shared/errors.js';
import type { Fields } from '../../shared/fields.js';
import { DT, nameOf, tensorTypeOf, type OnnxGraph, type OnnxNode } from './load.js';

export type IdDtype = 'int64' | 'int32';
export type FloatType = 'float32' | 'float16';

export interface ExportIO {
  inputIds: { name: string; dtype: IdDtype };
  attentionMask?: { name: string; dtype: IdDtype };
  positionIds?: { name: string; dtype: IdDtype };
  /** past inputs per layer; absent when the export has none (it then runs by recomputation) */
  past?: { key: string[]; value: string[] };
  /** present outputs per layer, when the export has them */
  present?: { key: string[]; value: string[] };
  /** KV layout: [batch, kv heads, positions, head size] */
  kvHeads: number;
  headDim: number;
  logits: string;
  vocabSize: number;
  hiddenSize: number;
  nLayers: number;
  floatType: FloatType;
  /** rows of a learned position table (GPT-2's wpe), the context the export can take, when it has one */
  positionRows?: number;
}

export type Region = { kind: 'layer'; layer: number } | { kind: 'const' } | { kind: 'prologue' } | { kind: 'epilogue' };

const LAYER_NAME = [/(?:^|[/._])layers?[._](\d+)(?=[/._]|$)/, /(?:^|[/.])h[._](\d+)(?=[/._]|$)/, /(?:^|[/._])blocks?[._](\d+)(?=[/._]|$)/];

function layerOfName(name: string | null | undefined): number | undefined {
  if (!name) return undefined;
  for (const re of LAYER_NAME) {
    const m = re.exec(name);
    if (m) return Number(m[1]);
  }
  return undefined;
}

function idDtype(elemType: number, name: string, where: string): IdDtype {
  if (elemType === DT.INT64) return 'int64';
  if (elemType === DT.INT32) return 'int32';
  throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: input ${name} has element type ${elemType}, not int64 or int32`);
}

function floatTypeOf(elemType: number, name: string, where: string): FloatType {
  if (elemType === DT.FLOAT) return 'float32';
  if (elemType === DT.FLOAT16) return 'float16';
  throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: ${name} has element type ${elemType}; splitllm imports float32 and float16 exports`);
}

/** Per-layer names from a `%d` pattern (genai_config.json) or by matching `re` (group 1 = the layer). */
function perLayer(names: string[], re: RegExp): Map<number, string> {
  const out = new Map<number, string>();
  for (const n of names) {
    const m = re.exec(n);
    if (m) out.set(Number(m[1]), n);
  }
  return out;
}

function dense(m: Map<number, string>, what: string, where: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < m.size; i++) {
    const n = m.get(i);
    if (n === undefined) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: ${what} names layers ${[...m.keys()].sort((a, b) => a - b).join(', ')}: layer ${i} is missing`);
    out.push(n);
  }
  return out;
}

export interface GenaiNames {
  inputIds?: string;
  attentionMask?: string;
  positionIds?: string;
  pastKey?: string;
  pastValue?: string;
  logits?: string;
  presentKey?: string;
  presentValue?: string;
}

const patternRe = (p: string): RegExp => new RegExp('^' + p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace('%d', '(\\d+)') + '$');

export function analyzeExport(g: OnnxGraph, where: string, names: GenaiNames = {}): ExportIO {
  const inputs = g.inputs;
  const inputNames = inputs.map(nameOf);
  const outputNames = g.outputs.map(nameOf);
  const input = (n: string) => inputs.find((v) => v.name === n);

  if (inputNames.some((n) => /encoder_hidden_states|encoder_outputs|encoder_attention_mask/.test(n))) {
    throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where} is the decoder of an encoder-decoder model (input ${inputNames.find((n) => /encoder/.test(n))}): splitllm splits decoder-only LLMs`);
  }
  const logits = names.logits ?? outputNames.find((n) => n === 'logits');
  if (!logits || !outputNames.includes(logits)) {
    throw new SplitLLMError(
      'E_UNSUPPORTED_FORMAT',
      `${where} has no logits output (outputs: ${outputNames.slice(0, 4).join(', ')}${outputNames.length > 4 ? ', …' : ''}): it is not a decoder-only language-model export (an encoder-only graph?); export it with its LM head`,
    );
  }
  const idsName = names.inputIds ?? 'input_ids';
  const ids = input(idsName);
  if (!ids) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where} has no ${idsName} input: splitllm drives exports from token ids (inputs: ${inputNames.join(', ')})`);
  const maskName = names.attentionMask ?? 'attention_mask';
  const posName = names.positionIds ?? 'position_ids';
  const mask = input(maskName);
  const pos = input(posName);

  const pastKey = perLayer(inputNames, names.pastKey ? patternRe(names.pastKey) : /^past_key_values[._](\d+)[._]key$/);
  const pastValue = perLayer(inputNames, names.pastValue ? patternRe(names.pastValue) : /^past_key_values[._](\d+)[._]value$/);
  const presentKey = perLayer(outputNames, names.presentKey ? patternRe(names.presentKey) : /^present[._](\d+)[._]key$/);
  const presentValue = perLayer(outputNames, names.presentValue ? patternRe(names.presentValue) : /^present[._](\d+)[._]value$/);
  const stacked = inputNames.find((n) => /^past_\d+$/.test(n));
  if (stacked) {
    throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: input ${stacked} is a stacked [2, B, H, P, hd] cache, a layout splitllm does not drive yet: export with separate past_key_values.N.key/value`);
  }
  const known = new Set([idsName, maskName, posName, ...pastKey.values(), ...pastValue.values()]);
  const other = inputNames.find((n) => !known.has(n));
  if (other) {
    throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: input ${other} is not one splitllm knows how to feed (it feeds ids, attention_mask, position_ids and past_key_values.N.key/value)`);
  }
  if (pastKey.size !== pastValue.size) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: ${pastKey.size} past key inputs but ${pastValue.size} past value inputs`);
  if (presentKey.size !== presentValue.size) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: ${presentKey.size} present key outputs but ${presentValue.size} present value outputs`);
  const past = pastKey.size > 0 ? { key: dense(pastKey, 'past key inputs', where), value: dense(pastValue, 'past value inputs', where) } : undefined;
  const present = presentKey.size > 0 ? { key: dense(presentKey, 'present key outputs', where), value: dense(presentValue, 'present value outputs', where) } : undefined;
  if (past && present && past.key.length !== present.key.length) {
    throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: ${past.key.length} past layers but ${present.key.length} present layers`);
  }

  const logitsInfo = tensorTypeOf(g.outputs.find((v) => v.name === logits)!);
  const floatType = floatTypeOf(logitsInfo.elemType, logits, where);
  // the embedding: a Gather whose data is a 2-D initializer, reading the ids (possibly reshaped)
  const initShape = new Map([...g.initializers].map(([n, t]) => [n, (t.dims ?? []).map(Number)]));
  const vocabDim = logitsInfo.dims[logitsInfo.dims.length - 1];
  const embedShape = g.nodes
    .filter((n) => n.opType === 'Gather')
    .map((n) => initShape.get(n.input[0] ?? ''))
    .find((d) => d?.length === 2 && (typeof vocabDim !== 'number' || d[0] === vocabDim));
  const [vocabSize, hiddenSize] = embedShape ?? [0, 0];
  if (!vocabSize || !hiddenSize) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: no token-embedding Gather over a [vocab, hidden] initializer found`);
  // a second [rows, hidden] table gathered by position (learned absolute positions) bounds the context
  const positionTable = g.nodes
    .filter((n) => n.opType === 'Gather')
    .map((n) => initShape.get(n.input[0] ?? ''))
    .find((d) => d?.length === 2 && d[1] === hiddenSize && d !== embedShape);

  const kvInfo = past ? tensorTypeOf(input(past.key[0]!)!) : present ? tensorTypeOf(g.outputs.find((v) => v.name === present.key[0])!) : undefined;
  const kvHeads = typeof kvInfo?.dims[1] === 'number' ? kvInfo.dims[1] : 0;
  const headDim = typeof kvInfo?.dims[3] === 'number' ? kvInfo.dims[3] : 0;
  if (kvInfo && (kvInfo.dims.length !== 4 || kvHeads <= 0 || headDim <= 0)) {
    throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: the KV cache is not [batch, heads, positions, head size] with fixed heads and head size (got [${kvInfo.dims.join(', ')}])`);
  }
  const nLayers = past?.key.length ?? present?.key.length ?? Math.max(-1, ...g.nodes.map((n) => layerOfName(n.name) ?? -1)) + 1;
  if (nLayers <= 0) throw new SplitLLMError('E_UNSUPPORTED_FORMAT', `${where}: no decoder layers found (no KV names and no numbered nodes)`);
  return {
    inputIds: { name: idsName, dtype: idDtype(tensorTypeOf(ids).elemType, idsName, where) },
    ...(mask ? { attentionMask: { name: maskName, dtype: idDtype(tensorTypeOf(mask).elemType, maskName, where) } } : {}),
    ...(pos ? { positionIds: { name: posName, dtype: idDtype(tensorTypeOf(pos).elemType, posName, where) } } : {}),
    ...(past ? { past } : {}),
    ...(present ? { present } : {}),
    kvHeads,
    headDim,
    logits,
    vocabSize,
    hiddenSize,
    nLayers,
    floatType,
    ...(positionTable ? { positionRows: positionTable[0]! } : {}),
  };
}

/** The region of every node (index-aligned with graph.node). */
export function nodeRegions(g: OnnxGraph, io: ExportIO): Region[] {
  const nodes = g.nodes;
  const inits = new Set(g.initializers.keys());
  const graphInputs = new Set(g.inputs.map(nameOf));
  const pastLayer = new Map<string, number>();
  io.past?.key.forEach((n, i) => pastLayer.set(n, i));
  io.past?.value.forEach((n, i) => pastLayer.set(n, i));
  const regions: Region[] = new Array<Region>(nodes.length);
  // nodes come in topological order (ONNX requires it); constants and layer-less nodes inherit from inputs
  const constTensor = new Set<string>(inits);
  const afterLayer = new Set<string>(); // tensors downstream of some layer node
  nodes.forEach((n, i) => {
    const ins = n.input.filter((x) => x);
    const named = layerOfName(n.name) ?? firstNumbered(n);
    const viaPast = ins.map((x) => pastLayer.get(x)).find((l) => l !== undefined);
    const isConst = ins.every((x) => constTensor.has(x)) && !ins.some((x) => graphInputs.has(x));
    let r: Region;
    if (isConst) r = { kind: 'const' };
    else if (named !== undefined && named < io.nLayers) r = { kind: 'layer', layer: named };
    else if (named === undefined && viaPast !== undefined && n.opType !== 'Shape') r = { kind: 'layer', layer: viaPast };
    else if (named !== undefined && named >= io.nLayers) r = { kind: 'epilogue' };
    else r = ins.some((x) => afterLayer.has(x)) ? { kind: 'epilogue' } : { kind: 'prologue' };
    regions[i] = r;
    for (const o of n.output) {
      if (!o) continue;
      if (r.kind === 'const') constTensor.add(o);
      if (r.kind === 'layer' || r.kind === 'epilogue') afterLayer.add(o);
    }
  });
  return regions;
}

/** A node named without a layer whose outputs carry one (optimum's Identity aliases of shared weights). */
function firstNumbered(n: OnnxNode): number | undefined {
  for (const o of n.output) {
    const l = layerOfName(o);
    if (l !== undefined) return l;
  }
  return undefined;
}

/** An `ExportIO` read back from a package manifest (every field checked; names checked against the graph by `checkExportIO`). */
export function parseExportIO(f: Fields): ExportIO {
  const id = (k: string): { name: string; dtype: IdDtype } | undefined => {
    const m = f.optMap(k);
    if (!m) return undefined;
    const d = m.str('dtype', 8);
    const dtype: IdDtype = d === 'int64' || d === 'int32' ? d : m.fail(`dtype must be int64 or int32, got ${JSON.stringify(d)}`);
    return { name: m.str('name', 1024), dtype };
  };
  const names = (k: string): { key: string[]; value: string[] } | undefined => {
    const m = f.optMap(k);
    if (!m) return undefined;
    const list = (x: string) => m.array(x, 4096).map((v, i) => (typeof v === 'string' && v.length > 0 ? v : m.fail(`${x}[${i}] must be a tensor name`)));
    return { key: list('key'), value: list('value') };
  };
  const ft = f.str('floatType', 8);
  const floatType: FloatType = ft === 'float32' || ft === 'float16' ? ft : f.fail(`floatType must be float32 or float16, got ${JSON.stringify(ft)}`);
  const inputIds = id('inputIds') ?? f.fail('lacks inputIds');
  const attentionMask = id('attentionMask');
  const positionIds = id('positionIds');
  const past = names('past');
  const present = names('present');
  const nLayers = f.int('nLayers', 1, 4096);
  for (const [k, v] of [['past', past], ['present', present]] as const) {
    if (v && (v.key.length !== nLayers || v.value.length !== nLayers)) f.fail(`${k} must name ${nLayers} keys and values`);
  }
  return {
    inputIds,
    ...(attentionMask ? { attentionMask } : {}),
    ...(positionIds ? { positionIds } : {}),
    ...(past ? { past } : {}),
    ...(present ? { present } : {}),
    kvHeads: f.int('kvHeads', 0, 1 << 16),
    headDim: f.int('headDim', 0, 1 << 16),
    logits: f.str('logits', 1024),
    vocabSize: f.int('vocabSize', 1, 1 << 24),
    hiddenSize: f.int('hiddenSize', 1, 1 << 20),
    nLayers,
    floatType,
    ...(f.has('positionRows') ? { positionRows: f.int('positionRows', 1, 1 << 24) } : {}),
  };
}

/** Every tensor `io` names is an input or output of `g` (a package whose graph file was swapped is refused). */
export function checkExportIO(g: OnnxGraph, io: ExportIO, where: string): void {
  const ins = new Set(g.inputs.map(nameOf));
  const outs = new Set(g.outputs.map(nameOf));
  const need: [string, Set<string>][] = [[io.inputIds.name, ins], [io.logits, outs]];
  if (io.attentionMask) need.push([io.attentionMask.name, ins]);
  if (io.positionIds) need.push([io.positionIds.name, ins]);
  for (const n of [...(io.past?.key ?? []), ...(io.past?.value ?? [])]) need.push([n, ins]);
  for (const n of [...(io.present?.key ?? []), ...(io.present?.value ?? [])]) need.push([n, outs]);
  const missing = need.find(([n, set]) => !set.has(n));
  if (missing) throw new SplitLLMError('E_BAD_PACKAGE', `${where}: the graph has no ${missing[0]}, which the manifest records: re-import the model`);
}

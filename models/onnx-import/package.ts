/**
 * ONNX export packages: `splitllm import DIR|model.onnx --out PKG` copies the export (graph and external
 * data) into the package and records in manifest.json how to drive it (`graph: {file, io}`: input names and
 * dtypes, KV naming and layout, logits, sizes) beside a config whose architecture is "onnx". The export's
 * weights stay in its graph; segments are cut from it (cut.ts) and wrapped in the runtime's contract
 * (segment.ts) by `OnnxExportWeights.buildSegment`, which `buildSegment` calls for such packages.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { Fields, failWith } from '../../shared/fields.js';
import type { ModelConfig } from '../manifest.js';
import type { BuiltSegment, SegmentOptions } from '../onnx/segment.js';
import { analyzeExport, type ExportIO, type GenaiNames } from './analyze.js';
import { ExportCutter } from './cut.js';
import { loadOnnx, type OnnxGraph } from './load.js';
import { buildImportedSegment, initializerF32 } from './segment.js';

/** The weights of an ONNX package: the export's graph, which cuts its own segments. */
export class OnnxExportWeights {
  private cutter?: ExportCutter;
  private linearIndex?: Map<number, { name: string; out: number; in: number }[]>;

  constructor(
    readonly graph: OnnxGraph,
    readonly io: ExportIO,
    readonly where: string,
  ) {}

  private get cut(): ExportCutter {
    this.cutter ??= new ExportCutter(this.graph, this.io, this.where);
    return this.cutter;
  }

  /** MatMul weights (constant 2-D initializers) by layer (the LM head at L), with their [out, in] sizes. */
  linears(layer: number): { name: string; out: number; in: number }[] {
    if (!this.linearIndex) {
      const idx = new Map<number, { name: string; out: number; in: number }[]>();
      for (const n of this.graph.nodes) {
        const l = this.cut.layerOf(n.output[0] ?? '');
        const w = n.opType === 'MatMul' ? this.graph.initializers.get(n.input[1] ?? '') : undefined;
        const dims = (w?.dims ?? []).map(Number);
        if (l < 0 || !w || dims.length !== 2) continue;
        idx.set(l, [...(idx.get(l) ?? []), { name: n.input[1]!, out: dims[1]!, in: dims[0]! }]);
      }
      this.linearIndex = idx;
    }
    return this.linearIndex.get(layer) ?? [];
  }

  private isLinear(name: string): { out: number; in: number } | undefined {
    for (let l = 0; l <= this.io.nLayers; l++) {
      const hit = this.linears(l).find((x) => x.name === name);
      if (hit) return hit;
    }
    return undefined;
  }

  has(name: string): boolean {
    return this.graph.initializers.has(name);
  }
  /** An initializer's float values; a MatMul weight ([in, out] in the graph) as [out, in], as package weights are. */
  get(name: string): Float32Array {
    const t = this.graph.initializers.get(name);
    if (!t) throw new SplitLLMError('E_BAD_PACKAGE', `${this.where} has no initializer ${name}`);
    const v = initializerF32(t, name);
    const lin = this.isLinear(name);
    if (!lin) return v;
    const out = new Float32Array(v.length);
    for (let k = 0; k < lin.in; k++) for (let o = 0; o < lin.out; o++) out[o * lin.in + k] = v[k * lin.out + o]!;
    return out;
  }
  shape(name: string): number[] {
    const lin = this.isLinear(name);
    return lin ? [lin.out, lin.in] : (this.graph.initializers.get(name)?.dims ?? []).map(Number);
  }

  buildSegment(c: ModelConfig, from: number, to: number, opts: SegmentOptions): BuiltSegment {
    return buildImportedSegment(c, this.cut, this.io, from, to, opts);
  }
}

export interface OnnxImport {
  name: string;
  /** the .onnx file and the external data files it names */
  files: string[];
  modelFile: string;
  graph: OnnxGraph;
  io: ExportIO;
  config: ModelConfig;
  tokenizerJson?: Record<string, unknown>;
  tokenizerConfigDir?: string;
  warnings: string[];
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new SplitLLMError('E_BAD_CONFIG', `${path} is not valid JSON: fix or remove it`);
  }
}

/** The .onnx to import from a path (a file, or a folder: genai_config.json's decoder file, model.onnx, or its only .onnx). */
export function findOnnxModel(path: string): { file: string; genai?: Fields } {
  if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${path} does not exist: check the path`);
  if (!statSync(path).isDirectory()) return { file: path, ...genaiBeside(dirname(path)) };
  const g = genaiBeside(path);
  const named = g.genai?.optMap('model')?.optMap('decoder')?.optStr('filename', 255);
  if (named) return { file: join(path, basename(named)), ...g };
  if (existsSync(join(path, 'model.onnx'))) return { file: join(path, 'model.onnx'), ...g };
  const all = readdirSync(path).filter((f) => f.endsWith('.onnx'));
  if (all.length === 1) return { file: join(path, all[0]!), ...g };
  if (all.length === 0) throw new SplitLLMError('E_FILE_NOT_FOUND', `${path} holds no .onnx file`);
  throw new SplitLLMError('E_USAGE', `${path} holds ${all.length} .onnx files (${all.slice(0, 4).join(', ')}): name the decoder's file`);
}

function genaiBeside(dir: string): { genai?: Fields } {
  const p = join(dir, 'genai_config.json');
  return existsSync(p) ? { genai: Fields.of(readJson(p), p, failWith('E_BAD_CONFIG', 'fix genai_config.json or remove it')) } : {};
}

/** Reads an export and what is beside it (genai_config.json, config.json, tokenizer files). */
export function importOnnx(path: string): OnnxImport {
  const { file, genai } = findOnnxModel(path);
  const dir = dirname(file);
  const graph = loadOnnx(file);
  const decoder = genai?.optMap('model')?.optMap('decoder');
  const ins = decoder?.optMap('inputs');
  const outs = decoder?.optMap('outputs');
  const names: GenaiNames = {
    inputIds: ins?.optStr('input_ids', 255),
    attentionMask: ins?.optStr('attention_mask', 255),
    positionIds: ins?.optStr('position_ids', 255),
    pastKey: ins?.optStr('past_key_names', 255),
    pastValue: ins?.optStr('past_value_names', 255),
    logits: outs?.optStr('logits', 255),
    presentKey: outs?.optStr('present_key_names', 255),
    presentValue: outs?.optStr('present_value_names', 255),
  };
  const io = analyzeExport(graph, file, names);
  const hfPath = join(dir, 'config.json');
  const hf = existsSync(hfPath) ? Fields.of(readJson(hfPath), hfPath, failWith('E_BAD_CONFIG')) : undefined;
  const model = genai?.optMap('model');
  const int = (f: Fields | undefined, ...keys: string[]): number | undefined => {
    for (const k of keys) {
      const v = f?.value(k);
      if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
      if (Array.isArray(v) && typeof v[0] === 'number') return v[0];
    }
    return undefined;
  };
  const warnings: string[] = [];
  if (!io.past) warnings.push(`${basename(file)} has no past inputs: it runs by recomputation (every step recomputes the whole sequence), and its KV cannot move between edge and cloud`);
  const maxSeq = int(model, 'context_length') ?? int(hf, 'max_position_embeddings', 'n_positions', 'n_ctx') ?? io.positionRows;
  if (maxSeq === undefined) warnings.push('no context length found (genai_config.json, config.json or a position table): assuming 2048 positions');
  const nHeads = int(decoder, 'num_attention_heads') ?? int(hf, 'num_attention_heads', 'n_head') ?? io.kvHeads;
  const config: ModelConfig = {
    architecture: 'onnx',
    dim: io.hiddenSize,
    nLayers: io.nLayers,
    nHeads: nHeads % io.kvHeads === 0 ? nHeads : io.kvHeads,
    nKvHeads: io.kvHeads,
    headDim: io.headDim,
    ffnDim: int(hf, 'intermediate_size', 'n_inner') ?? 4 * io.hiddenSize,
    vocabSize: io.vocabSize,
    maxSeq: maxSeq ?? 2048,
    ropeTheta: 10000,
    ropeStyle: 'half',
    normEps: 1e-5,
    tiedEmbeddings: false,
    qkvBias: false,
    bosId: Math.min(io.vocabSize - 1, int(model, 'bos_token_id') ?? int(hf, 'bos_token_id') ?? 0),
    eosId: Math.min(io.vocabSize - 1, int(model, 'eos_token_id') ?? int(hf, 'eos_token_id') ?? 0),
  };
  const tpath = join(dir, 'tokenizer.json');
  let tokenizerJson: Record<string, unknown> | undefined;
  if (existsSync(tpath)) {
    const t = readJson(tpath);
    if (typeof t !== 'object' || t === null || Array.isArray(t)) throw new SplitLLMError('E_TOKENIZER', `${tpath} is not a tokenizer.json object`);
    tokenizerJson = Object.fromEntries(Object.entries(t));
  } else warnings.push('no tokenizer.json beside the export: the package runs on token ids (--prompt-ids)');
  const files = [file, ...(graph.external ?? [])];
  return { name: basename(dir) || basename(file, '.onnx'), files, modelFile: file, graph, io, config, tokenizerJson, tokenizerConfigDir: existsSync(join(dir, 'tokenizer_config.json')) ? dir : undefined, warnings };
}

/** Copies the export's files into `out` under their own names. */
export function copyExportFiles(m: OnnxImport, out: string): void {
  mkdirSync(out, { recursive: true });
  for (const f of m.files) {
    // the package's copy is the user's own file, writable (a fixture may be read-only)
    copyFileSync(f, join(out, basename(f)));
    chmodSync(join(out, basename(f)), 0o644);
  }
}

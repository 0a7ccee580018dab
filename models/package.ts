/**
 * Model packages: a directory with manifest.json, model.safetensors and tokenizer.json. `openModel`
 * also accepts a llama2.c checkpoint (with its tok*.bin) or a Hugging Face directory directly; those
 * are imported in memory.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { SplitLLMError } from '../shared/errors.js';
import { numel } from '../shared/tensor.js';
import { TENSORS } from '../shared/decoder.js';
import { Fields, failWith } from '../shared/fields.js';
import { expectedTensors, MANIFEST_FILE, type Manifest, type ModelConfig, validateConfig } from './manifest.js';
import { dtypeBytes, narrow, SafetensorsFile, widen, writeSafetensorsStream, type FloatDtype, type StoredTensor, type StreamedTensor } from './safetensors.js';
import type { BuiltSegment, SegmentOptions } from './onnx/segment.js';
import { checkExportIO, parseExportIO } from './onnx-import/analyze.js';
import { loadOnnx } from './onnx-import/load.js';
import { copyExportFiles, importOnnx, OnnxExportWeights, type OnnxImport } from './onnx-import/package.js';
import { parseTokenizerConfig, TextTokenizer, type TokenizerConfig } from './tokenizer/tokenizer.js';
import { importerFor } from './importers/registry.js';

/** Read access to a model's float weights by package tensor name. */
export interface WeightSource {
  has(name: string): boolean;
  /** float32 values (widened from the stored type): one tensor at a time, not kept */
  get(name: string): Float32Array;
  shape(name: string): number[];
  /** the tensor as stored (bf16, f16 or f32), streamed: import copies these without widening */
  stored?(name: string): StoredTensor;
  /**
   * float32 values read into `dst` (a buffer the caller reuses, e.g. a segment build's scratch), returned;
   * sources without it are read with `get`
   */
  readInto?(name: string, dst: Float32Array): Float32Array;
  /** a source that is a whole graph (an imported ONNX export) makes its own segments */
  buildSegment?(c: ModelConfig, from: number, to: number, opts: SegmentOptions): BuiltSegment;
  /** such a source's linear weights of a layer (the LM head at L) by its own names, [out, in] sizes */
  linears?(layer: number): { name: string; out: number; in: number }[];
}

export class MemoryWeights implements WeightSource {
  constructor(private readonly tensors: Map<string, { shape: number[]; data: Float32Array }>) {}
  has(name: string): boolean {
    return this.tensors.has(name);
  }
  get(name: string): Float32Array {
    const t = this.tensors.get(name);
    if (!t) throw new SplitLLMError('E_BAD_PACKAGE', `tensor ${name} is missing: the weights do not match the model config`);
    return t.data;
  }
  shape(name: string): number[] {
    const t = this.tensors.get(name);
    if (!t) throw new SplitLLMError('E_BAD_PACKAGE', `tensor ${name} is missing: the weights do not match the model config`);
    return t.shape;
  }
}

/** Weights read from safetensors files (a package's one file, or a checkpoint's shards), a tensor at a time. */
export class SafetensorsWeights implements WeightSource {
  private readonly byName = new Map<string, SafetensorsFile>();
  constructor(private readonly files: SafetensorsFile[]) {
    for (const f of files) for (const name of f.tensors.keys()) if (!this.byName.has(name)) this.byName.set(name, f);
  }
  private file(name: string): SafetensorsFile {
    const f = this.byName.get(name);
    if (!f) throw new SplitLLMError('E_BAD_PACKAGE', `tensor ${name} is in no safetensors file: the weights do not match the model config`);
    return f;
  }
  has(name: string): boolean {
    return this.byName.has(name);
  }
  get(name: string): Float32Array {
    return this.file(name).readF32(name);
  }
  shape(name: string): number[] {
    return this.file(name).info(name).shape;
  }
  stored(name: string): StoredTensor {
    return this.file(name).stored(name);
  }
  readInto(name: string, dst: Float32Array): Float32Array {
    return this.file(name).readF32Into(name, dst);
  }
  close(): void {
    for (const f of this.files) f.close();
  }
}

/** What an importer produces: enough to write a package or to run in memory. */
export interface ImportedModel {
  name: string;
  config: ModelConfig;
  /** the weights: in memory (llama2.c, GGUF, synthetic) or read from the source's files as needed (Hugging Face) */
  weights: WeightSource;
  tokenizerJson: Record<string, unknown>;
  /** tokenizer_config.json's chat template and special tokens, when the source has one */
  tokenizerConfig?: TokenizerConfig;
  source: Record<string, unknown>;
  /** Identity of the weights when not written to a package (sha256 of the source file). */
  sha256?: string;
}

export class ModelPackage {
  private tok?: TextTokenizer;

  constructor(
    readonly manifest: Manifest,
    readonly weights: WeightSource,
    /** absent for a model that runs on token ids only (an ONNX export imported without a tokenizer) */
    readonly tokenizerJson: Record<string, unknown> | undefined,
    readonly dir?: string,
    readonly tokenizerConfig?: TokenizerConfig,
  ) {
    checkWeights(manifest.config, weights, dir ?? manifest.name);
    if (!tokenizerJson) return;
    const tokenizer = this.tokenizer(); // validates the tokenizer now: fail early, not mid-generation
    if (tokenizer.vocabSize > manifest.config.vocabSize) {
      throw new SplitLLMError(
        'E_VOCAB_MISMATCH',
        `tokenizer has ${tokenizer.vocabSize} tokens but the model's vocabulary has ${manifest.config.vocabSize}: use the tokenizer that belongs to this model`,
      );
    }
  }

  get config(): ModelConfig {
    return this.manifest.config;
  }

  /**
   * The config as the memory accounting reads it (quantization/weights/memory.ts): with the bytes of a
   * float embedding value as segments hold it — the package's bf16/f16 table stays half a float32 one.
   */
  get memoryShape(): ModelConfig & { embedValueBytes: number } {
    const dtype = this.weights.has(TENSORS.embed) ? this.weights.stored?.(TENSORS.embed).dtype : undefined;
    return { ...this.config, embedValueBytes: dtype === 'BF16' || dtype === 'F16' ? 2 : 4 };
  }

  /** Stable identity of the weights (sha256), sent in the protocol's hello. */
  get hash(): string {
    return this.manifest.weightsSha256;
  }

  get hasTokenizer(): boolean {
    return this.tokenizerJson !== undefined;
  }

  tokenizer(): TextTokenizer {
    if (!this.tokenizerJson) {
      throw new SplitLLMError('E_TOKENIZER', `model ${this.manifest.name} has no tokenizer (it was imported without tokenizer.json): give the prompt as token ids with --prompt-ids`);
    }
    this.tok ??= new TextTokenizer(this.tokenizerJson, { bosId: this.config.bosId, eosId: this.config.eosId, config: this.tokenizerConfig });
    return this.tok;
  }

  /** An ONNX export read in memory (`openModel` on an .onnx file or its folder). */
  static fromOnnx(m: OnnxImport, sha256: string): ModelPackage {
    const file = basename(m.modelFile);
    const manifest: Manifest = { ...memoryManifest(m.name, m.config, sha256, { format: 'onnx', file, warnings: m.warnings }), tokenizer: m.tokenizerJson ? '(memory)' : '', graph: { file, io: m.io } };
    const tc = m.tokenizerConfigDir ? readTokenizerConfig(m.tokenizerConfigDir) : undefined;
    return new ModelPackage(manifest, new OnnxExportWeights(m.graph, m.io, m.modelFile), m.tokenizerJson, undefined, tc);
  }

  static fromImported(m: ImportedModel): ModelPackage {
    const manifest = memoryManifest(m.name, m.config, m.sha256 ?? 'unknown', m.source);
    return new ModelPackage(manifest, m.weights, m.tokenizerJson, undefined, m.tokenizerConfig);
  }

  /** `withTokenizer: false`: the tokenizer is not read (a cloud runs token ids and hidden states only). */
  static load(dir: string, withTokenizer = true): ModelPackage {
    const mpath = join(dir, MANIFEST_FILE);
    if (!existsSync(mpath)) {
      throw new SplitLLMError('E_BAD_PACKAGE', `${dir} has no ${MANIFEST_FILE}: it is not a splitllm model package (create one with 'splitllm import')`);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(mpath, 'utf8'));
    } catch {
      throw new SplitLLMError('E_BAD_PACKAGE', `${mpath} is not valid JSON: re-import the model`);
    }
    const manifest = parseManifest(raw, mpath);
    let weights: WeightSource;
    if (manifest.graph) {
      const gpath = join(dir, manifest.graph.file);
      const graph = loadOnnx(gpath);
      checkExportIO(graph, manifest.graph.io, gpath);
      weights = new OnnxExportWeights(graph, manifest.graph.io, gpath);
    } else weights = new SafetensorsWeights([new SafetensorsFile(join(dir, manifest.weights))]);
    let tokenizerJson: Record<string, unknown> | undefined;
    if (manifest.tokenizer !== '' && withTokenizer) {
      const tpath = join(dir, manifest.tokenizer);
      if (!existsSync(tpath)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${tpath} is missing: re-import the model`);
      try {
        tokenizerJson = JSON.parse(readFileSync(tpath, 'utf8')) as Record<string, unknown>;
      } catch {
        throw new SplitLLMError('E_TOKENIZER', `${tpath} is not valid JSON: re-import the model`);
      }
    }
    return new ModelPackage(manifest, weights, tokenizerJson, dir, withTokenizer ? readTokenizerConfig(dir) : undefined);
  }
}

/** The manifest of a model held in memory (not written as a package). */
function memoryManifest(name: string, config: ModelConfig, sha256: string, source: Record<string, unknown>): Manifest {
  return { format: 'splitllm-model', version: 1, name, config, weights: '(memory)', tokenizer: '(memory)', weightsSha256: sha256, source };
}

/** Checks a parsed manifest.json and builds a fresh `Manifest` (E_BAD_PACKAGE / E_BAD_CONFIG naming the field). */
export function parseManifest(raw: unknown, where: string): Manifest {
  const f: Fields = Fields.of(raw, where, failWith('E_BAD_PACKAGE', 're-import the model'), 'a splitllm manifest');
  if (f.value('format') !== 'splitllm-model' || f.value('version') !== 1) f.fail('is not a version-1 splitllm manifest');
  // files of the package are named, not pathed: a manifest cannot point outside its folder
  const file = (k: string): string => {
    const v = f.str(k, 255);
    return /^[^/\\]+$/.test(v) && v !== '..' ? v : f.fail(`${k} ${JSON.stringify(v)} must be a file name inside the package`);
  };
  // the config first: an architecture this version does not run is the most useful thing to say
  const config = validateConfig(f.value('config'), where);
  const sha = f.str('weightsSha256', 64);
  if (!/^[0-9a-f]{64}$/.test(sha)) f.fail('weightsSha256 must be 64 hex digits');
  const graph = f.optMap('graph');
  const m: Manifest = {
    format: 'splitllm-model',
    version: 1,
    name: f.str('name', 256, 0),
    config,
    weights: file('weights'),
    // a model imported without a tokenizer records none
    tokenizer: f.value('tokenizer') === '' && graph ? '' : file('tokenizer'),
    weightsSha256: sha,
  };
  if (graph) {
    if (config.architecture !== 'onnx') f.fail('graph is recorded but config.architecture is not "onnx"');
    m.graph = { file: ((v) => (/^[^/\\]+$/.test(v) && v !== '..' ? v : graph.fail(`file ${JSON.stringify(v)} must be a file name inside the package`)))(graph.str('file', 255)), io: parseExportIO(graph.map('io')) };
  } else if (config.architecture === 'onnx') f.fail('config.architecture is "onnx" but no graph is recorded');
  const source = f.optMap('source');
  if (source) m.source = { ...source.raw };
  return m;
}

function checkWeights(c: ModelConfig, w: WeightSource, where: string): void {
  for (const [name, shape] of expectedTensors(c)) {
    if (!w.has(name)) throw new SplitLLMError('E_BAD_PACKAGE', `${where}: tensor ${name} is missing: the weights do not match the model config`);
    const got = w.shape(name);
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      throw new SplitLLMError('E_BAD_PACKAGE', `${where}: tensor ${name} has shape [${got}], the config implies [${shape}]`);
    }
  }
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export const WEIGHTS_FILE = 'model.safetensors';
export const TOKENIZER_FILE = 'tokenizer.json';
/** Optional beside tokenizer.json: the chat template and special tokens (Hugging Face's file, as is). */
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';

/** The tokenizer_config.json of a folder (a package or a Hugging Face model), when it has one. */
export function readTokenizerConfig(dir: string): TokenizerConfig | undefined {
  const p = join(dir, TOKENIZER_CONFIG_FILE);
  if (!existsSync(p)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(p, 'utf8'));
  } catch {
    throw new SplitLLMError('E_TOKENIZER', `${p} is not valid JSON: fix or remove it`);
  }
  return parseTokenizerConfig(raw, p);
}

/** How `writePackage` stores weights: as the source stores them ('auto'), or converted. */
export type PackageDtype = 'auto' | FloatDtype;

const CHUNK_BYTES = 16 << 20;

/**
 * Writes an imported model as a package directory and returns its manifest. Tensors stream one chunk at a
 * time from the source to the file (memory: a chunk, not the model); 'auto' keeps each tensor's stored
 * type (a bf16 checkpoint stays bf16; weights held in memory as float32 stay float32), another dtype
 * converts chunk by chunk. The sha256 is computed over the bytes as they are written.
 */
export async function writePackage(dir: string, m: ImportedModel, dtype: PackageDtype = 'auto', onProgress?: (done: number, total: number) => void): Promise<Manifest> {
  mkdirSync(dir, { recursive: true });
  const src = m.weights;
  const tensors: StreamedTensor[] = [...expectedTensors(m.config)].map(([name, shape]) => {
    if (!src.has(name)) throw new SplitLLMError('E_BAD_PACKAGE', `tensor ${name} is missing from the imported model`);
    const got = src.shape(name);
    if (got.join(',') !== shape.join(',')) throw new SplitLLMError('E_BAD_PACKAGE', `tensor ${name} has shape [${got}], the config implies [${shape}]`);
    const stored = src.stored?.(name);
    const out: FloatDtype = dtype === 'auto' ? (stored?.dtype ?? 'F32') : dtype;
    return {
      name,
      shape,
      dtype: out,
      write(put) {
        if (stored) {
          for (const chunk of stored.chunks(CHUNK_BYTES)) put(stored.dtype === out ? chunk : narrow(widen(chunk, stored.dtype), out));
          return;
        }
        const data = src.get(name);
        if (numel(shape) !== data.length) throw new SplitLLMError('E_BAD_PACKAGE', `tensor ${name} data does not match its shape`);
        const step = CHUNK_BYTES / 4;
        for (let i = 0; i < data.length; i += step) put(narrow(data.subarray(i, Math.min(data.length, i + step)), out));
      },
    };
  });
  const total = tensors.reduce((a, t) => a + numel(t.shape) * dtypeBytes(t.dtype), 0);
  const wpath = join(dir, WEIGHTS_FILE);
  const hash = createHash('sha256');
  let done = 0;
  writeSafetensorsStream(wpath, tensors, { format: 'pt' }, (b) => {
    hash.update(b);
    done += b.byteLength;
    onProgress?.(Math.min(done, total), total);
  });
  onProgress?.(total, total);
  writeFileSync(join(dir, TOKENIZER_FILE), JSON.stringify(m.tokenizerJson));
  if (m.tokenizerConfig) writeFileSync(join(dir, TOKENIZER_CONFIG_FILE), JSON.stringify(m.tokenizerConfig, null, 2) + '\n');
  const manifest: Manifest = {
    format: 'splitllm-model',
    version: 1,
    name: m.name,
    config: m.config,
    weights: WEIGHTS_FILE,
    tokenizer: TOKENIZER_FILE,
    weightsSha256: hash.digest('hex'),
    source: m.source,
  };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

/**
 * sha256 over every tensor's name and stored bytes, in the config's order: the identity of weights opened
 * without a package (a Hugging Face folder), streamed.
 */
export function weightsSha256(c: ModelConfig, w: WeightSource): string {
  const h = createHash('sha256');
  for (const name of expectedTensors(c).keys()) {
    h.update(name);
    const stored = w.stored?.(name);
    if (stored) for (const chunk of stored.chunks(CHUNK_BYTES)) h.update(chunk);
    else {
      const d = w.get(name);
      h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
  }
  return h.digest('hex');
}

/** sha256 over the export's files in order (the model file, then its external data): its identity on the wire. */
export async function sha256Files(paths: string[]): Promise<string> {
  const h = createHash('sha256');
  for (const p of paths) for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Writes an imported ONNX export as a package: its files as they are, the tokenizer, and how to drive it. */
export async function writeOnnxPackage(dir: string, m: OnnxImport): Promise<Manifest> {
  copyExportFiles(m, dir);
  if (m.tokenizerJson) writeFileSync(join(dir, TOKENIZER_FILE), JSON.stringify(m.tokenizerJson));
  const tc = m.tokenizerConfigDir ? readTokenizerConfig(m.tokenizerConfigDir) : undefined;
  if (tc) writeFileSync(join(dir, TOKENIZER_CONFIG_FILE), JSON.stringify(tc, null, 2) + '\n');
  const file = basename(m.modelFile);
  const manifest: Manifest = {
    format: 'splitllm-model',
    version: 1,
    name: m.name,
    config: m.config,
    weights: file,
    tokenizer: m.tokenizerJson ? TOKENIZER_FILE : '',
    weightsSha256: await sha256Files(m.files.map((f) => join(dir, basename(f)))),
    source: { format: 'onnx', files: m.files.map((f) => basename(f)), warnings: m.warnings },
    graph: { file, io: m.io },
  };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

/** A path that is an ONNX export: an .onnx file, or a folder holding one (and no package manifest). */
export function isOnnxExport(path: string): boolean {
  if (!existsSync(path)) return false;
  if (!statSync(path).isDirectory()) return path.endsWith('.onnx');
  return !existsSync(join(path, MANIFEST_FILE)) && readdirSync(path).some((f) => f.endsWith('.onnx'));
}

export interface OpenOptions {
  /** llama2.c tokenizer (tok*.bin) for a .bin checkpoint. */
  tokenizer?: string;
  /** a package folder is opened without its tokenizer (the cloud: it never needs text) */
  withoutTokenizer?: boolean;
}

export { isGguf } from './importers/registry.js';

/** Opens a package directory, a Hugging Face directory, a GGUF file or a llama2.c checkpoint. */
export async function openModel(path: string, opts: OpenOptions = {}): Promise<ModelPackage> {
  if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `model ${path} does not exist: pass a package directory, a GGUF file or a llama2.c .bin with --model`);
  if (isOnnxExport(path)) {
    const m = importOnnx(path);
    return ModelPackage.fromOnnx(m, await sha256Files(m.files));
  }
  if (statSync(path).isDirectory() && existsSync(join(path, MANIFEST_FILE))) return ModelPackage.load(path, !opts.withoutTokenizer);
  const importer = importerFor(path);
  if (!importer) throw new SplitLLMError('E_BAD_PACKAGE', `${path} holds neither ${MANIFEST_FILE} nor config.json: pass a splitllm package or a Hugging Face model directory`);
  const m = await importer.import(path, { tokenizer: opts.tokenizer });
  // a checkpoint run in place is named by its source file's hash, else by its weights'
  return ModelPackage.fromImported({ ...m, sha256: m.sha256 ?? weightsSha256(m.config, m.weights) });
}


import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pipelinePerplexity, pplWindows } from '../models/eval/ppl.js';
import { GgufFile } from '../models/gguf.js';
import { importGguf } from '../models/importers/gguf.js';
import { W, expectedTensors } from '../models/manifest.js';
import { ModelPackage, openModel, type ImportedModel } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { SplitLLMError } from '../shared/errors.js';
import { dequantizeBlockwise, quantizeBlockwise } from '../quantization/weights/blockwise.js';
import { cli } from './helpers/cli.js';
import { CORPUS, FIXTURES, REFERENCE_TEXT } from './helpers/fixtures.js';
import {
  f16Bytes,
  f32Bytes,
  GGML,
  quantizeKQuant,
  quantizeQ4_0,
  quantizeQ4_1,
  quantizeQ6_K,
  quantizeQ8_0,
  writeGguf,
  type GgufTensorOut,
  type MetaEntry,
  type Quantized,
} from './helpers/gguf.js';
import { storiesModel } from './helpers/models.js';

const STORIES_GGUF = join(FIXTURES, 'gguf', 'stories260K.gguf');
const tmp = mkdtempSync(join(tmpdir(), 'splitllm-gguf-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function rejection(p: Promise<unknown>): Promise<SplitLLMError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof SplitLLMError) return e;
    throw e;
  }
  throw new Error('expected a SplitLLMError');
}

/** A random row-major tensor with a few outliers, as trained weights have. */
function randomTensor(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (rnd() - 0.5) * (i % 97 === 0 ? 8 : 1);
  return x;
}

describe('GGUF tensor types: the reader dequantizes what ggml-layout blocks encode', () => {
  const n = 2 * 512; // two rows of 512: two K-quant super-blocks per row, 16 blocks of 32
  const cases: [string, number, (x: Float32Array) => Quantized][] = [
    ['F16', GGML.F16, f16Bytes],
    ['Q8_0', GGML.Q8_0, quantizeQ8_0],
    ['Q4_0', GGML.Q4_0, quantizeQ4_0],
    ['Q4_1', GGML.Q4_1, quantizeQ4_1],
    ['Q4_K', GGML.Q4_K, (x) => quantizeKQuant(x, 4)],
    ['Q5_K', GGML.Q5_K, (x) => quantizeKQuant(x, 5)],
    ['Q6_K', GGML.Q6_K, quantizeQ6_K],
  ];
  const x = randomTensor(n, 7);
  const encoded = cases.map(([name, type, q], i) => ({ name, type, q: q(x), seed: i }));
  const path = join(tmp, 'types.gguf');
  beforeAll(() => {
    const tensors: GgufTensorOut[] = [{ name: 'F32', shape: [2, 512], type: GGML.F32, data: f32Bytes(x) }];
    for (const e of encoded) tensors.push({ name: e.name, shape: [2, 512], type: e.type, data: e.q.data });
    writeGguf(path, [{ key: 'general.architecture', t: 'str', v: 'llama' }], tensors);
  });

  it('F32 is read as written', () => {
    const g = GgufFile.open(path);
    try {
      expect(g.readF32('F32')).toEqual(x);
      expect(g.info('F32').shape).toEqual([2, 512]);
    } finally {
      g.close();
    }
  });

  for (const e of encoded) {
    it(`${e.name}: every value equals the encoded one, and is near the original`, () => {
      const g = GgufFile.open(path);
      try {
        const y = g.readF32(e.name);
        expect(y.length).toBe(n);
        let worst = 0;
        let err = 0;
        for (let i = 0; i < n; i++) {
          worst = Math.max(worst, Math.abs(y[i]! - e.q.values[i]!));
          err = Math.max(err, Math.abs(y[i]! - x[i]!));
        }
        expect(worst).toBeLessThanOrEqual(1e-6);
        // the round-off of each type: a fraction of the largest value (4.0)
        const bound = { F16: 0.002, Q8_0: 0.02, Q4_0: 0.3, Q4_1: 0.3, Q4_K: 0.4, Q5_K: 0.2, Q6_K: 0.1 }[e.name]!;
        expect(err).toBeLessThan(bound);
      } finally {
        g.close();
      }
    });
  }
});

/** The fixture's metadata as typed entries (for writing variants of it). */
function typedMetadata(g: GgufFile, override: Record<string, string> = {}): MetaEntry[] {
  const floats = new Set(['llama.attention.layer_norm_rms_epsilon', 'llama.rope.freq_base']);
  const out: MetaEntry[] = [];
  for (const [key, v] of g.metadata) {
    if (key in override) out.push({ key, t: 'str', v: override[key]! });
    else if (typeof v === 'string') out.push({ key, t: 'str', v });
    else if (typeof v === 'number') out.push({ key, t: floats.has(key) ? 'f32' : 'u32', v });
    else if (typeof v === 'boolean') out.push({ key, t: 'bool', v });
    else if (Array.isArray(v) && key === 'tokenizer.ggml.tokens') out.push({ key, t: 'strs', v: v.map(String) });
    else if (Array.isArray(v) && key === 'tokenizer.ggml.scores') out.push({ key, t: 'f32s', v: v.map(Number) });
    else if (Array.isArray(v)) out.push({ key, t: 'i32s', v: v.map(Number) });
  }
  return out;
}

/** The fixture rewritten with each 2-D tensor whose rows are whole blocks quantized by `q` (others F32, as llama-quantize falls back). */
function storiesVariant(path: string, q: ((x: Float32Array) => Quantized) | undefined, type: number, opts: { arch?: string; swap?: [string, number] } = {}): void {
  const g = GgufFile.open(STORIES_GGUF);
  try {
    const tensors: GgufTensorOut[] = [];
    for (const t of g.tensors.values()) {
      const x = g.readF32(t.name);
      if (opts.swap && t.name === opts.swap[0]) {
        tensors.push({ name: t.name, shape: t.shape, type: opts.swap[1], data: Buffer.alloc(Math.ceil((x.length / 256) * 84)) });
      } else if (q && t.shape.length === 2 && t.shape[1]! % 32 === 0) tensors.push({ name: t.name, shape: t.shape, type, data: q(x).data });
      else tensors.push({ name: t.name, shape: t.shape, type: GGML.F32, data: f32Bytes(x) });
    }
    writeGguf(path, typedMetadata(g, opts.arch ? { 'general.architecture': opts.arch } : {}), tensors);
  } finally {
    g.close();
  }
}

async function evalPpl(pkg: ModelPackage): Promise<{ ppl: number; tokens: number }> {
  const p = await Pipeline.create(pkg);
  try {
    const r = await pipelinePerplexity(p, pplWindows(pkg.tokenizer(), readFileSync(join(CORPUS, 'tinystories_eval.txt'), 'utf8')));
    return { ppl: r.ppl, tokens: r.tokens };
  } finally {
    await p.release();
  }
}

async function greedy(pkg: ModelPackage, n: number, stopIds?: number[]): Promise<number[]> {
  const p = await Pipeline.create(pkg);
  try {
    return await generate(p, [pkg.config.bosId], { maxTokens: n, temperature: 0, ...(stopIds ? { stopIds } : {}) });
  } finally {
    await p.release();
  }
}

const haveGguf = existsSync(STORIES_GGUF);
if (!haveGguf) process.stderr.write(`[splitllm tests] SKIPPED "stories260K.gguf import": ${STORIES_GGUF} not found (set SPLITLLM_FIXTURES)\n`);
const describeGguf = haveGguf ? describe : describe.skip;

describeGguf('stories260K.gguf imports to the same model as stories260K.bin', () => {
  let imported: ImportedModel;
  let bin: ModelPackage;
  let binPpl: { ppl: number; tokens: number };
  beforeAll(async () => {
    imported = await importGguf(STORIES_GGUF);
    bin = await storiesModel();
    binPpl = await evalPpl(bin);
  }, 120_000);

  it('same config (but its longer context), same weights bit for bit, one copy of the shared classifier', () => {
    const { maxSeq: a, ...c } = imported.config;
    const { maxSeq: b, ...d } = bin.config;
    expect(c).toEqual(d);
    expect([a, b]).toEqual([2048, 512]);
    expect(imported.config.tiedEmbeddings).toBe(true);
    expect(imported.weights.has(W.lmHead)).toBe(false);
    for (const name of expectedTensors(bin.config).keys()) expect(imported.weights.get(name), name).toEqual(bin.weights.get(name));
    expect(imported.source).toMatchObject({ format: 'gguf', version: 3, architecture: 'llama', tensorTypes: { F32: 48 } });
  });

  it('the converted tokenizer encodes as the llama2.c one', () => {
    const pkg = ModelPackage.fromImported(imported);
    for (const text of [REFERENCE_TEXT, 'Tom said: "héllo, 3 cats!"\n\nThe end.', '  two  spaces']) {
      expect(pkg.tokenizer().encode(text)).toEqual(bin.tokenizer().encode(text));
    }
  });

  it('greedy tokens and eval ppl equal the .bin import (ppl within 0.01%)', async () => {
    const pkg = ModelPackage.fromImported(imported);
    expect(await greedy(pkg, 60)).toEqual(await greedy(bin, 60));
    const r = await evalPpl(pkg);
    expect(r.tokens).toBe(binPpl.tokens);
    expect(Math.abs(r.ppl / binPpl.ppl - 1)).toBeLessThan(1e-4);
  }, 60_000);

  for (const [name, q, type, limit] of [
    ['Q8_0', quantizeQ8_0, GGML.Q8_0, 0.005],
    ['Q4_0', quantizeQ4_0, GGML.Q4_0, 0.1],
  ] as const) {
    it(`a ${name} variant (written by the test's own quantizer) imports within ${limit * 100}% ppl`, async () => {
      const path = join(tmp, `stories-${name}.gguf`);
      storiesVariant(path, q, type);
      const m = await importGguf(path);
      // every matrix with rows of 64 is quantized (the embedding and its copy as output too); ffn_down's
      // rows of 172 are not whole blocks and stay F32, as do the norms
      expect(m.source['tensorTypes']).toEqual({ [name]: 5 * 6 + 2, F32: 5 * 3 + 1 });
      const r = await evalPpl(ModelPackage.fromImported(m));
      const rel = r.ppl / binPpl.ppl - 1;
      process.stderr.write(`[gguf] ${name} ppl ${r.ppl.toFixed(4)} vs ${binPpl.ppl.toFixed(4)} (${(rel * 100).toFixed(3)}%)\n`);
      expect(r.tokens).toBe(binPpl.tokens);
      expect(Math.abs(rel)).toBeLessThan(limit);
    }, 60_000);
  }

  it('Q4_0 / Q8_0 blocks become MatMulNBits blocks at 4 / 8 bits (block 32) without loss; float weights still get the min/max fit', async () => {
    for (const [name, q, type, bits] of [
      ['Q4_0', quantizeQ4_0, GGML.Q4_0, 4],
      ['Q8_0', quantizeQ8_0, GGML.Q8_0, 8],
    ] as const) {
      const path = join(tmp, `grid-${name}.gguf`);
      storiesVariant(path, q, type);
      const m = await importGguf(path);
      let checked = 0;
      for (const tname of expectedTensors(m.config).keys()) {
        const shape = m.weights.shape(tname);
        if (shape.length !== 2 || shape[1]! % 32 !== 0) continue;
        const [N, K] = shape as [number, number];
        const data = m.weights.get(tname);
        const back = dequantizeBlockwise(quantizeBlockwise(data, N, K, bits, 32));
        expect(back, `${name} ${tname}`).toEqual(data);
        checked++;
      }
      expect(checked).toBe(5 * 6 + 1);
    }
    // the original float weights are not on such a grid: quantizing them loses something
    const w = bin.weights.get('model.layers.0.self_attn.q_proj.weight');
    const back = dequantizeBlockwise(quantizeBlockwise(w, 64, 64, 4, 32));
    expect(back).not.toEqual(w);
    let err = 0;
    for (let i = 0; i < w.length; i++) err = Math.max(err, Math.abs(back[i]! - w[i]!));
    expect(err).toBeGreaterThan(0);
  });

  it('the CLI imports it into a package that opens and generates the reference story', () => {
    const out = join(tmp, 'pkg');
    const r = cli(['import', STORIES_GGUF, '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ source: { format: 'gguf' }, config: { tiedEmbeddings: true } });
    const g = cli(['generate', '--model', out, '--prompt', '', '--max-tokens', '44', '--temperature', '0']);
    expect(g.code, g.stderr).toBe(0);
    expect(g.stdout.trim()).toBe(REFERENCE_TEXT.slice(0, g.stdout.trim().length));
    expect(g.stdout.trim().length).toBeGreaterThan(120);
  });

  describe('broken and unsupported files: one typed error naming the problem', () => {
    it('truncated inside the data, inside the header, or not GGUF at all', async () => {
      const whole = readFileSync(STORIES_GGUF);
      const cut = join(tmp, 'cut.gguf');
      writeFileSync(cut, whole.subarray(0, Math.floor(whole.length * 0.6)));
      const e1 = await rejection(importGguf(cut));
      expect(e1.code).toBe('E_CHECKPOINT_TRUNCATED');
      expect(e1.message).toMatch(/tensor blk\.\d\.\S+ ends at byte \d+: the file is truncated/);
      writeFileSync(cut, whole.subarray(0, 300));
      const e2 = await rejection(importGguf(cut));
      expect([e2.code, e2.message]).toEqual(['E_CHECKPOINT_TRUNCATED', expect.stringMatching(/ends inside its GGUF header/)]);
      const junk = join(tmp, 'junk.gguf');
      writeFileSync(junk, Buffer.concat([Buffer.from('GGUF'), Buffer.from([1, 0, 0, 0]), Buffer.alloc(64)]));
      expect((await rejection(importGguf(junk))).message).toMatch(/GGUF version 1; splitllm reads versions 2 and 3/);
      writeFileSync(junk, Buffer.from('not a gguf file at all, just some text'));
      expect((await rejection(importGguf(junk))).code).toBe('E_CHECKPOINT_CORRUPT');
    });

    it('an architecture it does not import', async () => {
      const path = join(tmp, 'gpt2-arch.gguf');
      storiesVariant(path, undefined, GGML.F32, { arch: 'gpt2' });
      const e = await rejection(importGguf(path));
      expect(e.code).toBe('E_UNKNOWN_ARCHITECTURE');
      expect(e.message).toMatch(/GGUF architecture "gpt2" is not supported/);
    });

    it('a tensor type it does not read', async () => {
      const path = join(tmp, 'q2k.gguf');
      // Q2_K: 84 bytes per 256; the shape is what counts for the error
      storiesVariant(path, undefined, GGML.F32, { swap: ['blk.2.attn_q.weight', GGML.Q2_K] });
      const e = await rejection(importGguf(path));
      expect(e.code).toBe('E_UNSUPPORTED_FORMAT');
      expect(e.message).toMatch(/tensor blk\.2\.attn_q\.weight is Q2_K, which splitllm does not read/);
      // and through the CLI: one line, no stack
      const r = cli(['import', path, '--out', join(tmp, 'never')]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/\[E_UNSUPPORTED_FORMAT\].*Q2_K/);
      expect(existsSync(join(tmp, 'never', 'manifest.json'))).toBe(false);
    });
  });
});

/** GPT-2's byte → printable-character table (bytes_to_unicode). */
function byteToUnicode(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(keep(b) ? b : 256 + extra++));
  return out;
}

describe('a GGUF with a gpt2 (byte-level BPE) vocabulary', () => {
  it('converts to a tokenizer that applies the merges and decodes back', async () => {
    const bytes = byteToUnicode();
    const merged = ['he', 'll', 'hell', 'hello', 'Ġw', 'Ġwor'];
    const tokens = ['<|endoftext|>', ...bytes, ...merged];
    const merges = ['h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'Ġw o', 'Ġwo r'];
    // one valid merge list needs every intermediate: add Ġwo
    tokens.push('Ġwo');
    const V = tokens.length;
    const D = 32;
    const F = 64;
    const meta: MetaEntry[] = [
      { key: 'general.architecture', t: 'str', v: 'llama' },
      { key: 'general.name', t: 'str', v: 'bpe-test' },
      { key: 'llama.context_length', t: 'u32', v: 64 },
      { key: 'llama.embedding_length', t: 'u32', v: D },
      { key: 'llama.feed_forward_length', t: 'u32', v: F },
      { key: 'llama.block_count', t: 'u32', v: 1 },
      { key: 'llama.attention.head_count', t: 'u32', v: 2 },
      { key: 'llama.attention.head_count_kv', t: 'u32', v: 2 },
      { key: 'llama.rope.freq_base', t: 'f32', v: 10000 },
      { key: 'llama.attention.layer_norm_rms_epsilon', t: 'f32', v: 1e-5 },
      { key: 'tokenizer.ggml.model', t: 'str', v: 'gpt2' },
      { key: 'tokenizer.ggml.tokens', t: 'strs', v: tokens },
      { key: 'tokenizer.ggml.token_type', t: 'i32s', v: tokens.map((_, i) => (i === 0 ? 3 : 1)) },
      { key: 'tokenizer.ggml.merges', t: 'strs', v: merges },
      { key: 'tokenizer.ggml.bos_token_id', t: 'u32', v: 0 },
      { key: 'tokenizer.ggml.eos_token_id', t: 'u32', v: 0 },
    ];
    const t = (name: string, shape: number[], seed: number): GgufTensorOut => ({
      name,
      shape,
      type: GGML.F32,
      data: f32Bytes(shape.length === 1 ? new Float32Array(shape[0]!).fill(1) : randomTensor(shape[0]! * shape[1]!, seed)),
    });
    const path = join(tmp, 'bpe.gguf');
    writeGguf(path, meta, [
      t('token_embd.weight', [V, D], 1),
      t('output_norm.weight', [D], 0),
      t('blk.0.attn_norm.weight', [D], 0),
      t('blk.0.attn_q.weight', [D, D], 2),
      t('blk.0.attn_k.weight', [D, D], 3),
      t('blk.0.attn_v.weight', [D, D], 4),
      t('blk.0.attn_output.weight', [D, D], 5),
      t('blk.0.ffn_norm.weight', [D], 0),
      t('blk.0.ffn_gate.weight', [F, D], 6),
      t('blk.0.ffn_up.weight', [F, D], 7),
      t('blk.0.ffn_down.weight', [D, F], 8),
    ]);
    const pkg = await openModel(path);
    const id = (s: string) => tokens.indexOf(s);
    const ids = pkg.tokenizer().encode('hello world', false);
    expect(ids).toEqual([id('hello'), id('Ġwor'), id('l'), id('d')]);
    expect(pkg.tokenizer().decode(ids)).toBe('hello world');
    expect(pkg.config).toMatchObject({ nLayers: 1, dim: D, vocabSize: V, tiedEmbeddings: true, ropeStyle: 'interleaved', bosId: 0 });
    expect(await greedy(pkg, 5, [])).toHaveLength(5);
  });
});

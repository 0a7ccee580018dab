import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { importHuggingFace } from '../models/importers/hf.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { W, type ModelConfig } from '../models/manifest.js';
import { ModelPackage, openModel, writePackage, type ImportedModel } from '../models/package.js';
import { writeSafetensors } from '../models/safetensors.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { maxAbsDiff } from '../shared/tensor.js';
import { describeWithFixtures } from './helpers/fixtures.js';
import { storiesModel } from './helpers/models.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-hf-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** llama2.c (interleaved pairs) → Hugging Face (halves) row permutation of wq / wk, as HF's converter does. */
function permuteRows(w: Float32Array, heads: number, rows: number, cols: number): Float32Array {
  const hd = rows / heads;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < hd / 2; i++) {
      for (let j = 0; j < 2; j++) {
        const src = h * hd + 2 * i + j;
        const dst = h * hd + j * (hd / 2) + i;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

function writeHfDir(dir: string, m: { config: ModelConfig; weights: (name: string) => Float32Array; shapes: Map<string, number[]> | Iterable<[string, number[]]>; tokenizerJson: unknown }, modelType: string, permute: boolean, dtype: 'F32' | 'F16' = 'F32'): void {
  const c = m.config;
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      model_type: modelType,
      architectures: ['LlamaForCausalLM'],
      hidden_size: c.dim,
      intermediate_size: c.ffnDim,
      num_hidden_layers: c.nLayers,
      num_attention_heads: c.nHeads,
      num_key_value_heads: c.nKvHeads,
      vocab_size: c.vocabSize,
      max_position_embeddings: c.maxSeq,
      rope_theta: c.ropeTheta,
      rms_norm_eps: c.normEps,
      tie_word_embeddings: c.tiedEmbeddings,
      bos_token_id: c.bosId,
      eos_token_id: c.eosId,
      hidden_act: 'silu',
    }),
  );
  const tensors = [...m.shapes].map(([name, shape]) => {
    let data = m.weights(name);
    if (permute && /q_proj\.weight$/.test(name)) data = permuteRows(data, c.nHeads, shape[0]!, shape[1]!);
    if (permute && /k_proj\.weight$/.test(name)) data = permuteRows(data, c.nKvHeads, shape[0]!, shape[1]!);
    return { name, shape, data };
  });
  // two shards, to exercise the sharded path
  const half = Math.ceil(tensors.length / 2);
  writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), tensors.slice(0, half), {}, dtype);
  writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), tensors.slice(half), {}, dtype);
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(m.tokenizerJson));
}

async function logitsOf(pkg: ModelPackage, ids: number[]): Promise<Float32Array> {
  const p = await Pipeline.create(pkg);
  const out = await p.forward(ids, { keepCache: false });
  await p.release();
  return out.data;
}

describeWithFixtures('Hugging Face round trip of stories260K', () => {
  it('exported to HF layout (permuted wq/wk, half RoPE) and re-imported gives the same logits', async () => {
    const pkg = await storiesModel();
    const dir = join(tmp, 'stories-hf');
    rmSync(dir, { recursive: true, force: true });
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir);
    const { expectedTensors } = await import('../models/manifest.js');
    writeHfDir(dir, { config: pkg.config, weights: (n) => pkg.weights.get(n), shapes: expectedTensors(pkg.config), tokenizerJson: pkg.tokenizerJson }, 'llama', true);
    const imported = await importHuggingFace(dir);
    expect(imported.config.ropeStyle).toBe('half');
    expect(imported.config.tiedEmbeddings).toBe(true);
    const hf = ModelPackage.fromImported(imported);
    const ids = pkg.tokenizer().encode('Once upon a time, there was a big bear who liked honey. He went to the river to drink.');
    expect(maxAbsDiff(await logitsOf(hf, ids), await logitsOf(pkg, ids))).toBeLessThan(1e-4);
    // the q/k weights really were permuted: same logits are not a coincidence of identical tensors
    expect(maxAbsDiff(hf.weights.get(W.q(0)), pkg.weights.get(W.q(0)))).toBeGreaterThan(1e-3);
    // and as a package on disk, opened by path like any --model
    await writePackage(join(tmp, 'stories-pkg'), imported);
    const fromDisk = await openModel(join(tmp, 'stories-pkg'));
    expect(maxAbsDiff(await logitsOf(fromDisk, ids), await logitsOf(pkg, ids))).toBeLessThan(1e-4);
  });
});

it('imports Qwen2 naming (q/k/v biases, untied head, F16 shards) and Mistral naming', async () => {
  for (const [type, overrides] of [
    ['qwen2', { architecture: 'qwen2', qkvBias: true, tiedEmbeddings: false }],
    ['mistral', { architecture: 'mistral', qkvBias: false, tiedEmbeddings: false }],
  ] as const) {
    const src: ImportedModel = syntheticModel('tiny', 11, overrides as Partial<ModelConfig>);
    const dir = mkdtempSync(join(tmp, `${type}-`));
    const { expectedTensors } = await import('../models/manifest.js');
    writeHfDir(dir, { config: src.config, weights: (n) => src.weights.get(n), shapes: expectedTensors(src.config), tokenizerJson: src.tokenizerJson }, type, false, 'F16');
    const imported = await importHuggingFace(dir);
    expect(imported.config.architecture).toBe(type);
    expect(imported.config.qkvBias).toBe(type === 'qwen2');
    const ref = ModelPackage.fromImported(src);
    const got = ModelPackage.fromImported(imported);
    const ids = [1, 40, 41, 42, 50, 60, 70, 80];
    // F16 storage: logits agree to half precision of the weights
    expect(maxAbsDiff(await logitsOf(got, ids), await logitsOf(ref, ids))).toBeLessThan(2e-2);
  }
});

describe('streamed import of a bf16 checkpoint (a shape fixture with its layers cut)', () => {
  it('Llama-3.2-1B layout, 1 layer: the package keeps bf16 bit for bit, its bytes equal the shards, the rope scaling is recorded', async () => {
    const { writeShapeModel } = await import('../bench/shapes.js');
    const { readFileSync, statSync, readdirSync } = await import('node:fs');
    const { SafetensorsFile } = await import('../models/safetensors.js');
    const src = join(tmp, 'shape-1b');
    const written = writeShapeModel('llama-3.2-1b', src, { seed: 3, layers: 1 });
    // the published layout: two shards and their index naming every tensor
    const shards = readdirSync(src).filter((f) => f.endsWith('.safetensors')).sort();
    expect(shards).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    const index = JSON.parse(readFileSync(join(src, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    expect(Object.keys(index.weight_map)).toHaveLength(1 + 9 + 1); // embedding, one layer, final norm (tied: no lm_head)
    const imported = await importHuggingFace(src);
    expect(imported.config.ropeScaling).toEqual({ type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192 });
    const out = join(tmp, 'pkg-1b');
    let last = 0;
    const manifest = await writePackage(out, imported, 'auto', (done, total) => {
      expect(done).toBeGreaterThanOrEqual(last);
      expect(total).toBe(written);
      last = done;
    });
    expect(last).toBe(written);
    const pkgFile = new SafetensorsFile(join(out, 'model.safetensors'));
    const shardFiles = shards.map((f) => new SafetensorsFile(join(src, f)));
    try {
      for (const name of pkgFile.tensors.keys()) {
        const a = pkgFile.stored(name);
        const from = shardFiles.find((f) => f.has(name))!;
        expect(a.dtype, name).toBe('BF16');
        const bytes = (t: ReturnType<typeof pkgFile.stored>): Buffer => Buffer.concat([...t.chunks(1 << 20)].map((c) => Buffer.from(c)));
        expect(bytes(a).equals(bytes(from.stored(name))), name).toBe(true);
      }
    } finally {
      pkgFile.close();
      for (const f of shardFiles) f.close();
    }
    // the package is the checkpoint's weights plus a header: ≤ 1.05× its bytes
    const pkgBytes = statSync(join(out, 'model.safetensors')).size;
    expect(pkgBytes).toBeLessThan(written * 1.05);
    expect(pkgBytes).toBeGreaterThan(written);
    // the streamed hash is the file's
    const { sha256File } = await import('../models/package.js');
    expect(manifest.weightsSha256).toBe(await sha256File(join(out, 'model.safetensors')));
    // opened as a folder or as the package, the same float weights (bf16 widened exactly both ways)
    const direct = await openModel(src);
    const pkg = await openModel(out);
    for (const name of [W.q(0), W.down(0), W.norm]) expect(maxAbsDiff(direct.weights.get(name), pkg.weights.get(name)), name).toBe(0);
    expect(direct.hash).toMatch(/^[0-9a-f]{64}$/);
  });
});

it('--dtype converts chunk by chunk: f16 and bf16 packages of float32 weights hold them within their precision', async () => {
  const { SafetensorsFile } = await import('../models/safetensors.js');
  const src = syntheticModel('tiny', 4);
  for (const [dtype, tol] of [['F16', 1e-3], ['BF16', 1e-2]] as const) {
    const out = join(tmp, `tiny-${dtype}`);
    await writePackage(out, src, dtype);
    const f = new SafetensorsFile(join(out, 'model.safetensors'));
    try {
      expect(f.info(W.q(0)).dtype).toBe(dtype);
      const d = maxAbsDiff(f.readF32(W.embed), src.weights.get(W.embed));
      expect(d).toBeGreaterThan(0);
      expect(d).toBeLessThan(tol);
    } finally {
      f.close();
    }
  }
});

it('float32 → bfloat16 rounds to nearest even and keeps infinities and NaN', async () => {
  const { f32ToBf16Bits, bf16ArrayToF32 } = await import('../shared/tensor.js');
  const back = (v: number): number => bf16ArrayToF32(Uint16Array.of(f32ToBf16Bits(v)))[0]!;
  expect(back(1)).toBe(1);
  expect(back(1 + 2 ** -8)).toBe(1); // a tie: to even (1.0)
  expect(back(1 + 3 * 2 ** -8)).toBe(1 + 2 ** -6); // a tie: to even (up)
  expect(back(1 + 2 ** -8 + 2 ** -20)).toBe(1 + 2 ** -7); // past the tie: up
  expect(back(-Infinity)).toBe(-Infinity);
  expect(back(3.4e38)).toBe(Infinity);
  expect(Number.isNaN(back(NaN))).toBe(true);
});

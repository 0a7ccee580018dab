import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
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
    writeHfDir(dir, { config: src.config, weights: (n) => src.tensors.get(n)!.data, shapes: expectedTensors(src.config), tokenizerJson: src.tokenizerJson }, type, false, 'F16');
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

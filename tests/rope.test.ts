/**
 * RoPE scaling (shared/rope.ts) against references written here from Hugging Face's published
 * definitions (modeling_rope_utils: `_compute_llama3_parameters`, `_compute_yarn_parameters`, linear),
 * in their vectorized form (masks and `where`), and a whole decoder layer computed in plain JavaScript
 * against the ONNX segments (both attention forms) of a model whose config carries llama3 scaling.
 */
import { describe, expect, it } from 'vitest';
import { hfToConfig } from '../models/importers/hf.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { validateConfig, W, type ModelConfig } from '../models/manifest.js';
import { ModelPackage } from '../models/package.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import { layerLayout } from '../shared/decoder.js';
import { ropeFrequencies, type RopeScaling } from '../shared/rope.js';
import { maxAbsDiff } from '../shared/tensor.js';
import { userErrorOf } from './helpers/errors.js';

const arange = (n: number, step = 1): number[] => Array.from({ length: n }, (_, i) => i * step);

/** Hugging Face's llama3 inverse frequencies, step by step as its code states them. */
function hfLlama3(dim: number, base: number, factor: number, low: number, high: number, oldContext: number): number[] {
  const invFreq = arange(dim / 2, 2).map((e) => 1 / base ** (e / dim));
  const lowFreqWavelen = oldContext / low;
  const highFreqWavelen = oldContext / high;
  const wavelen = invFreq.map((f) => (2 * Math.PI) / f);
  const invFreqLlama = invFreq.map((f, i) => (wavelen[i]! > lowFreqWavelen ? f / factor : f));
  const smoothFactor = wavelen.map((w) => (oldContext / w - low) / (high - low));
  const smoothed = invFreqLlama.map((f, i) => ((1 - smoothFactor[i]!) * f) / factor + smoothFactor[i]! * f);
  const isMedium = wavelen.map((w) => !(w < highFreqWavelen) && !(w > lowFreqWavelen));
  return invFreqLlama.map((f, i) => (isMedium[i] ? smoothed[i]! : f));
}

/** Hugging Face's yarn inverse frequencies and attention factor. */
function hfYarn(dim: number, base: number, factor: number, originalMax: number, betaFast = 32, betaSlow = 1): { inv: number[]; attention: number } {
  const posFreqs = arange(dim / 2, 2).map((e) => base ** (e / dim));
  const extrapolation = posFreqs.map((p) => 1 / p);
  const interpolation = posFreqs.map((p) => 1 / (factor * p));
  const correctionDim = (numRot: number): number => (dim * Math.log(originalMax / (numRot * 2 * Math.PI))) / (2 * Math.log(base));
  const low = Math.max(Math.floor(correctionDim(betaFast)), 0);
  let high = Math.min(Math.ceil(correctionDim(betaSlow)), dim - 1);
  if (low === high) high += 0.001;
  const ramp = arange(dim / 2).map((i) => Math.min(1, Math.max(0, (i - low) / (high - low))));
  const extrapolationFactor = ramp.map((r) => 1 - r);
  return {
    inv: interpolation.map((f, i) => f * (1 - extrapolationFactor[i]!) + extrapolation[i]! * extrapolationFactor[i]!),
    attention: 0.1 * Math.log(factor) + 1,
  };
}

const close = (got: Float64Array, want: number[]): void => {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!) / want[i]!, `frequency ${i}`).toBeLessThan(1e-12);
};

describe('RoPE scaling frequencies', () => {
  it("llama3 (Llama-3.2-1B's config: theta 500000, head 64, factor 32, 1/4, 8192) matches Hugging Face's definition", () => {
    const { inv, mscale } = ropeFrequencies(64, 500000, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192 });
    close(inv, hfLlama3(64, 500000, 32, 1, 4, 8192));
    expect(mscale).toBe(1);
    // the three regimes are all present: kept, blended, divided
    const plain = ropeFrequencies(64, 500000).inv;
    const ratios = [...inv].map((f, i) => plain[i]! / f);
    expect(ratios[0]).toBe(1);
    expect(ratios[31]).toBeCloseTo(32, 10);
    expect(ratios.some((r) => r > 1.01 && r < 31.9)).toBe(true);
  });

  it("yarn (Qwen2.5's long-context recipe: factor 4 over 32768) matches Hugging Face's, with its attention factor", () => {
    const got = ropeFrequencies(128, 1e6, { type: 'yarn', factor: 4, originalContext: 32768, betaFast: 32, betaSlow: 1, attentionFactor: 0.1 * Math.log(4) + 1, truncate: true });
    const want = hfYarn(128, 1e6, 4, 32768);
    close(got.inv, want.inv);
    expect(got.mscale).toBeCloseTo(want.attention, 12);
  });

  it('linear divides every frequency by the factor', () => {
    close(ropeFrequencies(16, 10000, { type: 'linear', factor: 4 }).inv, arange(8, 2).map((e) => 1 / 10000 ** (e / 16) / 4));
  });
});

describe('rope_scaling in config.json', () => {
  const hf = (rope: unknown, over: Record<string, unknown> = {}): Record<string, unknown> => ({
    model_type: 'llama',
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 320,
    max_position_embeddings: 131072,
    rope_theta: 500000,
    rope_scaling: rope,
    ...over,
  });

  it("Llama 3.2's rope_scaling imports as llama3 and survives the manifest's check", () => {
    const c = hfToConfig(hf({ factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' }), 'config.json');
    expect(c.ropeScaling).toEqual({ type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192 });
    expect(c.maxSeq).toBe(131072);
    expect(validateConfig(JSON.parse(JSON.stringify(c)), 'manifest.json').ropeScaling).toEqual(c.ropeScaling);
  });

  it('yarn takes Hugging Face defaults; dynamic caps the context at the original; default is plain', () => {
    const y = hfToConfig(hf({ type: 'yarn', factor: 4, original_max_position_embeddings: 32768 }, { model_type: 'qwen2' }), 'c');
    expect(y.ropeScaling).toEqual({ type: 'yarn', factor: 4, originalContext: 32768, betaFast: 32, betaSlow: 1, attentionFactor: 0.1 * Math.log(4) + 1, truncate: true });
    const d = hfToConfig(hf({ rope_type: 'dynamic', factor: 2, original_max_position_embeddings: 4096 }), 'c');
    expect([d.ropeScaling, d.maxSeq]).toEqual([undefined, 4096]);
    expect(hfToConfig(hf({ rope_type: 'default' }), 'c').ropeScaling).toBeUndefined();
  });

  it.each([
    [{ rope_type: 'longrope', factor: 2 }, /rope_type "longrope" is not one splitllm runs/],
    [{ rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 }, /lacks original_max_position_embeddings/],
    [{ rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 8192 }, /high_freq_factor 1 must exceed low_freq_factor 4/],
    [{ rope_type: 'linear', factor: 'two' }, /factor must be a finite number/],
  ])('refuses %j', (rope, message) => {
    const e = userErrorOf(() => hfToConfig(hf(rope), 'dir/config.json'));
    expect(e.code).toBe('E_BAD_CONFIG');
    expect(e.message).toMatch(/^dir\/config\.json\.rope_scaling: /);
    expect(e.message).toMatch(message);
  });

  it('a manifest with an unknown or incomplete ropeScaling is E_BAD_CONFIG', () => {
    const c = syntheticModel('tiny', 1).config;
    expect(userErrorOf(() => validateConfig({ ...c, ropeScaling: { type: 'ntk', factor: 2 } }, 'm.json')).message).toMatch(/ropeScaling: type must be one of linear, llama3, yarn/);
    expect(userErrorOf(() => validateConfig({ ...c, ropeScaling: { type: 'llama3', factor: 2 } }, 'm.json')).message).toMatch(/ropeScaling: lowFreqFactor/);
  });
});

/** One decoder layer and the head in plain JavaScript (float64), RoPE on halves from the given frequencies. */
function referenceLogits(m: ModelPackage, ids: number[], inv: number[]): Float64Array[] {
  const c = m.config;
  const w = (n: string): Float32Array => m.weights.get(n);
  const { dim: D, headDim: hd, nHeads: H, nKvHeads: KV } = c;
  const rms = (x: number[], g: Float32Array): number[] => {
    const s = Math.sqrt(x.reduce((a, v) => a + v * v, 0) / x.length + c.normEps);
    return x.map((v, i) => (v / s) * g[i]!);
  };
  const mv = (name: string, x: number[], out: number): number[] => {
    const a = w(name);
    return Array.from({ length: out }, (_, o) => x.reduce((s, v, i) => s + a[o * x.length + i]! * v, 0));
  };
  const rotate = (v: number[], p: number): number[] => {
    const out = v.slice();
    for (let h = 0; h < v.length / hd; h++) {
      for (let i = 0; i < hd / 2; i++) {
        const [a, b] = [v[h * hd + i]!, v[h * hd + i + hd / 2]!];
        const [cs, sn] = [Math.cos(p * inv[i]!), Math.sin(p * inv[i]!)];
        out[h * hd + i] = a * cs - b * sn;
        out[h * hd + i + hd / 2] = b * cs + a * sn;
      }
    }
    return out;
  };
  const L = layerLayout(c, 0).linears;
  const emb = w(W.embed);
  const keys: number[][] = [];
  const values: number[][] = [];
  return ids.map((id, p) => {
    let x = Array.from(emb.subarray(id * D, (id + 1) * D));
    const h = rms(x, w(W.attnNorm(0)));
    const q = rotate(mv(L.q.name, h, H * hd), p);
    keys.push(rotate(mv(L.k.name, h, KV * hd), p));
    values.push(mv(L.v.name, h, KV * hd));
    const ctx: number[] = [];
    for (let head = 0; head < H; head++) {
      const kv = Math.floor(head / (H / KV));
      const scores = keys.map((k) => q.slice(head * hd, (head + 1) * hd).reduce((s, v, i) => s + v * k[kv * hd + i]!, 0) / Math.sqrt(hd));
      const mx = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - mx));
      const z = e.reduce((a, b) => a + b, 0);
      for (let i = 0; i < hd; i++) ctx.push(values.reduce((s, v, j) => s + (e[j]! / z) * v[kv * hd + i]!, 0));
    }
    x = x.map((v, i) => v + mv(L.o.name, ctx, D)[i]!);
    const f = rms(x, w(W.ffnNorm(0)));
    const gate = mv(L.gate.name, f, c.ffnDim);
    const up = mv(L.up.name, f, c.ffnDim);
    const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
    const down = mv(L.down.name, act, D);
    x = x.map((v, i) => v + down[i]!);
    return Float64Array.from(mv(W.lmHead, rms(x, w(W.norm)), c.vocabSize));
  });
}

describe('a llama3-scaled model runs its RoPE in both attention forms', () => {
  // a short original context, so that every regime of the scaling acts on a 16-wide head within 24 positions
  const scaling: RopeScaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 32 };
  const base = syntheticModel('tiny', 7, { nLayers: 1, maxSeq: 64, ropeScaling: scaling } satisfies Partial<ModelConfig>);
  const model = ModelPackage.fromImported(base);
  const ids = [1, 40, 77, 300, 5, 19, 250, 123, 8, 64, 99, 311, 42, 17, 200, 3, 58, 144, 277, 61, 90, 12, 180, 33];
  const scaled = hfLlama3(16, 10000, 8, 1, 4, 32);

  it.each(['resident', 'reference'] as const)('%s: logits at 24 positions equal the JavaScript reference within 1e-4', async (attention) => {
    const p = await Pipeline.create(model, [], { attention });
    const out = await p.forward(ids, { keepCache: false });
    await p.release();
    const want = referenceLogits(model, ids, scaled);
    const V = model.config.vocabSize;
    for (const [t, row] of want.entries()) expect(maxAbsDiff(out.data.subarray(t * V, (t + 1) * V), row), `position ${t}`).toBeLessThan(1e-4);
    // and plain RoPE would not have matched: the scaling changes the logits past the first positions
    const plain = referenceLogits(model, ids, arange(8, 2).map((e) => 1 / 10000 ** (e / 16)));
    expect(maxAbsDiff(plain[23]!, want[23]!)).toBeGreaterThan(1e-3);
  });
});

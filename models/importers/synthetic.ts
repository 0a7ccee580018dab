/**
 * Synthetic models: seeded random weights in the shape of real models, for measuring speed and memory
 * at realistic sizes. The text they produce is noise; the tokenizer is byte-level with printable ASCII
 * pieces and filler entries up to the vocabulary size.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { expectedTensors, W, type ModelConfig } from '../manifest.js';
import { MemoryWeights, type ImportedModel } from '../package.js';
import { rng } from '../runtime/sampler.js';

const base = { ropeStyle: 'half' as const, bosId: 1, eosId: 2, qkvBias: false };

export const SYNTHETIC_PRESETS: Record<string, { description: string; config: ModelConfig }> = {
  'tinyllama-1.1b': {
    description: 'TinyLlama-1.1B shape: 22 layers, dim 2048, GQA 32/4 heads, FFN 5632, vocab 32000',
    config: { ...base, architecture: 'llama', dim: 2048, nLayers: 22, nHeads: 32, nKvHeads: 4, headDim: 64, ffnDim: 5632, vocabSize: 32000, maxSeq: 2048, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false },
  },
  'qwen2.5-0.5b': {
    description: 'Qwen2.5-0.5B shape: 24 layers, dim 896, GQA 14/2 heads, FFN 4864, vocab 151936, q/k/v biases, tied embeddings',
    config: { ...base, architecture: 'qwen2', dim: 896, nLayers: 24, nHeads: 14, nKvHeads: 2, headDim: 64, ffnDim: 4864, vocabSize: 151936, maxSeq: 4096, ropeTheta: 1000000, normEps: 1e-6, tiedEmbeddings: true, qkvBias: true },
  },
  'llama-100m': {
    description: '~100M-parameter Llama: 12 layers, dim 768, GQA 12/4 heads, FFN 2048, vocab 32000, tied embeddings',
    config: { ...base, architecture: 'llama', dim: 768, nLayers: 12, nHeads: 12, nKvHeads: 4, headDim: 64, ffnDim: 2048, vocabSize: 32000, maxSeq: 2048, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: true },
  },
  tiny: {
    description: 'a tiny Llama for tests: 4 layers, dim 64, GQA 4/2 heads, FFN 160 (not a multiple of 32), vocab 320',
    config: { ...base, architecture: 'llama', dim: 64, nLayers: 4, nHeads: 4, nKvHeads: 2, headDim: 16, ffnDim: 160, vocabSize: 320, maxSeq: 256, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false },
  },
};

/** A byte-level BPE tokenizer.json (no merges) with `vocabSize` entries. */
export function syntheticTokenizerJson(vocabSize: number): Record<string, unknown> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  let id = 3;
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = id++;
  if (id < vocabSize) vocab['\u2581'] = id++;
  for (let ch = 33; ch < 127 && id < vocabSize; ch++) vocab[String.fromCharCode(ch)] = id++;
  while (id < vocabSize) vocab[`<extra_${id}>`] = id++;
  if (vocabSize < 259) throw new SplitLLMError('E_BAD_ARGUMENT', `a synthetic vocabulary needs at least 259 entries, got ${vocabSize}`);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
    },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: [] },
  };
}

/** Seeded standard-normal values (Box–Muller on mulberry32). */
function fillNormal(a: Float32Array, std: number, next: () => number): void {
  for (let i = 0; i < a.length; i += 2) {
    const u = Math.max(next(), 1e-12);
    const v = next();
    const r = std * Math.sqrt(-2 * Math.log(u));
    a[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < a.length) a[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
}

/** The preset of that name, or a typed error listing them. */
export function syntheticPreset(preset: string): (typeof SYNTHETIC_PRESETS)[string] & object {
  const p = SYNTHETIC_PRESETS[preset];
  if (!p) {
    throw new SplitLLMError('E_BAD_ARGUMENT', `unknown synthetic preset "${preset}": choose one of ${Object.keys(SYNTHETIC_PRESETS).join(', ')}`);
  }
  return p;
}

export function syntheticModel(preset: string, seed = 1234, overrides: Partial<ModelConfig> = {}): ImportedModel {
  const p = syntheticPreset(preset);
  const config: ModelConfig = { ...p.config, ...overrides };
  const next = rng(seed);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of expectedTensors(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (shape.length === 1 && !name.endsWith('.bias')) data.fill(1); // norm weights
    else fillNormal(data, name === W.embed || name === W.lmHead ? 1 / Math.sqrt(config.dim) : 0.02, next);
    tensors.set(name, { shape, data });
  }
  return {
    name: `synthetic-${preset}`,
    config,
    weights: new MemoryWeights(tensors),
    tokenizerJson: syntheticTokenizerJson(config.vocabSize),
    source: { format: 'synthetic', preset, seed },
  };
}

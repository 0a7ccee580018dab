/**
 * The model package manifest: a directory holding manifest.json, model.safetensors and tokenizer.json.
 * Weight names follow the Hugging Face Llama layout ([out, in] matrices); `ropeStyle` records whether
 * q/k rotate interleaved pairs (llama2.c) or halves (Hugging Face).
 */
import { SplitLLMError } from '../shared/errors.js';

export type Architecture = 'llama' | 'mistral' | 'qwen2';
export const ARCHITECTURES: readonly Architecture[] = ['llama', 'mistral', 'qwen2'];
export type RopeStyle = 'interleaved' | 'half';

export interface ModelConfig {
  architecture: Architecture;
  dim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  ffnDim: number;
  vocabSize: number;
  maxSeq: number;
  ropeTheta: number;
  ropeStyle: RopeStyle;
  normEps: number;
  tiedEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2). */
  qkvBias: boolean;
  bosId: number;
  eosId: number;
}

export interface Manifest {
  format: 'splitllm-model';
  version: 1;
  name: string;
  config: ModelConfig;
  weights: string;
  tokenizer: string;
  /** sha256 of the weights file: identifies the model on the wire. */
  weightsSha256: string;
  source?: Record<string, unknown>;
}

export const MANIFEST_FILE = 'manifest.json';

export const W = {
  embed: 'model.embed_tokens.weight',
  norm: 'model.norm.weight',
  lmHead: 'lm_head.weight',
  attnNorm: (i: number) => `model.layers.${i}.input_layernorm.weight`,
  ffnNorm: (i: number) => `model.layers.${i}.post_attention_layernorm.weight`,
  q: (i: number) => `model.layers.${i}.self_attn.q_proj.weight`,
  k: (i: number) => `model.layers.${i}.self_attn.k_proj.weight`,
  v: (i: number) => `model.layers.${i}.self_attn.v_proj.weight`,
  o: (i: number) => `model.layers.${i}.self_attn.o_proj.weight`,
  qBias: (i: number) => `model.layers.${i}.self_attn.q_proj.bias`,
  kBias: (i: number) => `model.layers.${i}.self_attn.k_proj.bias`,
  vBias: (i: number) => `model.layers.${i}.self_attn.v_proj.bias`,
  gate: (i: number) => `model.layers.${i}.mlp.gate_proj.weight`,
  up: (i: number) => `model.layers.${i}.mlp.up_proj.weight`,
  down: (i: number) => `model.layers.${i}.mlp.down_proj.weight`,
} as const;

/** Every tensor a package must hold, with its shape. */
export function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const qd = c.nHeads * c.headDim;
  const kvd = c.nKvHeads * c.headDim;
  m.set(W.embed, [c.vocabSize, c.dim]);
  for (let i = 0; i < c.nLayers; i++) {
    m.set(W.attnNorm(i), [c.dim]);
    m.set(W.q(i), [qd, c.dim]);
    m.set(W.k(i), [kvd, c.dim]);
    m.set(W.v(i), [kvd, c.dim]);
    m.set(W.o(i), [c.dim, qd]);
    if (c.qkvBias) {
      m.set(W.qBias(i), [qd]);
      m.set(W.kBias(i), [kvd]);
      m.set(W.vBias(i), [kvd]);
    }
    m.set(W.ffnNorm(i), [c.dim]);
    m.set(W.gate(i), [c.ffnDim, c.dim]);
    m.set(W.up(i), [c.ffnDim, c.dim]);
    m.set(W.down(i), [c.dim, c.ffnDim]);
  }
  m.set(W.norm, [c.dim]);
  if (!c.tiedEmbeddings) m.set(W.lmHead, [c.vocabSize, c.dim]);
  return m;
}

/** Validates a config read from disk; throws E_BAD_CONFIG / E_UNKNOWN_ARCHITECTURE naming the field. */
export function validateConfig(raw: unknown, where: string): ModelConfig {
  const c = raw as Partial<ModelConfig> | null;
  if (!c || typeof c !== 'object') throw new SplitLLMError('E_BAD_CONFIG', `${where}: config is missing: re-import the model`);
  if (!ARCHITECTURES.includes(c.architecture as Architecture)) {
    throw new SplitLLMError(
      'E_UNKNOWN_ARCHITECTURE',
      `${where}: unknown architecture "${String(c.architecture)}": supported are ${ARCHITECTURES.join(', ')}`,
    );
  }
  const ints: (keyof ModelConfig)[] = ['dim', 'nLayers', 'nHeads', 'nKvHeads', 'headDim', 'ffnDim', 'vocabSize', 'maxSeq'];
  for (const k of ints) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > 1 << 24) {
      throw new SplitLLMError('E_BAD_CONFIG', `${where}: config field ${k} must be a positive integer, got ${JSON.stringify(v)}`);
    }
  }
  if (c.nHeads! % c.nKvHeads! !== 0) {
    throw new SplitLLMError('E_BAD_CONFIG', `${where}: nHeads ${c.nHeads} is not a multiple of nKvHeads ${c.nKvHeads}`);
  }
  if (c.headDim! % 2 !== 0) throw new SplitLLMError('E_BAD_CONFIG', `${where}: headDim ${c.headDim} must be even for RoPE`);
  if (c.ropeStyle !== 'interleaved' && c.ropeStyle !== 'half') {
    throw new SplitLLMError('E_BAD_CONFIG', `${where}: ropeStyle must be "interleaved" or "half", got ${JSON.stringify(c.ropeStyle)}`);
  }
  for (const k of ['ropeTheta', 'normEps'] as const) {
    if (typeof c[k] !== 'number' || !(c[k]! > 0)) throw new SplitLLMError('E_BAD_CONFIG', `${where}: config field ${k} must be a positive number`);
  }
  for (const k of ['bosId', 'eosId'] as const) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= c.vocabSize!) {
      throw new SplitLLMError('E_BAD_CONFIG', `${where}: ${k} ${JSON.stringify(v)} is not a token id below vocabSize ${c.vocabSize}`);
    }
  }
  return {
    architecture: c.architecture as Architecture,
    dim: c.dim!,
    nLayers: c.nLayers!,
    nHeads: c.nHeads!,
    nKvHeads: c.nKvHeads!,
    headDim: c.headDim!,
    ffnDim: c.ffnDim!,
    vocabSize: c.vocabSize!,
    maxSeq: c.maxSeq!,
    ropeTheta: c.ropeTheta!,
    ropeStyle: c.ropeStyle,
    normEps: c.normEps!,
    tiedEmbeddings: !!c.tiedEmbeddings,
    qkvBias: !!c.qkvBias,
    bosId: c.bosId!,
    eosId: c.eosId!,
  };
}

/** Parameter count of the whole model (embedding counted once when tied). */
export function parameterCount(c: ModelConfig): number {
  let n = 0;
  for (const shape of expectedTensors(c).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * Hugging Face Llama-family importer: a directory with config.json, *.safetensors (one file or shards)
 * and tokenizer.json. Llama, Mistral and Qwen2 share the tensor names the package uses; Qwen2 adds
 * q/k/v biases. HF checkpoints rotate halves in RoPE, recorded as ropeStyle "half".
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { ARCHITECTURES, expectedTensors, type Architecture, type ModelConfig } from '../manifest.js';
import type { ImportedModel } from '../package.js';
import { SafetensorsFile } from '../safetensors.js';

interface HfConfig {
  model_type?: string;
  architectures?: string[];
  hidden_size?: number;
  intermediate_size?: number;
  num_hidden_layers?: number;
  num_attention_heads?: number;
  num_key_value_heads?: number;
  head_dim?: number;
  vocab_size?: number;
  max_position_embeddings?: number;
  rope_theta?: number;
  rms_norm_eps?: number;
  tie_word_embeddings?: boolean;
  attention_bias?: boolean;
  bos_token_id?: number | number[];
  eos_token_id?: number | number[];
  rope_scaling?: unknown;
  hidden_act?: string;
}

export function hfToConfig(cfg: HfConfig, where: string): ModelConfig {
  const arch = cfg.model_type as Architecture;
  if (!ARCHITECTURES.includes(arch)) {
    throw new SplitLLMError('E_UNKNOWN_ARCHITECTURE', `${where}: model_type "${String(cfg.model_type)}" is not supported: splitllm serves ${ARCHITECTURES.join(', ')}`);
  }
  if (cfg.rope_scaling) {
    throw new SplitLLMError('E_BAD_CONFIG', `${where}: rope_scaling ${JSON.stringify(cfg.rope_scaling)} is not supported yet: use a checkpoint with plain RoPE`);
  }
  if (cfg.hidden_act && cfg.hidden_act !== 'silu') {
    throw new SplitLLMError('E_BAD_CONFIG', `${where}: hidden_act "${cfg.hidden_act}" is not supported: the builder implements SwiGLU (silu)`);
  }
  const need = (k: keyof HfConfig): number => {
    const v = cfg[k];
    if (typeof v !== 'number') throw new SplitLLMError('E_BAD_CONFIG', `${where}: config.json lacks ${k}: is this a Llama-family model?`);
    return v;
  };
  const first = (v: number | number[] | undefined, d: number): number => (Array.isArray(v) ? (v[0] ?? d) : (v ?? d));
  const nHeads = need('num_attention_heads');
  const dim = need('hidden_size');
  return {
    architecture: arch,
    dim,
    nLayers: need('num_hidden_layers'),
    nHeads,
    nKvHeads: cfg.num_key_value_heads ?? nHeads,
    headDim: cfg.head_dim ?? dim / nHeads,
    ffnDim: need('intermediate_size'),
    vocabSize: need('vocab_size'),
    maxSeq: cfg.max_position_embeddings ?? 2048,
    ropeTheta: cfg.rope_theta ?? 10000,
    ropeStyle: 'half',
    normEps: cfg.rms_norm_eps ?? 1e-6,
    tiedEmbeddings: cfg.tie_word_embeddings ?? arch === 'qwen2',
    qkvBias: arch === 'qwen2' ? true : !!cfg.attention_bias,
    bosId: first(cfg.bos_token_id, 1),
    eosId: first(cfg.eos_token_id, 2),
  };
}

export async function importHuggingFace(dir: string): Promise<ImportedModel> {
  const cpath = join(dir, 'config.json');
  if (!existsSync(cpath)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${dir} has no config.json: pass a Hugging Face model directory`);
  let raw: HfConfig;
  try {
    raw = JSON.parse(readFileSync(cpath, 'utf8')) as HfConfig;
  } catch {
    throw new SplitLLMError('E_BAD_CONFIG', `${cpath} is not valid JSON`);
  }
  const config = hfToConfig(raw, cpath);
  const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
  if (files.length === 0) throw new SplitLLMError('E_FILE_NOT_FOUND', `${dir} holds no *.safetensors weights: export the model with safe_serialization`);
  const tpath = join(dir, 'tokenizer.json');
  if (!existsSync(tpath)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${dir} has no tokenizer.json: save the tokenizer next to the weights`);
  let tokenizerJson: Record<string, unknown>;
  try {
    tokenizerJson = JSON.parse(readFileSync(tpath, 'utf8')) as Record<string, unknown>;
  } catch {
    throw new SplitLLMError('E_TOKENIZER', `${tpath} is not valid JSON`);
  }

  const hash = createHash('sha256');
  const shards = files.map((f) => new SafetensorsFile(join(dir, f)));
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  try {
    for (const [name, shape] of expectedTensors(config)) {
      const shard = shards.find((s) => s.has(name));
      if (!shard) throw new SplitLLMError('E_BAD_PACKAGE', `${dir}: tensor ${name} is in no safetensors file: the weights do not match config.json`);
      const got = shard.info(name).shape;
      if (got.join(',') !== shape.join(',')) {
        throw new SplitLLMError('E_BAD_PACKAGE', `${dir}: tensor ${name} has shape [${got}], config.json implies [${shape}]`);
      }
      const data = shard.readF32(name);
      hash.update(name).update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      tensors.set(name, { shape, data });
    }
  } finally {
    for (const s of shards) s.close();
  }
  return {
    name: basename(dir),
    config,
    tensors,
    tokenizerJson,
    source: { format: 'huggingface', modelType: raw.model_type, files },
    sha256: hash.digest('hex'),
  };
}

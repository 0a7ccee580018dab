/**
 * Hugging Face importer: a directory with config.json, *.safetensors (one file or shards) and
 * tokenizer.json. The families (models/families/) share the tensor names the package uses and set the
 * block's flags; HF checkpoints rotate halves in RoPE, recorded as ropeStyle "half".
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import type { Fields } from '../../shared/fields.js';
import { yarnMscale, type RopeScaling } from '../../shared/rope.js';
import { hfFields, refuse } from '../families/family.js';
import { familyForHfType } from '../families/registry.js';
import { expectedTensors, validateConfig, type ModelConfig } from '../manifest.js';
import { readTokenizerConfig, SafetensorsWeights, type ImportedModel } from '../package.js';
import { SafetensorsFile } from '../safetensors.js';

/** The package config from a parsed config.json: the shared fields here, the block flags from the model's family. */
export function hfToConfig(raw: unknown, where: string): ModelConfig {
  const cfg = hfFields(raw, where);
  const family = familyForHfType(cfg.optStr('model_type', 128), where);
  const act = cfg.optStr('hidden_act', 64);
  refuse(cfg, 'hidden_act', act !== undefined && act !== 'silu', 'the shared block implements SwiGLU (silu)');
  const need = (k: string): number => {
    if (!cfg.has(k)) cfg.fail(`lacks ${k}: is this a Llama-family model?`);
    return cfg.num(k, 0);
  };
  // a token id, or a list of them (the first is taken)
  const tokenId = (k: string, fallback: number): number => {
    const v = cfg.value(k);
    return v === undefined || v === null ? fallback : cfg.int(k, 0, 2 ** 31 - 1, Array.isArray(v) ? v[0] : v);
  };
  const nHeads = need('num_attention_heads');
  const dim = need('hidden_size');
  const headDim = cfg.optNum('head_dim', 1) ?? dim / nHeads;
  const rope = hfRopeScaling(cfg, cfg.optNum('max_position_embeddings', 1) ?? 2048, headDim);
  const flags = family.fromHf(cfg, rope.context);
  return {
    architecture: family.id,
    dim,
    nLayers: need('num_hidden_layers'),
    nHeads,
    nKvHeads: cfg.optNum('num_key_value_heads', 1) ?? nHeads,
    headDim,
    ffnDim: need('intermediate_size'),
    vocabSize: need('vocab_size'),
    maxSeq: flags.maxSeq,
    ropeTheta: cfg.optNum('rope_theta', 0) ?? 10000,
    ropeStyle: 'half',
    ...(rope.scaling ? { ropeScaling: rope.scaling } : {}),
    normEps: cfg.optNum('rms_norm_eps', 0) ?? 1e-6,
    tiedEmbeddings: flags.tiedEmbeddings,
    qkvBias: flags.qkvBias,
    bosId: tokenId('bos_token_id', 1),
    eosId: tokenId('eos_token_id', 2),
  };
}

/**
 * config.json's rope_scaling (Hugging Face's `rope_type`, or the older `type`): linear, llama3 and yarn
 * become the package's `ropeScaling`; dynamic NTK scaling changes nothing within the original context, so
 * the context is capped there and RoPE stays plain; anything else is refused.
 */
export function hfRopeScaling(cfg: Fields, context: number, headDim: number): { scaling?: RopeScaling; context: number } {
  const rs = cfg.optMap('rope_scaling');
  if (!rs) return { context };
  const type = rs.optStr('rope_type', 64) ?? rs.optStr('type', 64);
  if (type === undefined || type === 'default') return { context };
  const factor = rs.num('factor', 1, 1 << 20);
  const original = rs.optInt('original_max_position_embeddings', 1, 1 << 24);
  switch (type) {
    case 'linear':
      return { scaling: { type, factor }, context };
    case 'dynamic':
      return { context: Math.min(context, original ?? context) };
    case 'llama3': {
      const lowFreqFactor = rs.num('low_freq_factor', Number.MIN_VALUE, 1 << 20);
      const highFreqFactor = rs.num('high_freq_factor', Number.MIN_VALUE, 1 << 20);
      if (highFreqFactor <= lowFreqFactor) rs.fail(`high_freq_factor ${highFreqFactor} must exceed low_freq_factor ${lowFreqFactor}`);
      const originalContext = original ?? rs.fail('llama3 scaling lacks original_max_position_embeddings');
      return { scaling: { type, factor, lowFreqFactor, highFreqFactor, originalContext }, context };
    }
    case 'yarn': {
      const mscale = rs.optNum('mscale', 0);
      const mscaleAllDim = rs.optNum('mscale_all_dim', 0);
      const attentionFactor =
        rs.optNum('attention_factor', Number.MIN_VALUE) ?? (mscale !== undefined && mscaleAllDim !== undefined && mscaleAllDim > 0 ? yarnMscale(factor, mscale) / yarnMscale(factor, mscaleAllDim) : yarnMscale(factor));
      return {
        scaling: {
          type,
          factor,
          originalContext: original ?? context,
          betaFast: rs.optNum('beta_fast', Number.MIN_VALUE) ?? 32,
          betaSlow: rs.optNum('beta_slow', Number.MIN_VALUE) ?? 1,
          attentionFactor,
          truncate: rs.optBool('truncate') ?? true,
        },
        context,
      };
    }
    default:
      return rs.fail(`rope_type ${JSON.stringify(type)} is not one splitllm runs (linear, dynamic, llama3, yarn): use a checkpoint with one of those or plain RoPE`);
  }
}

export async function importHuggingFace(dir: string): Promise<ImportedModel> {
  const cpath = join(dir, 'config.json');
  if (!existsSync(cpath)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${dir} has no config.json and no .onnx file: pass a Hugging Face model directory, an ONNX export (its .onnx or its folder), a GGUF file or a llama2.c .bin`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(cpath, 'utf8'));
  } catch {
    throw new SplitLLMError('E_BAD_CONFIG', `${cpath} is not valid JSON`);
  }
  // the same checks a package's manifest gets (integer shapes, heads dividing, token ids in range)
  const config = validateConfig(hfToConfig(raw, cpath), cpath);
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

  const weights = new SafetensorsWeights(files.map((f) => new SafetensorsFile(join(dir, f))));
  try {
    for (const [name, shape] of expectedTensors(config)) {
      if (!weights.has(name)) throw new SplitLLMError('E_BAD_PACKAGE', `${dir}: tensor ${name} is in no safetensors file: the weights do not match config.json`);
      const got = weights.shape(name);
      if (got.join(',') !== shape.join(',')) {
        throw new SplitLLMError('E_BAD_PACKAGE', `${dir}: tensor ${name} has shape [${got}], config.json implies [${shape}]`);
      }
      weights.stored(name); // a float type
    }
  } catch (e) {
    weights.close();
    throw e;
  }
  return {
    name: basename(dir),
    config,
    weights,
    tokenizerJson,
    tokenizerConfig: readTokenizerConfig(dir),
    source: { format: 'huggingface', modelType: hfFields(raw, cpath).optStr('model_type', 128), files },
  };
}

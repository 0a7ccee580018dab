/**
 * The model package manifest: a directory holding manifest.json, model.safetensors and tokenizer.json.
 * The config is the shared decoder block's shape and flags (shared/decoder.ts) plus the family
 * (models/families/) that recorded them; weight names follow the block's layout.
 */
import { decoderTensors, type DecoderShape, type RopeStyle } from '../shared/decoder.js';
import type { ExportIO } from './onnx-import/analyze.js';
import { ROPE_SCALING_TYPES, type RopeScaling } from '../shared/rope.js';
import { SplitLLMError } from '../shared/errors.js';
import { Fields, failWith } from '../shared/fields.js';
import { ARCHITECTURES, isArchitecture, type Architecture } from './families/registry.js';

export type { Architecture } from './families/registry.js';
export type { RopeStyle } from '../shared/decoder.js';
export { TENSORS as W } from '../shared/decoder.js';

/** "onnx": an imported ONNX export, whose graph holds the weights (models/onnx-import). */
export type PackageArchitecture = Architecture | 'onnx';

export interface ModelConfig extends DecoderShape {
  architecture: PackageArchitecture;
  ropeTheta: number;
  ropeStyle: RopeStyle;
  /** RoPE frequency scaling (Llama 3.1+'s llama3, linear, yarn); absent for plain RoPE */
  ropeScaling?: RopeScaling;
  normEps: number;
  bosId: number;
  eosId: number;
}

export interface Manifest {
  format: 'splitllm-model';
  version: 1;
  name: string;
  config: ModelConfig;
  weights: string;
  /** tokenizer.json; '' for a model that runs on token ids only (an ONNX export without a tokenizer) */
  tokenizer: string;
  /** sha256 of the weights file: identifies the model on the wire. */
  weightsSha256: string;
  source?: Record<string, unknown>;
  /** an imported ONNX export: its graph file (`weights` names it too) and how to drive it */
  graph?: { file: string; io: ExportIO };
}

export const MANIFEST_FILE = 'manifest.json';

/** Every tensor a package must hold, with its shape. */
export function expectedTensors(c: ModelConfig): Map<string, number[]> {
  // an ONNX export keeps its weights in its graph, under its own names
  if (c.architecture === 'onnx') return new Map();
  return decoderTensors(c);
}

/** Validates a config read from disk; throws E_BAD_CONFIG / E_UNKNOWN_ARCHITECTURE naming the field. */
export function validateConfig(raw: unknown, where: string): ModelConfig {
  const c: Fields = Fields.of(raw, where, failWith('E_BAD_CONFIG'), 'a model config (re-import the model)');
  const architecture = c.value('architecture');
  if (!isArchitecture(architecture) && architecture !== 'onnx') {
    throw new SplitLLMError(
      'E_UNKNOWN_ARCHITECTURE',
      `${where}: unknown architecture "${String(architecture)}": supported are ${ARCHITECTURES.join(', ')}`,
    );
  }
  const positive = (k: string): number => c.int(k, 1, 1 << 24);
  const dim = positive('dim');
  const nLayers = positive('nLayers');
  const nHeads = positive('nHeads');
  const nKvHeads = positive('nKvHeads');
  const headDim = positive('headDim');
  const ffnDim = positive('ffnDim');
  const vocabSize = positive('vocabSize');
  const maxSeq = positive('maxSeq');
  if (nHeads % nKvHeads !== 0) c.fail(`nHeads ${nHeads} is not a multiple of nKvHeads ${nKvHeads}`);
  if (headDim % 2 !== 0) c.fail(`headDim ${headDim} must be even for RoPE`);
  const ropeStyle = c.value('ropeStyle');
  if (ropeStyle !== 'interleaved' && ropeStyle !== 'half') c.fail(`ropeStyle must be "interleaved" or "half", got ${JSON.stringify(ropeStyle)}`);
  const scaling = c.optMap('ropeScaling');
  return {
    architecture,
    dim,
    nLayers,
    nHeads,
    nKvHeads,
    headDim,
    ffnDim,
    vocabSize,
    maxSeq,
    ropeTheta: c.positive('ropeTheta'),
    ropeStyle,
    ...(scaling ? { ropeScaling: parseRopeScaling(scaling, headDim) } : {}),
    normEps: c.positive('normEps'),
    tiedEmbeddings: c.optBool('tiedEmbeddings') ?? false,
    qkvBias: c.optBool('qkvBias') ?? false,
    bosId: c.int('bosId', 0, vocabSize - 1),
    eosId: c.int('eosId', 0, vocabSize - 1),
  };
}

/** Parameter count of the whole model (embedding counted once when tied). */
export function parameterCount(c: ModelConfig): number {
  let n = 0;
  for (const shape of expectedTensors(c).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}

/** A recorded ropeScaling, checked: the fields each type needs, in range. */
function parseRopeScaling(f: Fields, headDim: number): RopeScaling {
  const type = f.value('type');
  const factor = f.num('factor', 1, 1 << 20);
  switch (type) {
    case 'linear':
      return { type, factor };
    case 'llama3': {
      const lowFreqFactor = f.num('lowFreqFactor', Number.MIN_VALUE, 1 << 20);
      const highFreqFactor = f.num('highFreqFactor', Number.MIN_VALUE, 1 << 20);
      if (highFreqFactor <= lowFreqFactor) f.fail(`highFreqFactor ${highFreqFactor} must exceed lowFreqFactor ${lowFreqFactor}`);
      return { type, factor, lowFreqFactor, highFreqFactor, originalContext: f.int('originalContext', 1, 1 << 24) };
    }
    case 'yarn':
      return {
        type,
        factor,
        originalContext: f.int('originalContext', 1, 1 << 24),
        betaFast: f.num('betaFast', Number.MIN_VALUE, headDim * 1024),
        betaSlow: f.num('betaSlow', Number.MIN_VALUE, headDim * 1024),
        attentionFactor: f.num('attentionFactor', Number.MIN_VALUE, 1024),
        truncate: f.bool('truncate'),
      };
    default:
      return f.fail(`type must be one of ${ROPE_SCALING_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  }
}

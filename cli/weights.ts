/** The OPSC weight options shared by generate and eval ppl. */
import { readFileSync } from 'node:fs';
import { SplitLLMError } from '../shared/errors.js';
import { pplWindows } from '../models/eval/ppl.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import type { ModelPackage } from '../models/package.js';
import { emittersFor, headEmitterFor, WEIGHT_STRATEGIES, type WeightPlan } from '../models/weights/registry.js';
import { checkEmbedBits } from '../models/onnx/embedding.js';
import { opt } from './options.js';
import type { Plan } from '../shared/plan.js';
import { DEFAULT_BLOCK_SIZE } from '../shared/precision.js';


export const weightOptions = {
  'front-bits': opt.int({ description: 'weight bits of layers [0, K): 2, 3, 4, 8, 16 or 32 (needs --split)', valueName: 'B' }),
  'back-bits': opt.int({ description: 'weight bits of layers [K, L) (needs --split)', valueName: 'B' }),
  'weight-bits': opt.int({ description: 'weight bits of every layer', valueName: 'B' }),
  'head-bits': opt.int({ default: 32, description: 'weight bits of the LM head (it runs where the last layer does: the cloud when split): 2, 3, 4, 8 (RTN blockwise, whatever --weight-strategy), 16 or 32', valueName: 'B' }),
  'embed-bits': opt.int({ default: 32, description: 'weight bits of the token embedding (on the edge): 8 or 4 (blockwise codes, block 32) or 32', valueName: 'B' }),
  'weight-strategy': opt.string({ default: 'rtn', description: `how quantized layers are made: ${WEIGHT_STRATEGIES.map((s) => `${s.name} (${s.summary})`).join('; ')}`, valueName: 'S' }),
  'block-size': opt.int({ default: 32, description: 'quantization block along the input dimension: 16, 32, 64 or 128' }),
  'calib-text': opt.file({ description: 'calibration text for awq and smoothquant (never the evaluation text)' }),
};

type WeightValues = { 'front-bits'?: number; 'back-bits'?: number; 'weight-bits'?: number; 'head-bits': number; 'embed-bits': number; 'weight-strategy': string; 'block-size': number; 'calib-text'?: string };

/** The emitters of a plan file's weights (`plan`), where the flags given on the command line do not override them. */
export function planWeightEmitters(v: WeightValues, pkg: ModelPackage, split: number, plan: Plan | undefined): ReturnType<typeof weightEmitters> {
  return weightEmitters(
    {
      ...v,
      'front-bits': v['front-bits'] ?? plan?.frontBits,
      'back-bits': v['back-bits'] ?? plan?.backBits,
      'head-bits': v['head-bits'] !== 32 ? v['head-bits'] : (plan?.headBits ?? 32),
      'embed-bits': v['embed-bits'] !== 32 ? v['embed-bits'] : (plan?.embedBits ?? 32),
      'weight-strategy': v['weight-strategy'] === 'rtn' && plan?.strategy ? plan.strategy : v['weight-strategy'],
      'block-size': v['block-size'] !== DEFAULT_BLOCK_SIZE ? v['block-size'] : (plan?.blockSize ?? DEFAULT_BLOCK_SIZE),
    },
    pkg,
    split,
  );
}

/** The per-layer emitters and the LM head's the options ask for, or undefined for plain float32. */
export async function weightEmitters(
  v: WeightValues,
  pkg: ModelPackage,
  split: number | undefined,
): Promise<{ linearFor?: (layer: number) => LinearEmitter; headLinear?: LinearEmitter; plan?: WeightPlan; embedBits?: number }> {
  checkEmbedBits(v['embed-bits']);
  const embed = v['embed-bits'] < 32 ? { embedBits: v['embed-bits'] } : {};
  return { ...(await layerEmitters(v, pkg, split)), ...embed };
}

async function layerEmitters(v: WeightValues, pkg: ModelPackage, split: number | undefined): Promise<{ linearFor?: (layer: number) => LinearEmitter; headLinear?: LinearEmitter; plan?: WeightPlan }> {
  const all = v['weight-bits'];
  const front = v['front-bits'];
  const back = v['back-bits'];
  if ((front !== undefined || back !== undefined) && split === undefined) {
    throw new SplitLLMError('E_USAGE', '--front-bits and --back-bits need --split K (or use --weight-bits for every layer)');
  }
  const headBits = v['head-bits'];
  const headLinear = headEmitterFor({ headBits, blockSize: v['block-size'] });
  if (all === undefined && front === undefined && back === undefined && v['weight-strategy'] === 'rtn') {
    return headBits === 32 ? {} : { headLinear, plan: { split: split ?? 0, frontBits: 32, backBits: 32, blockSize: v['block-size'], strategy: 'rtn', headBits } };
  }
  const plan: WeightPlan = {
    split: split ?? 0,
    frontBits: front ?? all ?? 32,
    backBits: back ?? all ?? 32,
    blockSize: v['block-size'],
    strategy: v['weight-strategy'],
    ...(headBits === 32 ? {} : { headBits }),
  };
  const calibration = v['calib-text'] ? pplWindows(pkg.tokenizer(), readFileSync(v['calib-text'], 'utf8')) : undefined;
  const linearFor = await emittersFor(pkg, plan, calibration);
  return { linearFor, headLinear, plan };
}


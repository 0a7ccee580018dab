/** The OPSC weight options shared by generate and eval ppl. */
import { readFileSync } from 'node:fs';
import { SplitLLMError } from '../shared/errors.js';
import { pplWindows } from '../models/eval/ppl.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import type { ModelPackage } from '../models/package.js';
import { emittersFor, WEIGHT_STRATEGIES, type WeightPlan } from '../models/weights/registry.js';
import { opt } from './options.js';


export const weightOptions = {
  'front-bits': opt.int({ description: 'weight bits of layers [0, K): 2, 3, 4, 8, 16 or 32 (needs --split)', valueName: 'B' }),
  'back-bits': opt.int({ description: 'weight bits of layers [K, L) (needs --split)', valueName: 'B' }),
  'weight-bits': opt.int({ description: 'weight bits of every layer', valueName: 'B' }),
  'weight-strategy': opt.string({ default: 'rtn', description: `how quantized layers are made: ${WEIGHT_STRATEGIES.map((s) => `${s.name} (${s.summary})`).join('; ')}`, valueName: 'S' }),
  'block-size': opt.int({ default: 32, description: 'quantization block along the input dimension: 16, 32, 64 or 128' }),
  'calib-text': opt.file({ description: 'calibration text for awq and smoothquant (never the evaluation text)' }),
};

type WeightValues = { 'front-bits'?: number; 'back-bits'?: number; 'weight-bits'?: number; 'weight-strategy': string; 'block-size': number; 'calib-text'?: string };

/** The per-layer emitters the options ask for, or undefined for plain float32. */
export async function weightEmitters(v: WeightValues, pkg: ModelPackage, split: number | undefined): Promise<{ linearFor?: (layer: number) => LinearEmitter; plan?: WeightPlan }> {
  const all = v['weight-bits'];
  const front = v['front-bits'];
  const back = v['back-bits'];
  if ((front !== undefined || back !== undefined) && split === undefined) {
    throw new SplitLLMError('E_USAGE', '--front-bits and --back-bits need --split K (or use --weight-bits for every layer)');
  }
  if (all === undefined && front === undefined && back === undefined && v['weight-strategy'] === 'rtn') return {};
  const plan: WeightPlan = {
    split: split ?? 0,
    frontBits: front ?? all ?? 32,
    backBits: back ?? all ?? 32,
    blockSize: v['block-size'],
    strategy: v['weight-strategy'],
  };
  const calibration = v['calib-text'] ? pplWindows(pkg.tokenizer(), readFileSync(v['calib-text'], 'utf8')) : undefined;
  const linearFor = await emittersFor(pkg, plan, calibration);
  return { linearFor, plan };
}


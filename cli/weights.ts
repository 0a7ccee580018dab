/** The OPSC weight options shared by generate and eval ppl. */
import { existsSync, readFileSync } from 'node:fs';
import { SplitLLMError } from '../shared/errors.js';
import { pplWindows } from '../models/eval/ppl.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import type { ModelPackage } from '../models/package.js';
import { emittersFor, WEIGHT_STRATEGIES, type WeightPlan } from '../models/weights/registry.js';
import { intOption, type OptionSpec } from './common.js';

export const weightOptions: Record<string, OptionSpec> = {
  'front-bits': { type: 'string', description: 'weight bits of layers [0, K): 2, 3, 4, 8, 16 or 32 (needs --split)', valueName: 'B' },
  'back-bits': { type: 'string', description: 'weight bits of layers [K, L) (needs --split)', valueName: 'B' },
  'weight-bits': { type: 'string', description: 'weight bits of every layer', valueName: 'B' },
  'weight-strategy': { type: 'string', description: `how quantized layers are made: ${WEIGHT_STRATEGIES.map((s) => `${s.name} (${s.summary})`).join('; ')}`, default: 'rtn', valueName: 'S' },
  'block-size': { type: 'string', description: 'quantization block along the input dimension: 16, 32, 64 or 128', default: '32' },
  'calib-text': { type: 'string', description: 'calibration text for awq and smoothquant (never the evaluation text)', valueName: 'FILE' },
};

/** The per-layer emitters the options ask for, or undefined for plain float32. */
export async function weightEmitters(values: Record<string, unknown>, pkg: ModelPackage, split: number | undefined): Promise<{ linearFor?: (layer: number) => LinearEmitter; plan?: WeightPlan }> {
  const all = intOption(values, 'weight-bits');
  const front = intOption(values, 'front-bits');
  const back = intOption(values, 'back-bits');
  if ((front !== undefined || back !== undefined) && split === undefined) {
    throw new SplitLLMError('E_USAGE', '--front-bits and --back-bits need --split K (or use --weight-bits for every layer)');
  }
  if (all === undefined && front === undefined && back === undefined && values['weight-strategy'] === 'rtn') return {};
  const plan: WeightPlan = {
    split: split ?? 0,
    frontBits: front ?? all ?? 32,
    backBits: back ?? all ?? 32,
    blockSize: intOption(values, 'block-size', 32)!,
    strategy: String(values['weight-strategy'] ?? 'rtn'),
  };
  let calibration: number[][] | undefined;
  if (values['calib-text']) {
    const path = String(values['calib-text']);
    if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `calibration text ${path} does not exist: check the path`);
    calibration = pplWindows(pkg.tokenizer(), readFileSync(path, 'utf8'));
  }
  const linearFor = await emittersFor(pkg, plan, calibration);
  return { linearFor, plan };
}

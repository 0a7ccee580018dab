/**
 * Weight strategies by name, and what a plan of them means: `emittersFor` turns a weight plan into the
 * per-layer linear emitters the segment builder uses. A new strategy is one file plus one line in
 * WEIGHT_STRATEGIES.
 */
import { checkSplit, SplitLLMError } from '../../shared/errors.js';
import { checkWeightBits } from '../../quantization/weights/blockwise.js';
import { captureLinearInputs, type CapturedInputs } from '../eval/capture.js';
import { linearFor } from '../onnx/linear.js';
import type { LinearEmitter } from '../onnx/segment.js';
import type { ModelPackage } from '../package.js';
import { awqStrategy } from './awq.js';
import { rtnStrategy } from './rtn.js';
import { smoothquantStrategy } from './smoothquant.js';
import type { WeightPlan, WeightStrategy } from './strategy.js';

export type { WeightPlan, WeightStrategy } from './strategy.js';

export const WEIGHT_STRATEGIES: readonly WeightStrategy[] = [rtnStrategy, awqStrategy, smoothquantStrategy];
export const WEIGHT_STRATEGY_NAMES: readonly string[] = WEIGHT_STRATEGIES.map((s) => s.name);

export function weightStrategy(name: string): WeightStrategy {
  const s = WEIGHT_STRATEGIES.find((w) => w.name === name);
  if (!s) throw new SplitLLMError('E_BAD_ARGUMENT', `weight strategy "${name}" is unknown: use one of ${WEIGHT_STRATEGY_NAMES.join(', ')}`);
  return s;
}

/** Checks a plan against the model and its strategy: known bits and block, bits the strategy runs, split in range. */
export function validateWeightPlan(p: WeightPlan, nLayers: number): WeightStrategy {
  const s = weightStrategy(p.strategy);
  for (const bits of [p.frontBits, p.backBits]) {
    checkWeightBits(bits, p.blockSize);
    if (bits <= 8 && !s.bits.includes(bits)) throw new SplitLLMError('E_BAD_ARGUMENT', `${s.name} quantizes to ${s.bits.join(', ')} bits, not ${bits}${s.bits.length === 1 ? ` (${s.name} is W${s.bits[0]}A${s.bits[0]}: give its layers ${s.bits[0]} bits; 16 or 32 keep layers float)` : ''}`);
  }
  checkSplit(p.split, nLayers);
  return s;
}

/**
 * The LM head's emitter for a plan: undefined for a float32 head (the default), else float16 or RTN
 * blockwise MatMulNBits at the plan's block size — the head is quantized by RTN under every strategy
 * (calibrated strategies capture the layers' inputs, not the head's).
 */
export function headEmitterFor(plan: Pick<WeightPlan, 'headBits' | 'blockSize'>): LinearEmitter | undefined {
  const bits = plan.headBits ?? 32;
  checkWeightBits(bits, plan.blockSize);
  return bits === 32 ? undefined : linearFor(bits, plan.blockSize);
}

/** Per-layer emitters for a plan; `calibration` windows (or captured inputs) are needed by calibrated strategies. */
export async function emittersFor(
  pkg: ModelPackage,
  plan: WeightPlan,
  calibration?: number[][] | CapturedInputs,
  onProgress?: (msg: string) => void,
): Promise<(layer: number) => LinearEmitter> {
  const strategy = validateWeightPlan(plan, pkg.config.nLayers);
  const bitsOf = (layer: number) => (layer < plan.split ? plan.frontBits : plan.backBits);
  let captured: CapturedInputs | undefined;
  if (strategy.needsCalibration && (plan.frontBits <= 8 || plan.backBits <= 8)) {
    if (!calibration || (Array.isArray(calibration) && calibration.length === 0)) {
      throw new SplitLLMError('E_USAGE', `weight strategy ${strategy.name} needs calibration text: pass --calib-text (e.g. tinystories_calib.txt)`);
    }
    captured = Array.isArray(calibration) ? await captureLinearInputs(pkg, calibration, 512) : calibration;
  }
  const quantized = await strategy.prepare({ pkg, plan, bitsOf, captured, onProgress });
  const emitter = (bits: number) => (bits > 8 ? linearFor(bits) : quantized(bits));
  const front = emitter(plan.frontBits);
  const back = emitter(plan.backBits);
  return (layer) => (layer < plan.split ? front : back);
}

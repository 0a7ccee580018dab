/**
 * OPSC weight plans: the front segment [0, split) at one precision, the back [split, L) at another, one
 * strategy (rtn, awq, smoothquant). Turns a plan into the per-layer linear emitters the builder uses;
 * awq and smoothquant first capture linear inputs on calibration windows.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { awqTransform } from '../../quantization/weights/awq.js';
import { checkWeightBits } from '../../quantization/weights/blockwise.js';
import { smoothingFactors } from '../../quantization/weights/smoothquant.js';
import { captureLinearInputs, type CapturedInputs } from '../eval/capture.js';
import { linearFor, w8a8Linear, type ChannelTransform } from '../onnx/linear.js';
import type { LinearEmitter } from '../onnx/segment.js';
import { W } from '../manifest.js';
import type { ModelPackage } from '../package.js';

export const WEIGHT_STRATEGIES = ['rtn', 'awq', 'smoothquant'] as const;
export type WeightStrategy = (typeof WEIGHT_STRATEGIES)[number];

export interface WeightPlan {
  split: number;
  frontBits: number;
  backBits: number;
  blockSize: number;
  strategy: WeightStrategy;
}

export function validateWeightPlan(p: WeightPlan, nLayers: number): void {
  if (!(WEIGHT_STRATEGIES as readonly string[]).includes(p.strategy)) {
    throw new SplitLLMError('E_BAD_ARGUMENT', `weight strategy "${p.strategy}" is unknown: use one of ${WEIGHT_STRATEGIES.join(', ')}`);
  }
  checkWeightBits(p.frontBits, p.blockSize);
  checkWeightBits(p.backBits, p.blockSize);
  if (!Number.isInteger(p.split) || p.split < 0 || p.split > nLayers) {
    throw new SplitLLMError('E_SPLIT_RANGE', `split ${p.split} is out of range for a model with ${nLayers} layers: use 0..${nLayers}`);
  }
}

const LINEARS = [W.q, W.k, W.v, W.o, W.gate, W.up, W.down];

/** Per-layer emitters for a plan; `calibration` windows are needed by awq and smoothquant. */
export async function emittersFor(
  pkg: ModelPackage,
  plan: WeightPlan,
  calibration?: number[][] | CapturedInputs,
  onProgress?: (msg: string) => void,
): Promise<(layer: number) => LinearEmitter> {
  validateWeightPlan(plan, pkg.config.nLayers);
  const bitsOf = (layer: number) => (layer < plan.split ? plan.frontBits : plan.backBits);
  if (plan.strategy === 'rtn') {
    const front = linearFor(plan.frontBits, plan.blockSize);
    const back = linearFor(plan.backBits, plan.blockSize);
    return (layer) => (layer < plan.split ? front : back);
  }
  if (plan.strategy === 'smoothquant' && [plan.frontBits, plan.backBits].some((b) => b < 8)) {
    throw new SplitLLMError('E_BAD_ARGUMENT', 'smoothquant is W8A8: give its layers 8 bits (16 or 32 keep layers float)');
  }
  if (!calibration || (Array.isArray(calibration) && calibration.length === 0)) {
    throw new SplitLLMError('E_USAGE', `weight strategy ${plan.strategy} needs calibration text: pass --calib-text (e.g. tinystories_calib.txt)`);
  }
  const captured = Array.isArray(calibration) ? await captureLinearInputs(pkg, calibration, 512) : calibration;
  if (plan.strategy === 'awq') {
    const transforms = new Map<string, ChannelTransform>();
    for (let i = 0; i < pkg.config.nLayers; i++) {
      const bits = bitsOf(i);
      if (bits > 8) continue;
      for (const name of LINEARS.map((f) => f(i))) {
        const [N, K] = pkg.weights.shape(name) as [number, number];
        const { X, T } = captured.rows.get(name)!;
        const r = awqTransform(pkg.weights.get(name), N, K, X, T, bits, plan.blockSize);
        transforms.set(name, { scale: r.scale, clip: r.clip });
        onProgress?.(`awq ${name}: α=${r.alpha}, output error ${r.rtnError.toExponential(2)} (rtn) → ${r.awqError.toExponential(2)}`);
      }
    }
    const front = linearFor(plan.frontBits, plan.blockSize, transforms);
    const back = linearFor(plan.backBits, plan.blockSize, transforms);
    return (layer) => (layer < plan.split ? front : back);
  }
  // smoothquant: W8A8 where the plan asks for 8 bits; float layers stay float
  const smoothing = new Map<string, Float32Array>();
  const normFolds = new Map<string, Float32Array>();
  const folded = new Set<string>();
  const shape = (name: string) => pkg.weights.shape(name) as [number, number];
  for (let i = 0; i < pkg.config.nLayers; i++) {
    // q/k/v read the attention RMSNorm and gate/up the FFN RMSNorm: one s each, folded into the norm
    for (const [norm, group] of [
      [W.attnNorm(i), [W.q(i), W.k(i), W.v(i)]],
      [W.ffnNorm(i), [W.gate(i), W.up(i)]],
    ] as const) {
      const { X, T, K } = captured.rows.get(group[0])!;
      const s = smoothingFactors(group.map((n) => pkg.weights.get(n)), group.map((n) => shape(n)[0]), K, X, T, 0.5);
      normFolds.set(norm, s);
      for (const n of group) {
        smoothing.set(n, s);
        folded.add(n);
      }
    }
    // o and down read no norm: an explicit x / s before quantizing the activation
    for (const name of [W.o(i), W.down(i)]) {
      const [N, K] = shape(name);
      const { X, T } = captured.rows.get(name)!;
      smoothing.set(name, smoothingFactors(pkg.weights.get(name), N, K, X, T, 0.5));
    }
  }
  const w8a8 = w8a8Linear(smoothing, normFolds, folded);
  const front = plan.frontBits > 8 ? linearFor(plan.frontBits) : w8a8;
  const back = plan.backBits > 8 ? linearFor(plan.backBits) : w8a8;
  return (layer) => (layer < plan.split ? front : back);
}

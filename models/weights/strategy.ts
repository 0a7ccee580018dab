/**
 * The weight-strategy seam (OPSC): how the quantized layers of a plan are made. Each strategy is one
 * file exporting a `WeightStrategy`, listed once in registry.ts. The quantization math lives in
 * quantization/weights/; a strategy turns it into ONNX linear emitters and says what its layers cost.
 */
import type { CapturedInputs } from '../eval/capture.js';
import type { LinearEmitter } from '../onnx/segment.js';
import type { ModelPackage } from '../package.js';

/** A weight plan: layers [0, split) at frontBits, [split, L) at backBits, one strategy and block size. */
export interface WeightPlan {
  split: number;
  frontBits: number;
  backBits: number;
  blockSize: number;
  strategy: string;
  /** the LM head's bits (default 32; quantized heads are RTN blockwise, whatever the strategy) */
  headBits?: number;
}

export interface StrategyInput {
  pkg: ModelPackage;
  plan: WeightPlan;
  /** the bits of each layer under the plan */
  bitsOf: (layer: number) => number;
  /** linear inputs on calibration windows, for strategies that need them */
  captured?: CapturedInputs;
  onProgress?: (msg: string) => void;
}

export interface WeightStrategy {
  readonly name: string;
  /** one line for --help and listings */
  readonly summary: string;
  /** the bit widths it quantizes to; 16 and 32 keep a layer float under every strategy */
  readonly bits: readonly number[];
  /** whether it fits itself to captured linear inputs (needs --calib-text) */
  readonly needsCalibration: boolean;
  /**
   * Bytes of one quantized linear [N, K] at `bits`. `afterNorm`: the layer reads an RMSNorm (q, k, v, gate,
   * up), into which a strategy may fold a per-channel vector instead of storing it.
   */
  linearBytes(N: number, K: number, bits: number, blockSize: number, afterNorm: boolean): number;
  /** The emitter of each quantized bit width the plan uses. */
  prepare(input: StrategyInput): Promise<(bits: number) => LinearEmitter>;
}

/** What calibrated strategies read: the linear layers of a block, their captured inputs, their shapes. */
import { SplitLLMError } from '../../shared/errors.js';
import type { CapturedInputs } from '../eval/capture.js';
import { W } from '../manifest.js';
import type { ModelPackage } from '../package.js';

/** The seven linear weights of decoder layer i. */
export const LINEARS = [W.q, W.k, W.v, W.o, W.gate, W.up, W.down];

export function capturedRows(captured: CapturedInputs | undefined, name: string): { X: Float32Array; T: number; K: number } {
  const r = captured?.rows.get(name);
  if (!r) throw new SplitLLMError('E_RUNTIME', `no captured calibration inputs for ${name}`);
  return r;
}

/** [out, in] of a linear weight. */
export function matrixShape(pkg: ModelPackage, name: string): [number, number] {
  const s = pkg.weights.shape(name);
  if (s.length !== 2) throw new SplitLLMError('E_BAD_PACKAGE', `${name} has shape [${s.join(', ')}], a linear weight is [out, in]`);
  return [s[0]!, s[1]!];
}

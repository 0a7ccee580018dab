/** What calibrated strategies read: the captured inputs of a block's linears (the layout is shared/decoder.ts). */
import { SplitLLMError } from '../../shared/errors.js';
import type { CapturedInputs } from '../eval/capture.js';

export function capturedRows(captured: CapturedInputs | undefined, name: string): { X: Float32Array; T: number; K: number } {
  const r = captured?.rows.get(name);
  if (!r) throw new SplitLLMError('E_RUNTIME', `no captured calibration inputs for ${name}`);
  return r;
}

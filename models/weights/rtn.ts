/** Round-to-nearest blockwise quantization (MatMulNBits), no calibration. */
import { blockwiseBytes } from '../../quantization/weights/blockwise.js';
import { linearFor } from '../onnx/linear.js';
import type { WeightStrategy } from './strategy.js';

export const rtnStrategy: WeightStrategy = {
  name: 'rtn',
  summary: 'round to nearest, blockwise (MatMulNBits); no calibration',
  bits: [2, 3, 4, 8],
  needsCalibration: false,
  linearBytes: (N, K, bits, blockSize) => blockwiseBytes(N, K, bits, blockSize),
  prepare: async ({ plan }) => (bits) => linearFor(bits, plan.blockSize),
};

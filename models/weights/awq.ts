/** AWQ-style activation-aware scaling and clipping (quantization/weights/awq.ts) before blockwise RTN. */
import { awqTransform } from '../../quantization/weights/awq.js';
import { blockwiseBytes } from '../../quantization/weights/blockwise.js';
import { linearFor, type ChannelTransform } from '../onnx/linear.js';
import { layerLinears } from '../../shared/decoder.js';
import { capturedRows } from './captured.js';
import type { WeightStrategy } from './strategy.js';

export const awqStrategy: WeightStrategy = {
  name: 'awq',
  summary: 'activation-aware per-channel scales and clipping fitted on calibration text, then blockwise',
  bits: [2, 3, 4, 8],
  needsCalibration: true,
  // the per-input-channel scale vector is stored beside the codes
  linearBytes: (N, K, bits, blockSize) => blockwiseBytes(N, K, bits, blockSize) + K * 4,
  async prepare({ pkg, plan, bitsOf, captured, onProgress }) {
    const transforms = new Map<string, ChannelTransform>();
    for (let i = 0; i < pkg.config.nLayers; i++) {
      const bits = bitsOf(i);
      if (bits > 8) continue;
      // an imported ONNX export names its own linears (models/onnx-import)
      for (const { name, out: N, in: K } of pkg.weights.linears?.(i) ?? layerLinears(pkg.config, i)) {
        const { X, T } = capturedRows(captured, name);
        const r = awqTransform(pkg.weights.get(name), N, K, X, T, bits, plan.blockSize);
        transforms.set(name, { scale: r.scale, clip: r.clip });
        onProgress?.(`awq ${name}: α=${r.alpha}, output error ${r.rtnError.toExponential(2)} (rtn) → ${r.awqError.toExponential(2)}`);
      }
    }
    return (bits) => linearFor(bits, plan.blockSize, transforms);
  },
};

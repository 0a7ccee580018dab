/**
 * SmoothQuant W8A8: per-channel smoothing s moves activation outliers into the weights, then int8 weights
 * (per output channel) × dynamically quantized uint8 activations run on integer kernels. q/k/v read the
 * attention RMSNorm and gate/up the FFN RMSNorm: their s is folded into the norm; o and down divide x by s.
 */
import { smoothingFactors } from '../../quantization/weights/smoothquant.js';
import { W } from '../manifest.js';
import { w8a8Linear } from '../onnx/linear.js';
import { capturedRows, matrixShape } from './captured.js';
import type { WeightStrategy } from './strategy.js';

export const smoothquantStrategy: WeightStrategy = {
  name: 'smoothquant',
  summary: 'W8A8: smoothing fitted on calibration text, int8 weights and activations on integer kernels (8 bits only)',
  bits: [8],
  needsCalibration: true,
  // int8 codes, per-row scales, and the smoothing vector unless it is folded into the norm before
  linearBytes: (N, K, _bits, _blockSize, afterNorm) => N * K + N * 4 + (afterNorm ? 0 : K * 4),
  async prepare({ pkg, captured }) {
    const smoothing = new Map<string, Float32Array>();
    const normFolds = new Map<string, Float32Array>();
    const folded = new Set<string>();
    for (let i = 0; i < pkg.config.nLayers; i++) {
      for (const [norm, group] of [
        [W.attnNorm(i), [W.q(i), W.k(i), W.v(i)]],
        [W.ffnNorm(i), [W.gate(i), W.up(i)]],
      ] as const) {
        const { X, T, K } = capturedRows(captured, group[0]);
        const s = smoothingFactors(group.map((n) => pkg.weights.get(n)), group.map((n) => matrixShape(pkg, n)[0]), K, X, T, 0.5);
        normFolds.set(norm, s);
        for (const n of group) {
          smoothing.set(n, s);
          folded.add(n);
        }
      }
      for (const name of [W.o(i), W.down(i)]) {
        const [N, K] = matrixShape(pkg, name);
        const { X, T } = capturedRows(captured, name);
        smoothing.set(name, smoothingFactors(pkg.weights.get(name), N, K, X, T, 0.5));
      }
    }
    const w8a8 = w8a8Linear(smoothing, normFolds, folded);
    return () => w8a8;
  },
};

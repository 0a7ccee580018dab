/**
 * SmoothQuant W8A8: per-channel smoothing s moves activation outliers into the weights, then int8 weights
 * (per output channel) × dynamically quantized uint8 activations run on integer kernels. q/k/v read the
 * attention RMSNorm and gate/up the FFN RMSNorm: their s is folded into the norm; o and down divide x by s.
 */
import { smoothingFactors } from '../../quantization/weights/smoothquant.js';
import { SplitLLMError } from '../../shared/errors.js';
import { layerLinears, normGroups } from '../../shared/decoder.js';
import { w8a8Linear } from '../onnx/linear.js';
import { capturedRows } from './captured.js';
import type { WeightStrategy } from './strategy.js';

export const smoothquantStrategy: WeightStrategy = {
  name: 'smoothquant',
  summary: 'W8A8: smoothing fitted on calibration text, int8 weights and activations on integer kernels (8 bits only)',
  bits: [8],
  needsCalibration: true,
  // int8 codes, per-row scales, and the smoothing vector unless it is folded into the norm before
  linearBytes: (N, K, _bits, _blockSize, afterNorm) => N * K + N * 4 + (afterNorm ? 0 : K * 4),
  async prepare({ pkg, captured }) {
    if (pkg.config.architecture === 'onnx') {
      throw new SplitLLMError('E_BAD_ARGUMENT', 'smoothquant folds its smoothing into the RMSNorms of the shared block, which an imported ONNX export does not expose: use --weight-strategy rtn or awq');
    }
    const smoothing = new Map<string, Float32Array>();
    const normFolds = new Map<string, Float32Array>();
    const folded = new Set<string>();
    for (let i = 0; i < pkg.config.nLayers; i++) {
      for (const { norm, linears } of normGroups(pkg.config, i)) {
        // the linears reading one norm share its input, hence one smoothing vector folded into the norm
        const [first] = linears;
        if (!first) continue;
        const { X, T, K } = capturedRows(captured, first.name);
        const s = smoothingFactors(linears.map((l) => pkg.weights.get(l.name)), linears.map((l) => l.out), K, X, T, 0.5);
        normFolds.set(norm, s);
        for (const l of linears) {
          smoothing.set(l.name, s);
          folded.add(l.name);
        }
      }
      for (const l of layerLinears(pkg.config, i).filter((x) => x.norm === undefined)) {
        const { X, T } = capturedRows(captured, l.name);
        smoothing.set(l.name, smoothingFactors(pkg.weights.get(l.name), l.out, l.in, X, T, 0.5));
      }
    }
    const w8a8 = w8a8Linear(smoothing, normFolds, folded);
    return () => w8a8;
  },
};

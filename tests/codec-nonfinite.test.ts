/**
 * A NaN or Inf carried in any codec's message, calibrated or not, is E_CODEC_NONFINITE (the cloud
 * answers `nan_tensor`), never a decoded non-finite value and never a plain "corrupt". Every float
 * field a message can hold is hit: each byte offset is overwritten with a float32 NaN, a float32
 * Infinity and a float16 NaN in turn.
 */
import { describe, expect, it } from 'vitest';
import { SplitLLMError } from '../shared/errors.js';
import { createCodec, decodeMessage } from '../quantization/activations/registry.js';
import { contextData, CalibrationContexts, type Calibration } from '../quantization/activations/calibration.js';
import { HEADER_BYTES } from '../quantization/activations/format.js';
import { useWasmKernels } from '../quantization/activations/wasm/kernels.js';
import { rng } from '../shared/random.js';

const T = 6;
const D = 64;

function hiddenLike(seed: number, outlier: boolean): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(T * D);
  for (let i = 0; i < x.length; i++) x[i] = (r() - 0.5) * 2 + (i % D === 5 ? 3 : 0);
  if (outlier) x[2 * D + 9] = 400; // kept exactly, as a float
  return x;
}

const contexts = (() => {
  const rows: Float32Array[] = [];
  for (let s = 0; s < 8; s++) rows.push(hiddenLike(100 + s, false));
  const cal: Calibration = { format: 'splitllm-calibration', version: 1, model: 'test', text: 'test', windows: rows.length, target: 0.009, baselinePpl: 0, splits: { '1': { stats: {} as never, context: contextData(rows, D) } } };
  return new CalibrationContexts(cal);
})();

const SPECS = ['fp32', 'fp16', 'int8', 'uniform:4', 'ts-tabq:eps=0.05', 'ts-tabq:budget=4,tau=auto', 'ts-tabq:eps=0.05,outliers=f16', 'topk:10', 'lowrank:4', 'ts-tabq:cal=1,step=0.3', 'ts-tabq:cal=1,eps=0.08', 'ts-tabq:cal=1,step=0.3,outliers=f16'];

describe.each([true, false])('non-finite values in codec messages (WebAssembly kernels: %s)', (wasm) => {
  it.each(SPECS)('%s', (spec) => {
    useWasmKernels(wasm);
    try {
      const codec = createCodec(spec, contexts);
      const msg = codec.encode(hiddenLike(1, true), T, D);
      const patterns: [string, (v: DataView, i: number) => void, number][] = [
        ['f32 NaN', (v, i) => v.setFloat32(i, NaN, true), 4],
        ['f32 Inf', (v, i) => v.setFloat32(i, Infinity, true), 4],
        ['f16 NaN', (v, i) => v.setUint16(i, 0x7e00, true), 2],
      ];
      let nonFinite = 0;
      for (const [name, write, width] of patterns) {
        for (let i = HEADER_BYTES; i + width <= msg.length; i++) {
          const m = msg.slice();
          write(new DataView(m.buffer), i);
          try {
            const d = decodeMessage(m, { contexts: contexts.contexts });
            for (let j = 0; j < d.x.length; j++) if (!Number.isFinite(d.x[j]!)) throw new Error(`${name} at byte ${i} decoded to a non-finite value ${j}`);
          } catch (e) {
            if (!(e instanceof SplitLLMError)) throw e;
            expect(e.code, `${name} at byte ${i}: ${e.message}`).toMatch(/^E_CODEC_(CORRUPT|LIMIT|CONTEXT|NONFINITE)$/);
            if (e.code === 'E_CODEC_NONFINITE') nonFinite++;
            else expect(e.message, `${name} at byte ${i}`).not.toMatch(/finite|NaN|Infinity/);
          }
        }
      }
      expect(nonFinite, `${spec}: no NaN was recognised as one`).toBeGreaterThan(0);
    } finally {
      useWasmKernels(true);
    }
  });
});

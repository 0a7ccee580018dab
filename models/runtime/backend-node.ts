/** The onnxruntime-node backend (CPU). Intra-op threads: the option, else $SPLITLLM_THREADS, else onnxruntime's choice. */
import ort from 'onnxruntime-node';
import { SplitLLMError } from '../../shared/errors.js';
import type { BackendSessionOptions, InferenceBackend } from './backend.js';

export const nodeBackend: InferenceBackend = {
  name: 'onnxruntime-node',
  async createSession(model: Uint8Array | string, opts: BackendSessionOptions = {}) {
    const so: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all' };
    const threads = opts.threads ?? Number(process.env['SPLITLLM_THREADS'] ?? 0);
    if (Number.isInteger(threads) && threads > 0) so.intraOpNumThreads = threads;
    try {
      return typeof model === 'string' ? await ort.InferenceSession.create(model, so) : await ort.InferenceSession.create(model, so);
    } catch (e) {
      throw new SplitLLMError('E_RUNTIME', `onnxruntime could not load the model: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`);
    }
  },
  float32: (data, dims) => new ort.Tensor('float32', data, dims),
  int64: (data, dims) => new ort.Tensor('int64', data, dims),
};

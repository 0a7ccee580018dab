/** The onnxruntime-node backend (CPU), with the thread policy of threads.ts: an explicit pool, spinning that stops when a run returns. */
import ort from 'onnxruntime-node';
import { SplitLLMError } from '../../shared/errors.js';
import type { BackendSessionOptions, InferenceBackend } from './backend.js';
import { spinConfig, threadPolicy } from './threads.js';

export const nodeBackend: InferenceBackend = {
  name: 'onnxruntime-node',
  async createSession(model: Uint8Array | string, opts: BackendSessionOptions = {}) {
    const policy = threadPolicy(opts.threads, opts.spin);
    const so: ort.InferenceSession.SessionOptions = {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: policy.intraOpThreads,
      interOpNumThreads: 1,
      extra: spinConfig(policy.spin),
      ...(opts.externalData ? { externalData: opts.externalData } : {}),
    };
    try {
      return typeof model === 'string' ? await ort.InferenceSession.create(model, so) : await ort.InferenceSession.create(model, so);
    } catch (e) {
      throw new SplitLLMError('E_RUNTIME', `onnxruntime could not load the model: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`);
    }
  },
  float32: (data, dims) => new ort.Tensor('float32', data, dims),
  int64: (data, dims) => new ort.Tensor('int64', data, dims),
  int32: (data, dims) => new ort.Tensor('int32', data, dims),
  float16: (data, dims) => new ort.Tensor('float16', data, dims),
};

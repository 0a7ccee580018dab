/**
 * The onnxruntime-web backend of the browser edge: WebAssembly (SIMD), one thread (a page served without
 * cross-origin isolation has no SharedArrayBuffer, so no worker pool), its .wasm file fetched from the
 * serving cloud (`wasmPaths`), never from a CDN.
 */
import * as ort from 'onnxruntime-web/wasm';
import { SplitLLMError } from '../../shared/errors.js';
import type { BackendSessionOptions, InferenceBackend } from '../../models/runtime/backend.js';

/** `wasmBase`: the URL folder holding onnxruntime-web's .wasm (the cloud serves it at /edge/ort/). */
export function webBackend(wasmBase: string): InferenceBackend {
  return {
    name: 'onnxruntime-web',
    async createSession(model: Uint8Array | string, opts: BackendSessionOptions = {}) {
      // set at each session: a library imported later (transformers.js) may point the shared env elsewhere
      // the .wasm alone: its JavaScript glue is in the bundle (onnxruntime-web/wasm's bundled build)
      ort.env.wasm.wasmPaths = { wasm: new URL('ort-wasm-simd-threaded.wasm', wasmBase).href };
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      if (typeof model === 'string') throw new SplitLLMError('E_RUNTIME', 'the browser edge loads segments from bytes, not from a file path');
      try {
        return await ort.InferenceSession.create(model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all', executionMode: 'sequential', ...(opts.externalData ? { externalData: opts.externalData } : {}) });
      } catch (e) {
        throw new SplitLLMError('E_RUNTIME', `onnxruntime-web could not load the segment: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`);
      }
    },
    float32: (data, dims) => new ort.Tensor('float32', data, dims),
    int64: (data, dims) => new ort.Tensor('int64', data, dims),
    int32: (data, dims) => new ort.Tensor('int32', data, dims),
    float16: (data, dims) => new ort.Tensor('float16', data, dims),
  };
}

/**
 * The inference backend seam: what a segment runtime needs from onnxruntime, over onnxruntime-common's
 * types, so the same runtime code runs on onnxruntime-node (backend-node.ts) and onnxruntime-web (the
 * browser edge). Tensors are made by the backend that runs them: each onnxruntime package carries its
 * own Tensor class.
 */
import type { InferenceSession, Tensor } from 'onnxruntime-common';
import { SplitLLMError } from '../../shared/errors.js';

export type { InferenceSession, Tensor } from 'onnxruntime-common';

/** How idle intra-op workers wait (models/runtime/threads.ts on Node). */
export type SpinMode = 'alone' | 'turns' | 'off';

export interface BackendSessionOptions {
  /** intra-op threads (default on Node: $SPLITLLM_THREADS, else the cores this process may use; models/runtime/threads.ts) */
  threads?: number;
  /** how idle workers wait (threads.ts): 'turns' (default) where sessions take turns, 'alone' for the only session */
  spin?: SpinMode;
  /** a model given as bytes: the external data files it names, in memory (the browser edge fetches them) */
  externalData?: ExternalDataFile[];
}

/** An external data file of a model given as bytes: the file name the model names, and its bytes. */
export interface ExternalDataFile {
  path: string;
  data: Uint8Array;
}

export interface InferenceBackend {
  readonly name: string;
  createSession(model: Uint8Array | string, opts?: BackendSessionOptions): Promise<InferenceSession>;
  float32(data: Float32Array, dims: readonly number[]): Tensor;
  int64(data: BigInt64Array, dims: readonly number[]): Tensor;
  /** for imported exports (models/onnx-import): int32 ids and float16 caches */
  int32(data: Int32Array, dims: readonly number[]): Tensor;
  float16(data: Uint16Array, dims: readonly number[]): Tensor;
}

let current: InferenceBackend | undefined;

/** Chooses the backend every runtime made after this call uses (the browser edge sets onnxruntime-web's). */
export function useBackend(b: InferenceBackend): void {
  current = b;
}

/** The backend in use: the one set by `useBackend`, else onnxruntime-node. */
export async function inferenceBackend(): Promise<InferenceBackend> {
  current ??= (await import('./backend-node.js')).nodeBackend;
  return current;
}

/** A float32 output of a run, checked (onnxruntime types its outputs loosely). */
export function float32Of(out: InferenceSession.OnnxValueMapType, name: string): { tensor: Tensor; data: Float32Array } {
  const tensor = out[name];
  const data = tensor?.data;
  if (!tensor || !(data instanceof Float32Array)) throw new SplitLLMError('E_RUNTIME', `segment output ${name} is missing or not float32`);
  return { tensor, data };
}

/**
 * Segment builds off the event loop: a worker thread opens the package from its folder, builds the
 * segment into the package's segment cache (or loads it from there) and hands back the file's path. A
 * server that builds a segment for one session this way keeps answering every other one, its health
 * checks and its signals while the build runs (building a back half at 0.5B takes minutes on 2 cores).
 * Only what a worker can rebuild from a description runs there: round-to-nearest blockwise weights at one
 * precision for the layers and one for the head (the cloud's back segments).
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { SplitLLMError, type ErrorCode } from '../../shared/errors.js';
import { isPlainMap } from '../../shared/fields.js';
import { linearFor } from '../onnx/linear.js';
import { headEmitterFor } from '../weights/registry.js';
import type { AttentionKind, BuiltSegment, SegmentOptions } from '../onnx/segment.js';
import { ModelPackage } from '../package.js';
import { cachedSegment, type SegmentCacheEvents } from './segment-cache.js';

/** A segment a worker can build: its range and round-to-nearest precisions. */
export interface RtnSegmentSpec {
  from: number;
  to: number;
  embed: boolean;
  head: boolean;
  keyPositions?: boolean;
  attention?: AttentionKind;
  /** the layers' weight bits (32, 16, or 2–8 blockwise) and block */
  bits: number;
  blockSize: number;
  /** the LM head's bits (default 32) */
  headBits?: number;
  /** the embedding's bits (default 32) */
  embedBits?: number;
  /** false: a float embedding in float32, not the package's stored type (the browser edge's segments) */
  embedAsStored?: false;
}

/** The segment options a spec stands for (the same in the worker and in a build on the main thread). */
export function rtnSegmentOptions(spec: RtnSegmentSpec): SegmentOptions {
  const lin = linearFor(spec.bits, spec.blockSize);
  const headLinear = headEmitterFor({ headBits: spec.headBits, blockSize: spec.blockSize });
  return {
    embed: spec.embed,
    head: spec.head,
    ...(spec.keyPositions ? { keyPositions: true } : {}),
    ...(spec.attention ? { attention: spec.attention } : {}),
    linearFor: () => lin,
    ...(headLinear ? { headLinear } : {}),
    ...(spec.embedBits !== undefined && spec.embedBits < 32 ? { embedBits: spec.embedBits } : {}),
    ...(spec.embedAsStored === false ? { embedAsStored: false } : {}),
  };
}

interface Job {
  splitllmSegmentBuild: true;
  dir: string;
  hash: string;
  spec: RtnSegmentSpec;
}

type Reply = { kind: 'warn'; message: string } | { kind: 'building'; dir: string | null } | { kind: 'progress'; done: number; total: number; what: string } | { kind: 'done'; built: BuiltSegment } | { kind: 'error'; code?: ErrorCode; message: string };

/** Whether builds can run in a worker: this module must be compiled JavaScript (not a TypeScript source run by a test runner). */
export function workerBuildsAvailable(): boolean {
  return import.meta.url.endsWith('.js');
}

/**
 * Builds (or loads) the segment of the package in `pkg.dir` in a worker thread. The package must be a
 * folder (the worker opens it again) with the same weights; `events` hears the cache's warnings.
 */
export function buildInWorker(pkg: ModelPackage, spec: RtnSegmentSpec, events: SegmentCacheEvents = {}, signal?: AbortSignal): Promise<BuiltSegment> {
  const dir = pkg.dir;
  if (!dir) return Promise.reject(new SplitLLMError('E_RUNTIME', 'a worker builds segments of a package folder only'));
  const job: Job = { splitllmSegmentBuild: true, dir, hash: pkg.hash, spec };
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new SplitLLMError('E_RUNTIME', 'the segment build was cancelled'));
    const w = new Worker(new URL(import.meta.url), { workerData: job });
    let settled = false;
    // a cancelled build (the server closes) ends its thread; a half-written cache entry is left as a temporary folder
    const cancel = (): void => {
      if (settled) return;
      settled = true;
      void w.terminate();
      reject(new SplitLLMError('E_RUNTIME', 'the segment build was cancelled'));
    };
    signal?.addEventListener('abort', cancel, { once: true });
    w.on('message', (m: Reply) => {
      if (m.kind === 'warn') events.warn?.(m.message);
      else if (m.kind === 'building') events.building?.(m.dir ?? undefined);
      else if (m.kind === 'progress') events.progress?.(m.done, m.total, m.what);
      else if (m.kind === 'done') {
        settled = true;
        resolve(m.built);
      } else if (m.kind === 'error') {
        settled = true;
        // a user-caused failure keeps its code across the thread boundary
        reject(m.code ? new SplitLLMError(m.code, m.message) : new Error(m.message));
      }
    });
    w.on('error', (e) => {
      settled = true;
      reject(e);
    });
    w.on('exit', (code) => {
      signal?.removeEventListener('abort', cancel);
      if (!settled) reject(new SplitLLMError('E_RUNTIME', `the segment build's worker exited (code ${code}) before it finished`));
    });
  });
}

function isJob(v: unknown): v is Job {
  return isPlainMap(v) && v['splitllmSegmentBuild'] === true;
}

if (!isMainThread && parentPort && isJob(workerData)) {
  const port = parentPort;
  const job = workerData;
  try {
    // a build needs the weights only
    const pkg = ModelPackage.load(job.dir, false);
    if (pkg.hash !== job.hash) throw new SplitLLMError('E_BAD_PACKAGE', `${job.dir} changed on disk (its weights are not the ones the server opened): restart the server`);
    const built = cachedSegment(pkg, job.spec.from, job.spec.to, rtnSegmentOptions(job.spec), {
      warn: (message) => port.postMessage({ kind: 'warn', message } satisfies Reply),
      building: (dir) => port.postMessage({ kind: 'building', dir: dir ?? null } satisfies Reply),
      progress: (done, total, what) => port.postMessage({ kind: 'progress', done, total, what } satisfies Reply),
    });
    port.postMessage({ kind: 'done', built } satisfies Reply, built.model ? [built.model.buffer as ArrayBuffer] : []);
  } catch (e) {
    const message = e instanceof Error ? e.message || `${e.name} (no message)` : String(e);
    port.postMessage({ kind: 'error', message, ...(e instanceof SplitLLMError ? { code: e.code } : {}) } satisfies Reply);
  }
}

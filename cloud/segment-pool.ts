/**
 * Back segments [split, L) at a weight precision, built once per (split, bits, block) with one shared
 * onnxruntime session (weights held once); each client session owns only its KV cache. Decode steps of
 * sessions on the same back segment that arrive together run as one batch: a step waits for the
 * current event-loop turn to end, then every step queued by then goes in one run.
 */
import type { ModelPackage } from '../models/package.js';
import { buildSegment } from '../models/onnx/segment.js';
import { linearFor } from '../models/onnx/linear.js';
import { SegmentRuntime, type SegmentOutput } from '../models/runtime/segment-runtime.js';
import { SharedSegments } from '../models/runtime/shared-segments.js';

/** Which back segment a session runs: its split and the weight precision of the cloud's layers. */
export interface BackKey {
  split: number;
  bits: number;
  blockSize: number;
}

interface PendingStep {
  queuedAt: number;
  runtime: SegmentRuntime;
  x: Float32Array;
  resolve: (o: SegmentOutput) => void;
  reject: (e: unknown) => void;
}

interface StepQueue {
  queue: PendingStep[];
  scheduled: boolean;
}

const keyOf = (k: BackKey): string => `${k.split}/${k.bits}/${k.blockSize}`;

export class BackSegmentPool {
  private readonly segments: SharedSegments<BackKey>;
  private readonly queues = new Map<string, StepQueue>();

  constructor(
    pkg: ModelPackage,
    /** told the size of every batch of decode steps that runs, and how long each step waited for it (s) */
    private readonly onBatch: (size: number, waitsSeconds: number[]) => void = () => undefined,
    /** a back segment no session has used for this long is released (default 60 s) */
    idleMs = 60_000,
    /** onnxruntime intra-op threads of each back segment (default: $SPLITLLM_THREADS, else the cores this process may use) */
    threads?: number,
  ) {
    const c = pkg.config;
    this.segments = new SharedSegments(
      c,
      keyOf,
      (k) => {
        const lin = linearFor(k.bits, k.blockSize);
        return buildSegment(c, pkg.weights, k.split, c.nLayers, { embed: false, head: true, keyPositions: true, linearFor: () => lin });
      },
      { idleMs, threads },
    );
  }

  /** segments built so far */
  get size(): number {
    return this.segments.size;
  }

  /** A runtime with its own (empty) KV cache over the shared session of that back segment. */
  runtime(k: BackKey): Promise<SegmentRuntime> {
    return this.segments.runtime(k);
  }

  /** One decode step of `runtime` (a runtime of segment `k`), batched with the steps that arrive with it. */
  step(k: BackKey, runtime: SegmentRuntime, x: Float32Array): Promise<SegmentOutput> {
    const key = keyOf(k);
    let e = this.queues.get(key);
    if (!e) this.queues.set(key, (e = { queue: [], scheduled: false }));
    const q = e;
    return new Promise((resolve, reject) => {
      q.queue.push({ queuedAt: performance.now(), runtime, x, resolve, reject });
      if (q.scheduled) return;
      q.scheduled = true;
      setImmediate(() => {
        q.scheduled = false;
        const batch = q.queue.splice(0);
        const now = performance.now();
        this.onBatch(batch.length, batch.map((p) => (now - p.queuedAt) / 1000));
        const run =
          batch.length === 1
            ? batch[0]!.runtime.run(batch[0]!.x, 1).then((o) => [o])
            : SegmentRuntime.runBatch(batch.map((p) => p.runtime), batch.map((p) => p.x));
        run.then(
          (outs) => batch.forEach((p, i) => p.resolve(outs[i]!)),
          (err: unknown) => batch.forEach((p) => p.reject(err)),
        );
      });
    });
  }

  async close(): Promise<void> {
    this.queues.clear();
    await this.segments.close();
  }
}

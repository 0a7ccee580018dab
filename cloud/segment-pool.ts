/**
 * Back segments [split, L) at a weight precision, built once per (split, bits, block) with one shared
 * onnxruntime session (weights held once); each client session owns only its KV cache. Decode steps of
 * sessions on the same back segment that arrive together run as one batch: a step waits for the
 * current event-loop turn to end, then every step queued by then goes in one run.
 */
import type { ModelPackage } from '../models/package.js';
import { buildSegment, type BuiltSegment } from '../models/onnx/segment.js';
import { linearFor } from '../models/onnx/linear.js';
import { SegmentRuntime, type SegmentOutput, type SharedSession } from '../models/runtime/segment-runtime.js';

/** Which back segment a session runs: its split and the weight precision of the cloud's layers. */
export interface BackKey {
  split: number;
  bits: number;
  blockSize: number;
}

interface PendingStep {
  runtime: SegmentRuntime;
  x: Float32Array;
  resolve: (o: SegmentOutput) => void;
  reject: (e: unknown) => void;
}

interface PoolEntry {
  built: BuiltSegment;
  session: Promise<SharedSession>;
  queue: PendingStep[];
  scheduled: boolean;
}

export class BackSegmentPool {
  private readonly entries = new Map<string, PoolEntry>();

  constructor(
    private readonly pkg: ModelPackage,
    /** told the size of every batch of decode steps that runs */
    private readonly onBatch: (size: number) => void = () => undefined,
  ) {}

  /** segments built so far */
  get size(): number {
    return this.entries.size;
  }

  private entry(k: BackKey): PoolEntry {
    const key = `${k.split}/${k.bits}/${k.blockSize}`;
    let e = this.entries.get(key);
    if (!e) {
      const c = this.pkg.config;
      const lin = linearFor(k.bits, k.blockSize);
      const built = buildSegment(c, this.pkg.weights, k.split, c.nLayers, { embed: false, head: true, keyPositions: true, linearFor: () => lin });
      e = { built, session: SegmentRuntime.openSession(built), queue: [], scheduled: false };
      this.entries.set(key, e);
    }
    return e;
  }

  /** A runtime with its own (empty) KV cache over the shared session of that back segment. */
  async runtime(k: BackKey): Promise<SegmentRuntime> {
    const e = this.entry(k);
    return SegmentRuntime.withSession(this.pkg.config, e.built, await e.session);
  }

  /** One decode step of `runtime` (a runtime of segment `k`), batched with the steps that arrive with it. */
  step(k: BackKey, runtime: SegmentRuntime, x: Float32Array): Promise<SegmentOutput> {
    const e = this.entry(k);
    return new Promise((resolve, reject) => {
      e.queue.push({ runtime, x, resolve, reject });
      if (e.scheduled) return;
      e.scheduled = true;
      setImmediate(() => {
        e.scheduled = false;
        const batch = e.queue.splice(0);
        this.onBatch(batch.length);
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
    for (const e of this.entries.values()) await (await e.session).session.release();
    this.entries.clear();
  }
}

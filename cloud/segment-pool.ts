/**
 * Back segments [split, L) at a weight precision, built once per (split, bits, block) with one shared
 * onnxruntime session (weights held once); each client session owns only its KV cache. Decode steps of
 * sessions on the same back segment run as continuous batches:
 * - while a batch runs, the steps that arrive queue up for the next one;
 * - when a batch ends, the next starts once every session of the batch that just ended has sent its
 *   next step, or when half the ended batch's run time has passed, whichever comes first: the sessions
 *   that were just served join the steps that waited (one batch of all instead of two alternating
 *   halves, each waiting for the other), and a slow or finished session delays the rest by at most that;
 * - a step that finds the segment idle waits only for the current event-loop turn (steps read from the
 *   network together join it), and the step of a segment's only session runs at once.
 * A batch holds at most `maxBatch` steps. With `kvSlab` the sessions' caches live in one slab per segment
 * and a batch reads them in place; without (the default) each batched step gathers them.
 */
import { SplitLLMError } from '../shared/errors.js';
import { blockOfWeights } from '../shared/precision.js';
import type { ModelPackage } from '../models/package.js';
import { cachedSegment, defaultCacheEvents, segmentCacheDir, type SegmentCacheEvents } from '../models/runtime/segment-cache.js';
import { buildInWorker, rtnSegmentOptions, workerBuildsAvailable, type RtnSegmentSpec } from '../models/runtime/build-worker.js';
import { SegmentRuntime, type SegmentOutput } from '../models/runtime/segment-runtime.js';
import { SharedSegments } from '../models/runtime/shared-segments.js';

/** Which back segment a session runs: its split and the weight precisions of the cloud's layers and LM head. */
export interface BackKey {
  split: number;
  bits: number;
  /** the LM head's bits (default 32) */
  headBits?: number;
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
  /** a batch of this segment is running (its steps are out of the queue) */
  running: boolean;
  /** a batch start waits for the end of this event-loop turn, or for a timer */
  scheduled: boolean;
  /** sessions of the last batch that have not sent their next step yet */
  expected: Set<SegmentRuntime>;
  /** until when the next batch waits for them (performance.now() ms) */
  waitUntil: number;
  /** the timer that ends that wait, or (for a wait under 2 ms) a look on the next event-loop turn */
  rejoin?: ReturnType<typeof setTimeout>;
  polling?: boolean;
}

/** How long, as a share of the batch that just ended, the next batch waits for that batch's sessions. */
const REJOIN_SHARE = 0.5;

/** Default largest batch of decode steps. */
export const DEFAULT_MAX_BATCH = 32;

/** A back segment's identity; its block only where something in it is blockwise (float ones are the same at every block, and batch together). */
const keyOf = (k: BackKey): string => {
  const head = k.headBits ?? 32;
  return `${k.split}/${k.bits}/${blockOfWeights(k.blockSize, k.bits, head)}/${head}`;
};

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
    /** most decode steps in one batch (default DEFAULT_MAX_BATCH) */
    private readonly maxBatch = DEFAULT_MAX_BATCH,
    /** the sessions of a back segment keep their KV in one slab (batches read it in place; default false) */
    kvSlab = false,
    /** what the segment cache says (builds, warnings): the server logs it */
    events: SegmentCacheEvents = defaultCacheEvents,
  ) {
    const c = pkg.config;
    this.segments = new SharedSegments(
      c,
      keyOf,
      (k, signal) => {
        const spec: RtnSegmentSpec = { from: k.split, to: c.nLayers, embed: false, head: true, keyPositions: true, bits: k.bits, blockSize: k.blockSize, headBits: k.headBits };
        // a package folder builds in a worker thread: the server keeps serving while a back half is built
        if (segmentCacheDir(pkg) && workerBuildsAvailable()) return buildInWorker(pkg, spec, events, signal);
        return cachedSegment(pkg, k.split, c.nLayers, rtnSegmentOptions(spec), events);
      },
      { idleMs, threads, sharedKv: kvSlab },
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

  private queueOf(key: string): StepQueue {
    let q = this.queues.get(key);
    if (!q) this.queues.set(key, (q = { queue: [], running: false, scheduled: false, expected: new Set(), waitUntil: 0 }));
    return q;
  }

  /** One decode step of `runtime` (a runtime of segment `k`), batched with the steps that arrive with it. */
  step(k: BackKey, runtime: SegmentRuntime, x: Float32Array): Promise<SegmentOutput> {
    const q = this.queueOf(keyOf(k));
    return new Promise((resolve, reject) => {
      q.queue.push({ queuedAt: performance.now(), runtime, x, resolve, reject });
      q.expected.delete(runtime);
      this.pump(q, this.segments.users(k) <= 1);
    });
  }

  /**
   * Starts the next batch when none runs: when the sessions of the last batch are all back (or their
   * wait is over), at once for a lone session, else at the end of this event-loop turn.
   */
  private pump(q: StepQueue, lone: boolean): void {
    if (q.running || q.queue.length === 0) return;
    const now = performance.now();
    if (q.expected.size > 0 && now < q.waitUntil) {
      // timers fire in whole milliseconds: a shorter wait looks again on the next event-loop turn
      if (!q.rejoin && !q.polling) {
        const again = () => {
          q.rejoin = undefined;
          q.polling = false;
          if (performance.now() >= q.waitUntil) q.expected.clear();
          this.pump(q, false);
        };
        if (q.waitUntil - now >= 2) q.rejoin = setTimeout(again, Math.floor(q.waitUntil - now));
        else {
          q.polling = true;
          setImmediate(again);
        }
      }
      return;
    }
    // everyone is back (or the wait is over): no timer left behind
    clearTimeout(q.rejoin);
    q.rejoin = undefined;
    q.expected.clear();
    if (q.scheduled) return;
    if (lone) return this.start(q);
    q.scheduled = true;
    setImmediate(() => {
      q.scheduled = false;
      if (!q.running) this.start(q);
    });
  }

  private start(q: StepQueue): void {
    const taken = q.queue.splice(0, this.maxBatch);
    // a step whose session was released while it waited fails alone, not the batch it would have joined
    for (const p of taken) if (!p.runtime.live) p.reject(new SplitLLMError('E_RUNTIME', 'the session was released before its step ran'));
    const batch = taken.filter((p) => p.runtime.live);
    if (!batch.length) return this.pump(q, false);
    q.running = true;
    const t0 = performance.now();
    this.onBatch(batch.length, batch.map((p) => (t0 - p.queuedAt) / 1000));
    const run =
      batch.length === 1
        ? batch[0]!.runtime.run(batch[0]!.x, 1).then((o) => [o])
        : SegmentRuntime.runBatch(batch.map((p) => p.runtime), batch.map((p) => p.x));
    run
      .then(
        (outs) => batch.forEach((p, i) => p.resolve(outs[i]!)),
        (err: unknown) => batch.forEach((p) => p.reject(err)),
      )
      .finally(() => {
        q.running = false;
        const t1 = performance.now();
        // the sessions just served are expected back: the next batch waits a little for them
        if (batch.length > 1 || q.queue.length > 0) {
          for (const p of batch) q.expected.add(p.runtime);
          for (const p of q.queue) q.expected.delete(p.runtime);
          q.waitUntil = t1 + REJOIN_SHARE * (t1 - t0);
        }
        this.pump(q, false);
      });
  }

  async close(): Promise<void> {
    for (const q of this.queues.values()) clearTimeout(q.rejoin);
    this.queues.clear();
    await this.segments.close();
  }
}

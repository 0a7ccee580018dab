/**
 * Segments built once and shared: one onnxruntime session per segment key (the weights held once),
 * and a runtime with its own KV cache for each user of it. The cloud keys its back segments by
 * (split, bits, block); the edge service its front segments by split.
 */
import type { ModelConfig } from '../manifest.js';
import type { BuiltSegment } from '../onnx/segment.js';
import type { KvSlab } from './kv-cache.js';
import { SegmentRuntime, type RuntimeOptions, type SharedSession } from './segment-runtime.js';

export interface SharedSegment {
  /** the segment built and its session opened */
  ready: Promise<{ built: BuiltSegment; shared: SharedSession }>;
  session: Promise<SharedSession>;
  /** runtimes over it not yet released */
  users: number;
  /** the KV buffers its runtimes share (with `sharedKv`) */
  slab?: KvSlab;
  evict?: ReturnType<typeof setTimeout>;
}

export class SharedSegments<K> {
  private readonly entries = new Map<string, SharedSegment>();
  /** aborted by close: builds still running stop */
  private readonly closed = new AbortController();

  constructor(
    private readonly config: ModelConfig,
    private readonly keyOf: (k: K) => string,
    /**
     * builds (or loads from the cache) segment `k`; a promise for a build that runs off the event loop,
     * which should stop when `signal` aborts (the segments are closed)
     */
    private readonly build: (k: K, signal: AbortSignal) => BuiltSegment | Promise<BuiltSegment>,
    private readonly opts: RuntimeOptions & {
      /** a segment no runtime has used for this long is released (its weights freed); default: kept */
      idleMs?: number;
      /** keys never evicted (e.g. the edge's plan split) */
      keep?: (k: K) => boolean;
      /** the runtimes of a segment keep their KV caches in one slab, so that their steps batch without gathering (the cloud's back segments) */
      sharedKv?: boolean;
    } = {},
  ) {}

  /** segments built so far */
  get size(): number {
    return this.entries.size;
  }

  /** runtimes of segment `k` not yet released (0 when it is not built) */
  users(k: K): number {
    return this.entries.get(this.keyOf(k))?.users ?? 0;
  }

  /** The segment of `k`, built and its session opened on first use. */
  entry(k: K): SharedSegment {
    const key = this.keyOf(k);
    let e = this.entries.get(key);
    if (!e) {
      const built = (async () => this.build(k, this.closed.signal))();
      const ready = built.then(async (b) => ({ built: b, shared: await SegmentRuntime.openSession(b, this.opts) }));
      const entry: SharedSegment = { ready, session: ready.then((r) => r.shared), users: 0 };
      // whoever waits for the segment gets its failure; the derived promise must not crash the process
      entry.session.catch(() => undefined);
      // a failed build is not cached: the next user tries again and gets the error itself
      entry.ready.catch(() => {
        if (this.entries.get(key) === entry) this.entries.delete(key);
      });
      e = entry;
      this.entries.set(key, e);
    }
    return e;
  }

  /** A runtime with its own (empty) KV cache over the shared session of segment `k`. */
  async runtime(k: K): Promise<SegmentRuntime> {
    const e = this.entry(k);
    e.users++;
    clearTimeout(e.evict);
    let ready: { built: BuiltSegment; shared: SharedSession };
    try {
      ready = await e.ready;
    } catch (err) {
      e.users--;
      throw err;
    }
    const { built, shared } = ready;
    if (this.opts.sharedKv) e.slab ??= SegmentRuntime.slabFor(this.config, built, shared);
    return SegmentRuntime.withSession(this.config, built, shared, () => this.released(k, e), e.slab);
  }

  private released(k: K, e: SharedSegment): void {
    e.users--;
    const idle = this.opts.idleMs;
    if (e.users > 0 || idle === undefined || this.opts.keep?.(k)) return;
    clearTimeout(e.evict);
    e.evict = setTimeout(() => {
      const key = this.keyOf(k);
      if (e.users > 0 || this.entries.get(key) !== e) return;
      this.entries.delete(key);
      void e.session.then((s) => s.session.release()).catch(() => undefined);
    }, idle);
    e.evict.unref?.();
  }

  async close(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    this.closed.abort();
    for (const e of all) {
      clearTimeout(e.evict);
      const s = await e.session.catch(() => undefined);
      await s?.session.release();
    }
  }
}

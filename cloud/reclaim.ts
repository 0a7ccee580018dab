/**
 * Gives memory back after sessions end. A session's KV cache lives in ArrayBuffers that V8 frees only in
 * a major garbage collection, and a server that goes quiet after a burst runs none: its RSS would stay
 * at the burst's peak. The reclaimer counts the KV bytes of released sessions and, once enough were
 * released (or the last session went), runs one major collection once releases have been quiet for
 * `delayMs` (at the latest `maxWaitMs` after the first, and at most one per `minIntervalMs`): a burst of
 * expiries costs one pause, not one per session.
 *
 * What the C allocator does with the freed buffers is up to it: glibc keeps chunks under its (adaptive)
 * mmap threshold for reuse, so deployments set MALLOC_MMAP_THRESHOLD_ (deploy/README.md, "Memory").
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** A major GC, from --expose-gc or exposed now (the flag can be set at run time; the function comes from a fresh context). */
function majorGc(): (() => void) | undefined {
  const own: unknown = Reflect.get(globalThis, 'gc');
  if (typeof own === 'function') return () => void Reflect.apply(own, globalThis, []);
  try {
    setFlagsFromString('--expose-gc');
    const fresh: unknown = runInNewContext('gc');
    if (typeof fresh === 'function') return () => void Reflect.apply(fresh, undefined, []);
  } catch {
    // a runtime without the flag: memory then comes back at V8's own pace
  }
  return undefined;
}

export interface ReclaimOptions {
  /** released KV bytes that call for a collection (default 8 MiB) */
  releasedBytes?: number;
  /** collect once no session was released for this long, so that a burst is collected once (default 500 ms) */
  delayMs?: number;
  /** but no later than this long after the first release waiting (default 5 s) */
  maxWaitMs?: number;
  /** at most one collection per this long (default 1 s) */
  minIntervalMs?: number;
  /** told of every reclaim (its two collections) with the KV bytes released before it and the ms the collections took */
  onCollect?: (releasedBytes: number, ms: number) => void;
}

export class MemoryReclaimer {
  private pending = 0;
  /** when the oldest release waiting for a collection came */
  private since = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private last = -Infinity;
  private readonly gc = majorGc();
  private closed = false;

  constructor(private readonly opts: ReclaimOptions = {}) {}

  /** whether collections can run here (false: the runtime refused to expose gc) */
  get active(): boolean {
    return this.gc !== undefined;
  }

  /** A session holding `bytes` of KV was released; `remaining` sessions are still held. */
  released(bytes: number, remaining: number): void {
    if (!this.gc || this.closed) return;
    const now = performance.now();
    if (this.pending === 0) this.since = now;
    this.pending += bytes;
    const enough = this.pending >= (this.opts.releasedBytes ?? 8 * 1024 * 1024) || (remaining === 0 && this.pending > 0);
    if (!enough) return;
    // trailing: each release in a burst moves the collection later, up to maxWaitMs after the first
    const at = Math.max(Math.min(now + (this.opts.delayMs ?? 500), this.since + (this.opts.maxWaitMs ?? 5000)), this.last + (this.opts.minIntervalMs ?? 1000));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.collect(), Math.max(0, at - now));
    this.timer.unref?.();
  }

  /**
   * Collects, then once more a moment later: buffers that onnxruntime handed to JavaScript are freed by
   * finalizers the first collection only schedules, and their memory is gone only after the second.
   */
  private collect(first = true, freedBefore = 0, msBefore = 0): void {
    this.timer = undefined;
    if (!this.gc || this.closed) return;
    const freed = freedBefore + this.pending;
    this.pending = 0;
    const t0 = performance.now();
    this.gc();
    this.last = performance.now();
    const ms = msBefore + this.last - t0;
    if (first) {
      this.timer = setTimeout(() => this.collect(false, freed, ms), this.opts.delayMs ?? 500);
      this.timer.unref?.();
    } else this.opts.onCollect?.(freed, ms);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

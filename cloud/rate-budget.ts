/**
 * What one connection may send per second: a token bucket of frames and one of bytes. A connection over
 * its budget is not refused but slowed — its session loop waits before it reads the next frame, so its
 * frames wait in the channel's bounded receive queue (and past that, in TCP) — and every other
 * connection's frames are handled meanwhile. A budget that holds a whole second at the rate (the burst)
 * lets a legitimate edge's bursts through untouched: a prompt's prefill chunks, a re-split's KV frames.
 */

export interface RateLimits {
  /** frames per second, sustained (default 1000) */
  framesPerSecond: number;
  /** bytes per second, sustained (default 64 MiB) */
  bytesPerSecond: number;
  /** how many seconds of either may come at once (default 2) */
  burstSeconds: number;
}

export const DEFAULT_RATE_LIMITS: RateLimits = { framesPerSecond: 1000, bytesPerSecond: 64 * 1024 * 1024, burstSeconds: 2 };

class Bucket {
  private level: number;
  private at: number;
  constructor(
    private readonly rate: number,
    private readonly capacity: number,
    now: number,
  ) {
    this.level = capacity;
    this.at = now;
  }
  /** Takes `n` (going into debt when short); the ms until the debt is paid back, 0 when there was enough. */
  take(n: number, now: number): number {
    this.level = Math.min(this.capacity, this.level + ((now - this.at) / 1000) * this.rate);
    this.at = now;
    this.level -= n;
    return this.level >= 0 ? 0 : (-this.level / this.rate) * 1000;
  }
}

export class RateBudget {
  private readonly frames: Bucket;
  private readonly bytes: Bucket;
  constructor(limits: RateLimits, now = performance.now()) {
    this.frames = new Bucket(limits.framesPerSecond, Math.max(1, limits.framesPerSecond * limits.burstSeconds), now);
    // a single frame up to the burst always fits once the bucket is full
    this.bytes = new Bucket(limits.bytesPerSecond, Math.max(1, limits.bytesPerSecond * limits.burstSeconds), now);
  }
  /** Charges one frame of `bytes`: how long (ms) the connection should wait before its next frame. */
  charge(bytes: number, now = performance.now()): number {
    return Math.max(this.frames.take(1, now), this.bytes.take(bytes, now));
  }
}

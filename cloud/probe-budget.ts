/**
 * The server-wide bound on link-probe replies (the `probe` message asks the cloud to send bytes back, to
 * measure throughput): replies waiting in send buffers hold at most `totalBytes` together, whatever the
 * number of connections. A probe waits for its share; its share comes back once its reply has left the
 * process (the connection drained) or the connection was dropped for not reading.
 */
export const DEFAULT_PROBE_BYTES_IN_FLIGHT = 64 * 1024 * 1024;

export class ProbeBudget {
  private free: number;
  private readonly waiting: { n: number; go: () => void }[] = [];

  constructor(readonly totalBytes = DEFAULT_PROBE_BYTES_IN_FLIGHT) {
    this.free = totalBytes;
  }

  /** bytes of probe replies in flight now */
  get inFlight(): number {
    return this.totalBytes - this.free;
  }

  /** Takes `bytes` (at most the whole budget) once they are free, in order of asking; returns what was taken, to give back. */
  async take(bytes: number): Promise<number> {
    const n = Math.min(bytes, this.totalBytes);
    if (this.waiting.length === 0 && n <= this.free) {
      this.free -= n;
      return n;
    }
    await new Promise<void>((go) => this.waiting.push({ n, go }));
    return n;
  }

  give(n: number): void {
    this.free += n;
    while (this.waiting.length && this.waiting[0]!.n <= this.free) {
      const w = this.waiting.shift()!;
      this.free -= w.n;
      w.go();
    }
  }
}

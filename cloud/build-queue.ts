/**
 * Heavy work a client can ask for (a front segment's build for the browser edge: seconds and the model's
 * front weights in memory) runs one job at a time, with at most `maxWaiting` jobs queued behind it; past
 * that a request is refused at once (`BuildQueueFull`, HTTP 503 with Retry-After) instead of starting
 * another build beside the others.
 */
export class BuildQueueFull extends Error {
  constructor(readonly waiting: number) {
    super(`the server is building ${waiting + 1} front segments already: retry in a few seconds`);
    this.name = 'BuildQueueFull';
  }
}

export class BuildQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private queued = 0;

  constructor(readonly maxWaiting = 4) {}

  /** jobs running or waiting now */
  get pending(): number {
    return this.queued;
  }

  /** Runs `job` after those before it; BuildQueueFull (synchronously, as a rejected promise) when the queue is full. */
  run<T>(job: () => Promise<T>): Promise<T> {
    // one runs, maxWaiting wait
    if (this.queued > this.maxWaiting) return Promise.reject(new BuildQueueFull(this.queued - 1));
    this.queued++;
    const result = this.tail.then(job);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result.finally(() => this.queued--);
  }
}

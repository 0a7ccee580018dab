/**
 * The transport seam: a `FrameChannel` carries whole frames between an edge and a cloud. The edge and
 * the cloud speak only to this interface; implementations are the WebSocket channel (websocket.ts, over
 * `ws` in Node or the browser's WebSocket) and an in-memory pair for tests (memory.ts).
 */

/** What a channel yields: a binary frame, a text frame (not part of the protocol), or the close. */
export type ChannelEvent =
  | { kind: 'binary'; data: Uint8Array }
  | { kind: 'text'; length: number }
  | { kind: 'close'; code: number; reason: string };

export interface FrameChannel {
  /** Queues a frame for sending (a closed channel drops it). */
  send(frame: Uint8Array): void;
  /** The next frame, or the close once every frame before it was read; after the close, the close again. */
  next(): Promise<ChannelEvent>;
  /** Waits until at most `maxBytes` wait to be sent; false when the peer did not read within `timeoutMs`. */
  drain(maxBytes: number, timeoutMs: number): Promise<boolean>;
  /** Closes with a WebSocket close code (1000 normal, 1001 going away, 1008 policy, 1011 server error). */
  close(code?: number, reason?: string): void;
  /** Drops the connection at once, without a closing handshake (what a crash or a cut cable looks like). */
  terminate(): void;
  readonly open: boolean;
  /** bytes received and sent so far, frames only */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** `performance.now()` when the peer was last heard from: a frame, a ping or a pong (0 before anything came) */
  readonly heardAt: number;
  /**
   * Sends a keepalive ping, where the transport has them (a WebSocket in Node; a page's WebSocket cannot):
   * the peer's pong counts as heard and measures the round trip. Absent where there are none.
   */
  ping?(): void;
  /** the last round trip a ping measured, ms (undefined before one was) */
  readonly rttMs: number | undefined;
}

/**
 * Opens a new connection to the same peer: the first one, and one for every resume. `session` is the
 * edge-chosen session id the connection is for (the WebSocket connector puts it in the upgrade URL, for
 * balancers that route on it); a link-measurement connection has none.
 */
export type Connector = (session?: string) => Promise<FrameChannel>;

/** Close codes after which an edge may resume its session: the link dropped, the session did not end. */
export const RESUMABLE_CLOSE_CODES: readonly number[] = [1001, 1006, 1011, 1012, 1013];

/**
 * A receive queue shared by the implementations: frames wait until read, and a reader waits until a
 * frame comes. It reports the bytes it holds so that a transport can stop reading from the network
 * (backpressure) while a slow consumer catches up.
 */
/** What a waiting event costs the queue: its bytes plus a fixed overhead, so that a flood of empty frames counts too. */
const FRAME_OVERHEAD = 64;
function cost(e: ChannelEvent): number {
  return e.kind === 'binary' ? FRAME_OVERHEAD + e.data.length : e.kind === 'text' ? FRAME_OVERHEAD : 0;
}

export class ReceiveQueue {
  private queue: ChannelEvent[] = [];
  private waiting: ((e: ChannelEvent) => void) | undefined;
  private closed: ChannelEvent | undefined;
  /** bytes of frames waiting to be read, each with a fixed overhead */
  queuedBytes = 0;
  constructor(private readonly onDrained?: () => void) {}

  push(e: ChannelEvent): void {
    if (this.closed) return;
    if (e.kind === 'close') this.closed = e;
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w(e);
      return;
    }
    this.queuedBytes += cost(e);
    this.queue.push(e);
  }

  next(): Promise<ChannelEvent> {
    const e = this.queue.shift();
    if (e) {
      this.queuedBytes -= cost(e);
      if (this.queuedBytes === 0) this.onDrained?.();
      return Promise.resolve(e);
    }
    if (this.closed) return Promise.resolve(this.closed);
    return new Promise((resolve) => (this.waiting = resolve));
  }
}

/** The part of a WebSocket (the `ws` package's or the browser's) that sending and draining use. */
export interface SendingSocket {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
}

/**
 * What the WebSocket channels (ws.ts in Node, browser-ws.ts in a page) share: frames counted as they are
 * sent, the receive queue read by `next`, `drain` polling the socket's send buffer. Each adds how its
 * socket receives, closes and is cut.
 */
export abstract class SocketChannel implements FrameChannel {
  bytesIn = 0;
  bytesOut = 0;
  heardAt = 0;
  rttMs: number | undefined = undefined;
  protected abstract readonly socket: SendingSocket;
  protected abstract readonly queue: ReceiveQueue;

  get open(): boolean {
    return this.socket.readyState === 1;
  }
  send(frame: Uint8Array): void {
    if (!this.open) return;
    this.bytesOut += frame.length;
    this.socket.send(frame);
  }
  next(): Promise<ChannelEvent> {
    return this.queue.next();
  }
  async drain(maxBytes: number, timeoutMs: number): Promise<boolean> {
    const t0 = Date.now();
    while (this.socket.bufferedAmount > maxBytes && this.open) {
      if (Date.now() - t0 > timeoutMs) return false;
      await new Promise((r) => setTimeout(r, 2));
    }
    return true;
  }
  abstract close(code?: number, reason?: string): void;
  abstract terminate(): void;
}

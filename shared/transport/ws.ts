/**
 * A frame channel over a WebSocket with the `ws` package's API (Node: the edge's client socket and the
 * server's upgraded socket alike). Typed structurally, so this file imports nothing Node-only.
 *
 * Backpressure both ways: `drain` waits on the send buffer; frames received but not yet read are
 * bounded by `maxQueuedBytes`, past which the socket stops reading from the network (TCP then slows the
 * peer) until the reader catches up.
 */
import { ReceiveQueue, SocketChannel, type ChannelEvent, type FrameChannel } from './channel.js';

type RawData = Uint8Array | ArrayBuffer | Uint8Array[];

/** The part of a `ws` WebSocket this channel uses. */
export interface WsSocket {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  ping(): void;
  on(event: 'message', listener: (data: RawData, isBinary: boolean) => void): unknown;
  on(event: 'ping' | 'pong', listener: () => void): unknown;
  on(event: 'close', listener: (code: number, reason: Uint8Array) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
}

export interface WsChannelOptions {
  /** received frames held unread before the socket stops reading (default 64 MiB) */
  maxQueuedBytes?: number;
  /** told about socket errors (a frame over the size limit, a malformed WebSocket frame) before the close */
  onError?: (err: Error) => void;
  /**
   * after `close`, how long the peer has to answer the closing handshake before the socket is cut
   * (default 2 s; ws's own wait is 30 s, which kept a finished CLI alive that long)
   */
  closeTimeoutMs?: number;
}

const OPEN = 1;

function bytesOf(data: RawData): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  const out = new Uint8Array(data.reduce((n, d) => n + d.length, 0));
  let o = 0;
  for (const d of data) {
    out.set(d, o);
    o += d.length;
  }
  return out;
}

class WsChannel extends SocketChannel {
  protected readonly queue: ReceiveQueue;
  private paused = false;
  private closed = false;
  private closeTimer: ReturnType<typeof setTimeout> | undefined;
  /** when the ping awaiting its pong went out */
  private pingAt: number | undefined;
  private readonly closeTimeoutMs: number;

  constructor(
    protected readonly socket: WsSocket,
    opts: WsChannelOptions,
  ) {
    super();
    const ws = socket;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 2000;
    const maxQueued = opts.maxQueuedBytes ?? 64 * 1024 * 1024;
    this.queue = new ReceiveQueue(() => {
      if (this.paused) {
        this.paused = false;
        ws.resume();
      }
    });
    ws.on('message', (data, isBinary) => {
      this.heardAt = performance.now();
      const bytes = bytesOf(data);
      this.bytesIn += bytes.length;
      const e: ChannelEvent = isBinary ? { kind: 'binary', data: bytes } : { kind: 'text', length: bytes.length };
      this.queue.push(e);
      if (!this.paused && this.queue.queuedBytes > maxQueued) {
        this.paused = true;
        ws.pause();
      }
    });
    ws.on('ping', () => (this.heardAt = performance.now()));
    ws.on('pong', () => {
      this.heardAt = performance.now();
      if (this.pingAt !== undefined) this.rttMs = this.heardAt - this.pingAt;
      this.pingAt = undefined;
    });
    ws.on('close', (code, reason) => {
      this.closed = true;
      clearTimeout(this.closeTimer);
      this.queue.push({ kind: 'close', code, reason: new TextDecoder().decode(reason) });
    });
    ws.on('error', (err) => opts.onError?.(err));
  }

  ping(): void {
    if (!this.open) return;
    this.pingAt ??= performance.now();
    this.socket.ping();
  }

  close(code = 1000, reason = ''): void {
    if (this.socket.readyState > OPEN) return;
    this.socket.close(code, reason);
    // a peer that never answers the close (or a connection still upgrading) is cut after the deadline;
    // the timer does not keep a process alive by itself
    if (this.closed || this.closeTimer) return;
    this.closeTimer = setTimeout(() => this.socket.terminate(), this.closeTimeoutMs);
    this.closeTimer.unref?.();
  }
  terminate(): void {
    this.socket.terminate();
  }
}

export function wsChannel(ws: WsSocket, opts: WsChannelOptions = {}): FrameChannel {
  return new WsChannel(ws, opts);
}

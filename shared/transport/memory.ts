/** An in-memory pair of frame channels, for tests: what one side sends the other reads, in order. */
import { ReceiveQueue, type FrameChannel } from './channel.js';

class MemoryChannel implements FrameChannel {
  readonly incoming = new ReceiveQueue();
  peer!: MemoryChannel;
  open = true;
  bytesIn = 0;
  bytesOut = 0;
  heardAt = 0;
  readonly rttMs = undefined;

  send(frame: Uint8Array): void {
    if (!this.open) return;
    this.bytesOut += frame.length;
    const copy = frame.slice(); // the sender may reuse its buffer
    queueMicrotask(() => {
      if (!this.peer.open) return;
      this.peer.bytesIn += copy.length;
      this.peer.heardAt = performance.now();
      this.peer.incoming.push({ kind: 'binary', data: copy });
    });
  }
  /** A text frame, for tests of what the protocol refuses. */
  sendText(text: string): void {
    queueMicrotask(() => this.peer.incoming.push({ kind: 'text', length: text.length }));
  }
  next() {
    return this.incoming.next();
  }
  async drain(): Promise<boolean> {
    return true;
  }
  close(code = 1000, reason = ''): void {
    this.end(code, reason);
  }
  terminate(): void {
    this.end(1006, '');
  }
  private end(code: number, reason: string): void {
    if (!this.open) return;
    this.open = false;
    // frames already sent arrive before the close (microtasks run in order)
    queueMicrotask(() => {
      this.incoming.push({ kind: 'close', code, reason });
      this.peer.open = false;
      this.peer.incoming.push({ kind: 'close', code, reason });
    });
  }
}

export type { MemoryChannel };

/** Two connected channels: `a` is one end (say the edge), `b` the other (the cloud). */
export function memoryChannelPair(): { a: MemoryChannel; b: MemoryChannel } {
  const a = new MemoryChannel();
  const b = new MemoryChannel();
  a.peer = b;
  b.peer = a;
  return { a, b };
}

/** Transport helpers for tests: a connector that drops the link at chosen steps, as a cut cable would. */
import { wsConnector } from '../../edge/connect-node.js';
import { parseEdgeFrame } from '../../shared/protocol/index.js';
import type { Connector, FrameChannel } from '../../shared/transport/channel.js';

/**
 * A WebSocket connector whose channels terminate right after sending the prefill/step/draft frame that follows
 * `afterTokens[i]` generated tokens (counted over the session, resends excluded; of a prompt sent in
 * chunks, its last chunk counts) — or, with `kinds`, the i-th frame of those kinds only.
 */
export function droppingConnector(url: string, afterTokens: number[], token?: string, kinds: readonly string[] = ['prefill', 'step', 'draft']): Connector {
  const inner = wsConnector(url, token);
  const seen = new WeakSet<Uint8Array>(); // the edge resends the very frame it kept
  let fed = 0; // prefill/step frames sent for the first time
  return async (session) => {
    const ch: FrameChannel = await inner(session);
    return withSend(ch, (frame) => {
      ch.send(frame);
      const m = parseEdgeFrame(frame).header;
      if (!kinds.includes(m.type)) return;
      // chunks of a prompt before its last are answered by no token: they do not count
      if (m.type === 'prefill' && m.more) return;
      if (seen.has(frame)) return;
      seen.add(frame);
      const tokensBefore = fed;
      fed++;
      if (afterTokens.includes(tokensBefore)) ch.terminate();
    });
  };
}

/** `ch` with its `send` replaced (everything else passed through): for connectors that cut or delay a link. */
export function withSend(ch: FrameChannel, send: (frame: Uint8Array) => void): FrameChannel {
  return {
    get open() {
      return ch.open;
    },
    get bytesIn() {
      return ch.bytesIn;
    },
    get bytesOut() {
      return ch.bytesOut;
    },
    get heardAt() {
      return ch.heardAt;
    },
    get rttMs() {
      return ch.rttMs;
    },
    ...(ch.ping ? { ping: () => ch.ping?.() } : {}),
    next: () => ch.next(),
    drain: (n, t) => ch.drain(n, t),
    close: (c, r) => ch.close(c, r),
    terminate: () => ch.terminate(),
    send,
  };
}

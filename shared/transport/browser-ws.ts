/**
 * A frame channel over the browser's WebSocket (the browser edge), and its connector. The browser's
 * socket has no pause: frames received but not yet read are only counted (a page reads each answer as it
 * comes); `drain` polls `bufferedAmount` as the Node channel does. A page may close only with 1000 or
 * 3000–4999, so other codes close as 1000 with their reason.
 */
import { SplitLLMError } from '../errors.js';
import { sessionUrl } from '../protocol/index.js';
import { ReceiveQueue, SocketChannel, type ChannelEvent, type Connector } from './channel.js';

const OPEN = 1;

class BrowserChannel extends SocketChannel {
  protected readonly queue = new ReceiveQueue();

  constructor(protected readonly socket: WebSocket) {
    super();
    socket.binaryType = 'arraybuffer';
    socket.addEventListener('message', (ev: MessageEvent<unknown>) => {
      const d = ev.data;
      this.heardAt = performance.now();
      let e: ChannelEvent;
      if (d instanceof ArrayBuffer) {
        this.bytesIn += d.byteLength;
        e = { kind: 'binary', data: new Uint8Array(d) };
      } else {
        const length = typeof d === 'string' ? d.length : 0;
        this.bytesIn += length;
        e = { kind: 'text', length };
      }
      this.queue.push(e);
    });
    socket.addEventListener('close', (ev: CloseEvent) => this.queue.push({ kind: 'close', code: ev.code, reason: ev.reason }));
  }

  close(code = 1000, reason = ''): void {
    if (this.socket.readyState > OPEN) return;
    this.socket.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason.slice(0, 120));
  }
  terminate(): void {
    this.close(1000, 'terminated');
  }
}

/** base64url of a string's UTF-8 bytes, without padding. */
function base64url(s: string): string {
  let bin = '';
  for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * Connects to `url` (ws:// or wss://) from a page. A page cannot set headers on the upgrade, so a bearer
 * `token` is offered as the subprotocol `base64url.bearer.authorization.splitllm.<token>` beside `splitllm`,
 * which the cloud selects (cloud/auth.ts). A connection for a session carries its id in the URL, as the Node
 * connector's does.
 */
export function browserConnector(url: string, token?: string): Connector {
  return (session) =>
    new Promise((resolve, reject) => {
      let ws: WebSocket;
      try {
        const target = session ? sessionUrl(url, session) : url;
        ws = token ? new WebSocket(target, ['splitllm', `base64url.bearer.authorization.splitllm.${base64url(token)}`]) : new WebSocket(target);
      } catch (e) {
        reject(new SplitLLMError('E_CONNECTION', `cannot open a WebSocket to ${url} (${e instanceof Error ? e.message : String(e)}): check the cloud address`));
        return;
      }
      const channel = new BrowserChannel(ws);
      const opened = () => {
        ws.removeEventListener('error', failed);
        resolve(channel);
      };
      const failed = () => {
        ws.removeEventListener('open', opened);
        reject(new SplitLLMError('E_CONNECTION', `cannot reach the cloud at ${url}: start 'splitllm cloud' there, or point the page at a running one`));
      };
      ws.addEventListener('open', opened, { once: true });
      ws.addEventListener('error', failed, { once: true });
    });
}

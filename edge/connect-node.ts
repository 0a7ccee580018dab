/** Opens the edge's channel to a cloud in Node: a `ws` WebSocket with the bearer token on the upgrade. */
import WebSocket from 'ws';
import { SplitLLMError } from '../shared/errors.js';
import type { Connector } from '../shared/transport/channel.js';
import { wsChannel } from '../shared/transport/ws.js';

export function wsConnector(url: string, token?: string, opts: { maxPayload?: number } = {}): Connector {
  return () =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: token ? { authorization: `Bearer ${token}` } : {}, maxPayload: opts.maxPayload ?? 256 * 1024 * 1024 });
      const channel = wsChannel(ws);
      ws.once('open', () => resolve(channel));
      ws.once('error', (e) => reject(new SplitLLMError('E_CONNECTION', `cannot reach the cloud at ${url} (${e.message}): start 'splitllm cloud' or check --cloud`)));
    });
}

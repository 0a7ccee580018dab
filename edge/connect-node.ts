/** Opens the edge's channel to a cloud in Node: a `ws` WebSocket with the bearer token on the upgrade. */
import WebSocket from 'ws';
import { SplitLLMError } from '../shared/errors.js';
import type { Connector } from '../shared/transport/channel.js';
import { wsChannel } from '../shared/transport/ws.js';
import { sessionUrl } from '../shared/protocol/index.js';
import { DEFAULT_DEADLINES } from './connection.js';

/**
 * `ca`: PEM certificates to trust for wss:// beside the system's (a self-signed or private CA). A
 * connection for a session carries its id in the URL (`?session=ID`), where a balancer can hash on it.
 */
export function wsConnector(url: string, token?: string, opts: { maxPayload?: number; ca?: string | Buffer; /** TCP connect through the upgrade's answer (default DEFAULT_DEADLINES.connectMs) */ handshakeTimeoutMs?: number } = {}): Connector {
  const handshakeTimeout = opts.handshakeTimeoutMs ?? DEFAULT_DEADLINES.connectMs;
  return (session) =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(session ? sessionUrl(url, session) : url, { headers: token ? { authorization: `Bearer ${token}` } : {}, maxPayload: opts.maxPayload ?? 256 * 1024 * 1024, handshakeTimeout, ...(opts.ca ? { ca: opts.ca } : {}) });
      const channel = wsChannel(ws);
      let refused = false;
      ws.once('open', () => resolve(channel));
      // the cloud refuses on the HTTP upgrade (401 token, 403 tenant limit, 503 busy), with a JSON body saying why
      ws.once('unexpected-response', (_req, res) => {
        refused = true;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body = (body + d).slice(0, 2048)));
        res.on('end', () => {
          let why = '';
          try {
            const j: unknown = JSON.parse(body);
            if (j && typeof j === 'object' && 'error' in j && j.error && typeof j.error === 'object' && 'code' in j.error && 'message' in j.error) why = `${String(j.error.code)}: ${String(j.error.message)}`;
          } catch {
            why = '';
          }
          const status = res.statusCode ?? 0;
          const fix = status === 401 ? 'pass the token the cloud was given (--token-file)' : status === 503 || status === 403 ? 'retry shortly' : 'check --cloud';
          reject(new SplitLLMError('E_CONNECTION', `the cloud at ${url} refused the connection (HTTP ${status}${why ? `, ${why}` : ''}): ${fix}`));
          ws.terminate();
        });
      });
      ws.once('error', (e) => {
        if (refused) return;
        const tlsFix = /certificate|self[- ]signed|CERT_|unable to verify/i.test(e.message) ? "pass the cloud's certificate (or its CA) with --ca-file" : "start 'splitllm cloud' or check --cloud";
        if (/handshake has timed out/i.test(e.message)) {
          reject(new SplitLLMError('E_CONNECTION', `the cloud at ${url} did not complete the connection within ${(handshakeTimeout / 1000).toFixed(1)} s (TCP connect and WebSocket upgrade): check --cloud and the network, or raise --connect-timeout`));
          return;
        }
        reject(new SplitLLMError('E_CONNECTION', `cannot reach the cloud at ${url} (${e.message}): ${tlsFix}`));
      });
    });
}

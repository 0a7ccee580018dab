/**
 * The cloud server's HTTP and WebSocket wiring: fastify with GET /healthz, /v1/models and /metrics, and
 * the WebSocket endpoint /v1/session, where each connection becomes a frame channel served by a
 * `CloudSession` (session.ts). Back segments and batching live in segment-pool.ts, held sessions in
 * session-store.ts, metrics in metrics.ts. Protocol in docs/PROTOCOL.md.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import type { WebSocket } from 'ws';
import { listenError } from '../shared/listen.js';
import { encodeFrame, protocolError, type ProtocolError } from '../shared/protocol/index.js';
import { wsChannel } from '../shared/transport/ws.js';
import type { ModelPackage } from '../models/package.js';
import { WEIGHT_BITS } from '../quantization/weights/blockwise.js';
import type { CalibrationContexts } from '../quantization/activations/calibration.js';
import { CloudSession, cloudContext } from './session.js';

export interface CloudOptions {
  port?: number;
  host?: string;
  /** bearer token required on the WebSocket upgrade */
  token?: string;
  maxSessions?: number;
  /** largest accepted frame in bytes */
  maxFrameBytes?: number;
  /** most positions (prompt + generated) one session may hold */
  sessionTokenLimit?: number;
  log?: boolean;
  /** a session idle this long (connected or dropped) is released; a dropped one can be resumed until then */
  idleMs?: number;
  /** a session waits while more than this many bytes wait in its socket's send buffer (default 16 MiB) */
  maxBufferedBytes?: number;
  /** the model's calibration: contexts of calibrated codecs (`ts-tabq:cal=K`) the edge may send */
  calibration?: CalibrationContexts;
}

export interface CloudServer {
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

export async function startCloud(pkg: ModelPackage, opts: CloudOptions = {}): Promise<CloudServer> {
  const c = pkg.config;
  const maxFrame = opts.maxFrameBytes ?? 64 * 1024 * 1024;
  const ctx = cloudContext(pkg, opts);
  const { metrics, store, pool } = ctx;
  let open = 0;

  const app = Fastify({ logger: opts.log ?? false });
  await app.register(websocket, { options: { maxPayload: maxFrame } });
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/v1/models', async () => ({
    models: [{ id: pkg.manifest.name, hash: pkg.hash, layers: c.nLayers, dim: c.dim, vocab: c.vocabSize, maxSeq: c.maxSeq, precisions: [...WEIGHT_BITS] }],
  }));
  app.get('/metrics', async (_req, reply) => {
    reply.type(metrics.contentType);
    return metrics.text();
  });

  app.get('/v1/session', { websocket: true }, (socket: WebSocket, req) => {
    const refuse = (e: ProtocolError) => {
      metrics.countError(e.wireCode);
      const f = encodeFrame({ type: 'error', code: e.wireCode, message: e.message });
      metrics.bytesOut.inc(f.length);
      socket.send(f);
      socket.close(1008, e.wireCode);
    };
    if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) return refuse(protocolError('unauthorized', 'missing or wrong bearer token: pass --token'));
    if (opts.maxSessions && open >= opts.maxSessions) return refuse(protocolError('server_full', `server is at its limit of ${opts.maxSessions} sessions: try again later`));
    open++;
    metrics.sessionsOpen.inc();
    const channel = wsChannel(socket, {
      maxQueuedBytes: maxFrame,
      onError: (err) => metrics.countError('code' in err && err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'frame_too_large' : 'ws_protocol'),
    });
    void new CloudSession(channel, ctx)
      .run()
      .catch(() => channel.terminate())
      .finally(() => {
        open--;
        metrics.sessionsOpen.dec();
      });
  });

  app.addHook('onClose', async () => {
    store.releaseAll();
    await pool.close();
  });

  const port = opts.port ?? 0;
  const host = opts.host ?? '127.0.0.1';
  let address: string;
  try {
    address = await app.listen({ port, host });
  } catch (e) {
    await app.close();
    throw listenError(e, host, port) ?? e;
  }
  const url = address.replace(/^http/, 'ws');
  return { url, app, close: () => app.close() };
}

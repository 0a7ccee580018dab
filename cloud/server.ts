/**
 * The cloud server's HTTP and WebSocket wiring: fastify with GET /healthz, /v1/models and /metrics, and
 * the WebSocket endpoint /v1/session, where each connection becomes a frame channel served by a
 * `CloudSession` (session.ts). Back segments and batching live in segment-pool.ts, held sessions in
 * session-store.ts, metrics in metrics.ts. Protocol in docs/PROTOCOL.md.
 */
import type { RateLimits } from './rate-budget.js';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createSecureContext } from 'node:tls';
import type { Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { SplitLLMError } from '../shared/errors.js';
import { registerWebEdge, type WebEdgeOptions } from './web-edge.js';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import websocket from '@fastify/websocket';
import type { WebSocket } from 'ws';
import { listenError } from '../shared/listen.js';
import { wsChannel } from '../shared/transport/ws.js';
import { isSessionId } from '../shared/protocol/index.js';
import type { ModelPackage } from '../models/package.js';
import { WEIGHT_BITS } from '../quantization/weights/blockwise.js';
import type { CalibrationContexts } from '../quantization/activations/calibration.js';
import { calibrationContexts } from '../models/calibration-file.js';
import { SPLITLLM_SUBPROTOCOL, Tenants, upgradeCredential, type TenantSpec } from './auth.js';
import type { ErrorLabel } from './metrics.js';
import { CloudSession, cloudContext, type Identity } from './session.js';

export interface CloudOptions {
  port?: number;
  host?: string;
  /** bearer token required on the WebSocket upgrade (one tenant, "default") */
  token?: string;
  /** named tenants, each with its token and an optional session cap (instead of `token`) */
  tenants?: TenantSpec[];
  /** most sessions held at once, connected or waiting for a resume (default 64); a hello past it gets `busy` */
  maxSessions?: number;
  /** most WebSocket connections open at once (default 2 × maxSessions + 16); an upgrade past it gets HTTP 503 */
  maxConnections?: number;
  /**
   * most TCP connections (HTTP and WebSocket, before any request) open at once; past it a new one is
   * closed as it is accepted, so that silent sockets can never use up the process's file descriptors
   * (default: the smaller of 4 × maxConnections + 64 and the open-file limit less 64)
   */
  maxSockets?: number;
  /** most TCP connections from one remote address (default: no cap; behind a balancer every client has its address) */
  maxSocketsPerAddress?: number;
  /** a connection that sends neither hello nor resume within this long is closed (default 10 s) */
  helloTimeoutMs?: number;
  /** bytes of KV cache all sessions together may reserve (default half the machine's memory); a hello past it gets `busy` */
  kvBudgetBytes?: number;
  /** the back-layer precisions edges may ask for (default every supported one): only these are ever built */
  backBits?: readonly number[];
  blockSizes?: readonly number[];
  /** a back segment no session has used for this long is released (default 60 s) */
  segmentIdleMs?: number;
  /**
   * keep the KV caches of a back segment's sessions in one slab, so that batched decode steps read them
   * in place instead of gathering them (default false: after a burst of sessions the slab's process was
   * measured to keep ~36 MB more of empty V8 heap resident, which V8 returns only later)
   */
  kvSlab?: boolean;
  /** onnxruntime intra-op threads of each back segment (default: $SPLITLLM_THREADS, else the cores this process may use) */
  threads?: number;
  /** largest accepted frame in bytes */
  maxFrameBytes?: number;
  /** most positions (prompt + generated) one session may hold */
  sessionTokenLimit?: number;
  /** pino level of fastify's logger: 'info' logs every session, error and refused upgrade as a JSON line (default 'silent') */
  logLevel?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** where log lines go (default stdout) */
  logStream?: { write(line: string): unknown };
  /** a session idle this long (connected or dropped) is released; a dropped one can be resumed until then */
  idleMs?: number;
  /** frames and bytes per second one connection may send before it is slowed (default 1000 frames/s, 64 MiB/s, 2 s of burst) */
  rateLimits?: Partial<RateLimits>;
  /** errors answered on one connection before it is closed with too_many_errors (default 100) */
  maxErrors?: number;
  /** bytes of link-probe replies in flight across all connections (default 64 MiB) */
  probeBytesInFlight?: number;
  /** publish sessions by tenant name on /metrics (default false: whoever can scrape it would learn the names) */
  metricsTenants?: boolean;
  /** a session waits while more than this many bytes wait in its socket's send buffer (default 16 MiB) */
  maxBufferedBytes?: number;
  /** the model's calibration: contexts of calibrated codecs (`ts-tabq:cal=K`) the edge may send (default: the package's calibration.json) */
  calibration?: CalibrationContexts;
  /** an HTTP request (the upgrade included) must send its headers within this long (default 10 s): slow-header clients are cut */
  headersTimeoutMs?: number;
  /** serve https/wss with this certificate chain and private key (PEM) */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** serve the browser edge at /edge/ (cloud/web-edge.ts): a page that runs the front segment and connects back here; `plan` sets the page's defaults */
  webEdge?: boolean | Omit<WebEdgeOptions, 'calibration'>;
}

export interface CloudServer {
  url: string;
  app: FastifyInstance;
  /**
   * Stops taking connections (/readyz answers 503 at once, upgrades get 503 `draining`), closes
   * connections without a session, lets sessions finish for up to `timeoutMs`, tells the rest to move
   * (close code 1001), then closes the server.
   */
  drain(timeoutMs: number): Promise<{ idle: number; finished: number; moved: number }>;
  close(): Promise<void>;
}

/** The process's soft limit of open files (Linux /proc; 1024 where it cannot be read). */
function openFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : 1024;
  } catch {
    return 1024;
  }
}

export async function startCloud(pkg: ModelPackage, options: CloudOptions = {}): Promise<CloudServer> {
  const opts: CloudOptions = { ...options, calibration: options.calibration ?? calibrationContexts({}, pkg) };
  const c = pkg.config;
  const maxFrame = opts.maxFrameBytes ?? 64 * 1024 * 1024;
  const level = opts.logLevel ?? 'silent';
  const logger = level === 'silent' ? false : opts.logStream ? { level, stream: opts.logStream } : { level };
  let open = 0;
  const tenants = new Tenants(opts.tenants ?? (opts.token !== undefined ? [{ name: 'default', token: opts.token }] : []));

  const tls = opts.tls;
  if (tls) {
    try {
      createSecureContext({ cert: tls.cert, key: tls.key });
    } catch (e) {
      throw new SplitLLMError('E_BAD_CONFIG', `the TLS certificate and key do not load (${e instanceof Error ? e.message : String(e)}): give a PEM certificate chain and its PEM private key`);
    }
  }
  // Node's own limits on a request's headers, checked every second (slow-header connections are cut)
  const headersTimeout = opts.headersTimeoutMs ?? 10_000;
  const limits = { headersTimeout, requestTimeout: Math.max(30_000, headersTimeout + 1000), connectionsCheckingInterval: Math.min(1000, headersTimeout) };
  const app = Fastify({
    logger,
    // fastify sets the server's request timeout from its own option (0 = none, which also turns off Node's header check)
    requestTimeout: limits.requestTimeout,
    // the same fastify app on node:http, or node:https with TLS (https and wss on one port)
    serverFactory: (handler: (req: IncomingMessage, res: ServerResponse) => void) =>
      tls ? createHttpsServer({ cert: tls.cert, key: tls.key, ...limits }, handler) : createHttpServer(limits, handler),
  });
  const ctx = cloudContext(pkg, { ...opts, log: app.log });
  const { metrics, store, pool } = ctx;
  const maxConnections = opts.maxConnections ?? 2 * ctx.maxSessions + 16;
  // a tenant's connection slots: its own cap, else its session cap, else (with several tenants) three
  // quarters of the server's, so that one tenant's silent upgrades leave room for the others
  const tenantConnections = (who: Identity): number | undefined => who.maxConnections ?? who.maxSessions ?? (tenants.size > 1 ? maxConnections - Math.ceil(maxConnections / 4) : undefined);
  // raw sockets: a cap on all of them and, when asked, on each remote address, before any HTTP
  const maxSockets = opts.maxSockets ?? Math.max(16, Math.min(4 * maxConnections + 64, openFileLimit() - 64));
  app.server.maxConnections = maxSockets;
  const perAddress = new Map<string, number>();
  if (opts.maxSocketsPerAddress !== undefined) {
    const cap = opts.maxSocketsPerAddress;
    app.server.on('connection', (socket: Socket) => {
      const from = socket.remoteAddress ?? '';
      const n = (perAddress.get(from) ?? 0) + 1;
      if (n > cap) {
        metrics.countError('address_limit');
        socket.destroy();
        return;
      }
      perAddress.set(from, n);
      socket.once('close', () => {
        const left = (perAddress.get(from) ?? 1) - 1;
        if (left > 0) perAddress.set(from, left);
        else perAddress.delete(from);
      });
    });
  }
  app.server.on('drop', () => metrics.countError('socket_limit'));
  // a page offers its token as a subprotocol beside 'splitllm' (auth.ts): the server selects 'splitllm'
  await app.register(websocket, { options: { maxPayload: maxFrame, handleProtocols: (offered: Set<string>) => (offered.has(SPLITLLM_SUBPROTOCOL) ? SPLITLLM_SUBPROTOCOL : false) } });
  // an upgrade is served on the session route only: anywhere else (/healthz, /metrics, the page's routes, an
  // unknown path) it is answered 404 before any 101, so it never holds a WebSocket that no limit counts
  app.addHook('onRequest', async (req, reply) => {
    if (req.ws && req.routeOptions.url !== '/v1/session') {
      return reply.code(404).send({ error: { code: 'not_found', message: `WebSocket upgrades are served on /v1/session only, not on ${req.url.split('?')[0]}` } });
    }
  });
  let draining = false;
  const live = new Set<CloudSession>();
  // liveness: the process answers; readiness: it takes new sessions (not while draining)
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/livez', async () => ({ ok: true }));
  app.get('/readyz', async (_req, reply) => (draining ? reply.code(503).send({ ready: false, reason: 'draining' }) : { ready: true }));
  app.get('/v1/models', async () => ({
    models: [{ id: pkg.manifest.name, hash: pkg.hash, layers: c.nLayers, dim: c.dim, vocab: c.vocabSize, maxSeq: c.maxSeq, precisions: [...WEIGHT_BITS] }],
  }));
  if (opts.webEdge) {
    // with tokens, the model's description and its front segments need one too (the page sends it)
    const allowed = tenants.enabled ? (authorization: string | undefined) => tenants.identify(authorization) !== undefined : undefined;
    registerWebEdge(app, pkg, { calibration: opts.calibration?.calibration, ...(allowed ? { allowed } : {}), ...(typeof opts.webEdge === 'object' ? opts.webEdge : {}) });
  }
  app.get('/metrics', async (_req, reply) => {
    reply.type(metrics.contentType);
    return metrics.text();
  });

  // who each upgrade request is, decided before the upgrade
  const identities = new WeakMap<object, Identity>();
  const openByTenant = new Map<string, number>();
  const refuseUpgrade = (reply: FastifyReply, status: number, code: ErrorLabel, message: string) => {
    metrics.countError(code);
    if (status === 401) void reply.header('www-authenticate', 'Bearer realm="splitllm"');
    if (status === 503) void reply.header('retry-after', '1');
    return reply.code(status).send({ error: { code, message } });
  };
  app.get(
    '/v1/session',
    {
      websocket: true,
      // runs on the HTTP request, before any upgrade: a refused client never gets a 101
      preValidation: async (req, reply) => {
        let who: Identity = { tenant: 'default' };
        if (tenants.enabled) {
          const found = tenants.identify(upgradeCredential(req.headers.authorization, req.headers['sec-websocket-protocol']));
          if (!found) {
            req.log.warn({ remote: req.ip, code: 'unauthorized' }, 'refused upgrade: missing or wrong bearer token');
            return refuseUpgrade(reply, 401, 'unauthorized', 'missing or wrong bearer token');
          }
          who = found;
        }
        if (draining) return refuseUpgrade(reply, 503, 'draining', 'the server is shutting down: connect to another replica');
        if (open >= maxConnections) return refuseUpgrade(reply, 503, 'busy', `the server has its limit of ${maxConnections} connections open: retry shortly`);
        const slots = tenantConnections(who);
        if (slots !== undefined && (openByTenant.get(who.tenant) ?? 0) >= slots) {
          return refuseUpgrade(reply, 403, 'tenant_limit', `tenant ${who.tenant} has its limit of ${slots} connections open: end one first`);
        }
        // the edge-chosen session id (the balancer hashes on it): well formed, and not held by a live connection
        const ids = new URL(req.url, 'http://x').searchParams.getAll('session');
        if (ids.length > 0) {
          const id = ids[0]!;
          if (ids.length > 1 || !isSessionId(id)) {
            return refuseUpgrade(reply, 400, 'bad_session_id', 'the session parameter must be one id of 22 base64url characters (128 random bits): let the edge choose it');
          }
          if (store.get(id)?.attached?.open) return refuseUpgrade(reply, 409, 'session_in_use', 'this session is attached to another live connection: close that one first');
          who = { ...who, session: id };
        }
        identities.set(req.raw, who);
      },
    },
    (socket: WebSocket, req) => {
      const who = identities.get(req.raw) ?? { tenant: 'default' };
      open++;
      openByTenant.set(who.tenant, (openByTenant.get(who.tenant) ?? 0) + 1);
      metrics.connectionsOpen.inc();
      const channel = wsChannel(socket, {
        // past a few MiB of unread frames the socket stops reading (TCP backpressure), whatever the frames' size
        maxQueuedBytes: Math.min(maxFrame, 4 * 1024 * 1024),
        onError: (err) => metrics.countError('code' in err && err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'frame_too_large' : 'ws_protocol'),
      });
      const session = new CloudSession(channel, ctx, who);
      live.add(session);
      void session
        .run()
        .catch(() => channel.terminate())
        .finally(() => {
          live.delete(session);
          open--;
          openByTenant.set(who.tenant, (openByTenant.get(who.tenant) ?? 1) - 1);
          metrics.connectionsOpen.dec();
        });
    },
  );

  app.addHook('onClose', async () => {
    ctx.reclaimer.close();
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
  const url = (tls ? 'wss' : 'ws') + address.replace(/^https?/, '');
  const drain = async (timeoutMs: number) => {
    draining = true;
    const idle = [...live].filter((s) => !s.hasSession);
    for (const s of idle) s.move('draining');
    const started = live.size - idle.length;
    const deadline = Date.now() + timeoutMs;
    while (live.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    // connections that had no session when the drain began (a hello still waiting for its build) were closed as idle
    const moved = [...live].filter((s) => !idle.includes(s)).length;
    for (const s of live) s.move('draining: resume on another replica');
    for (let i = 0; i < 50 && live.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
    await app.close();
    return { idle: idle.length, finished: started - moved, moved };
  };
  return { url, app, drain, close: () => app.close() };
}

/**
 * The cloud server: fastify with a WebSocket endpoint (/v1/session) where each connection is one edge
 * session running the back segment [split, L) with its own KV cache, plus GET /healthz, /v1/models and
 * /metrics. Protocol in docs/PROTOCOL.md (shared/protocol). A bad message gets an `error` frame with a
 * stable code; errors of one session never disturb another.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import type { WebSocket } from 'ws';
import { SplitLLMError } from '../shared/errors.js';
import { decodeFrame, encodeFrame, PROTOCOL_VERSION, protocolError, wireCodeOf, type Frame, type Hello, type Message, type TokenMsg } from '../shared/protocol/messages.js';
import type { ModelPackage } from '../models/package.js';
import { buildSegment, type BuiltSegment } from '../models/onnx/segment.js';
import { linearFor } from '../models/onnx/linear.js';
import { checkWeightBits, WEIGHT_BITS } from '../quantization/weights/blockwise.js';
import { Sampler } from '../models/runtime/sampler.js';
import { SegmentRuntime, type SegmentOutput } from '../models/runtime/segment-runtime.js';
import type { InferenceSession } from 'onnxruntime-node';
import type { CalibrationContexts } from '../quantization/activations/calibration.js';
import { createCodec, decodeMessage } from '../quantization/activations/registry.js';
import { decodeLayerKv, encodeLayerKv } from '../quantization/kv/stream.js';

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

interface PendingStep {
  runtime: SegmentRuntime;
  x: Float32Array;
  resolve: (o: SegmentOutput) => void;
  reject: (e: unknown) => void;
}

interface SessionState {
  id: string;
  hello: Hello;
  runtime: SegmentRuntime;
  sampler: Sampler;
  prefilled: boolean;
  generated: number;
  pendingKv: Map<number, ReturnType<typeof decodeLayerKv>>;
  lastToken?: TokenMsg;
  socket?: WebSocket;
  timer?: ReturnType<typeof setTimeout>;
}

export interface CloudServer {
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

class Metrics {
  sessionsOpen = 0;
  sessionsTotal = 0;
  tokens = 0;
  bytesIn = 0;
  bytesOut = 0;
  errors = new Map<string, number>();
  resumes = 0;
  expired = 0;
  batches = 0;
  batchedSteps = 0;
  maxBatch = 0;
  stepMs: number[] = [];
  static BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000];
  text(): string {
    const lines = [
      '# TYPE splitllm_sessions_open gauge',
      `splitllm_sessions_open ${this.sessionsOpen}`,
      '# TYPE splitllm_sessions_total counter',
      `splitllm_sessions_total ${this.sessionsTotal}`,
      '# TYPE splitllm_tokens_total counter',
      `splitllm_tokens_total ${this.tokens}`,
      '# TYPE splitllm_bytes_in_total counter',
      `splitllm_bytes_in_total ${this.bytesIn}`,
      '# TYPE splitllm_bytes_out_total counter',
      `splitllm_bytes_out_total ${this.bytesOut}`,
      '# TYPE splitllm_resumes_total counter',
      `splitllm_resumes_total ${this.resumes}`,
      '# TYPE splitllm_sessions_expired_total counter',
      `splitllm_sessions_expired_total ${this.expired}`,
      '# TYPE splitllm_step_batches_total counter',
      `splitllm_step_batches_total ${this.batches}`,
      '# TYPE splitllm_batched_steps_total counter',
      `splitllm_batched_steps_total ${this.batchedSteps}`,
      '# TYPE splitllm_step_batch_max gauge',
      `splitllm_step_batch_max ${this.maxBatch}`,
      '# TYPE splitllm_errors_total counter',
      ...[...this.errors].map(([code, n]) => `splitllm_errors_total{code="${code}"} ${n}`),
      '# TYPE splitllm_step_ms histogram',
    ];
    for (const b of Metrics.BUCKETS) lines.push(`splitllm_step_ms_bucket{le="${b}"} ${this.stepMs.filter((v) => v <= b).length}`);
    lines.push(`splitllm_step_ms_bucket{le="+Inf"} ${this.stepMs.length}`);
    lines.push(`splitllm_step_ms_sum ${this.stepMs.reduce((a, b) => a + b, 0)}`);
    lines.push(`splitllm_step_ms_count ${this.stepMs.length}`);
    return lines.join('\n') + '\n';
  }
}

export async function startCloud(pkg: ModelPackage, opts: CloudOptions = {}): Promise<CloudServer> {
  const c = pkg.config;
  const maxFrame = opts.maxFrameBytes ?? 64 * 1024 * 1024;
  const tokenLimit = Math.min(opts.sessionTokenLimit ?? c.maxSeq, c.maxSeq);
  const metrics = new Metrics();
  const idleMs = opts.idleMs ?? 60_000;
  const sessions = new Map<string, SessionState>();
  /**
   * Back segments [split, L) at a weight precision: built once per (split, bits, block), with one shared
   * onnxruntime session (weights held once); each client session owns only its KV cache.
   */
  const segments = new Map<string, { built: BuiltSegment; session: Promise<InferenceSession>; queue: PendingStep[]; scheduled: boolean }>();
  const segmentFor = (split: number, bits = 32, blockSize = 32) => {
    const key = `${split}/${bits}/${blockSize}`;
    let e = segments.get(key);
    if (!e) {
      const lin = linearFor(bits, blockSize);
      const built = buildSegment(c, pkg.weights, split, c.nLayers, { embed: false, head: true, keyPositions: true, linearFor: () => lin });
      e = { built, session: SegmentRuntime.openSession(built), queue: [], scheduled: false };
      segments.set(key, e);
    }
    return e;
  };
  const backRuntime = async (split: number, bits?: number, blockSize?: number): Promise<SegmentRuntime> => {
    const e = segmentFor(split, bits, blockSize);
    return SegmentRuntime.withSession(c, e.built, await e.session);
  };
  /**
   * Decode steps of sessions on the same back segment that arrive together run as one batch: a step
   * waits for the current event-loop turn to end, then every step queued by then goes in one run.
   */
  const runStep = (split: number, bits: number | undefined, blockSize: number | undefined, runtime: SegmentRuntime, x: Float32Array): Promise<SegmentOutput> => {
    const e = segmentFor(split, bits, blockSize);
    return new Promise((resolve, reject) => {
      e.queue.push({ runtime, x, resolve, reject });
      if (e.scheduled) return;
      e.scheduled = true;
      setImmediate(() => {
        e.scheduled = false;
        const batch = e.queue.splice(0);
        metrics.batches++;
        metrics.batchedSteps += batch.length;
        metrics.maxBatch = Math.max(metrics.maxBatch, batch.length);
        const run =
          batch.length === 1
            ? batch[0]!.runtime.run(batch[0]!.x, 1).then((o) => [o])
            : SegmentRuntime.runBatch(batch.map((p) => p.runtime), batch.map((p) => p.x));
        run.then(
          (outs) => batch.forEach((p, i) => p.resolve(outs[i]!)),
          (err) => batch.forEach((p) => p.reject(err)),
        );
      });
    });
  };

  const app = Fastify({ logger: opts.log ?? false });
  await app.register(websocket, { options: { maxPayload: maxFrame } });
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/v1/models', async () => ({
    models: [{ id: pkg.manifest.name, hash: pkg.hash, layers: c.nLayers, dim: c.dim, vocab: c.vocabSize, maxSeq: c.maxSeq, precisions: [...WEIGHT_BITS] }],
  }));
  app.get('/metrics', async (_req, reply) => {
    reply.type('text/plain; version=0.0.4');
    return metrics.text();
  });

  app.get('/v1/session', { websocket: true }, (socket: WebSocket, req) => {
    const countError = (code: string) => metrics.errors.set(code, (metrics.errors.get(code) ?? 0) + 1);
    const send = (m: Message, payload?: Uint8Array) => {
      const f = encodeFrame(m, payload);
      metrics.bytesOut += f.length;
      socket.send(f);
    };
    const fail = (e: unknown, close: boolean) => {
      const code = e instanceof SplitLLMError ? wireCodeOf(e) : 'internal';
      countError(code);
      send({ type: 'error', code, message: e instanceof Error ? e.message : String(e) });
      if (close) socket.close(1008, code);
    };
    if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) {
      fail(protocolError('unauthorized', 'missing or wrong bearer token: pass --token'), true);
      return;
    }
    if (opts.maxSessions && metrics.sessionsOpen >= opts.maxSessions) {
      fail(protocolError('internal', `server is at its limit of ${opts.maxSessions} sessions: try again later`), true);
      return;
    }
    let st: SessionState | undefined;
    let chain = Promise.resolve();
    const attach = (state: SessionState) => {
      st = state;
      state.socket = socket;
      clearTimeout(state.timer);
      touch(state);
    };
    const touch = (state: SessionState) => {
      clearTimeout(state.timer);
      state.timer = setTimeout(() => expire(state), idleMs);
      state.timer.unref?.();
    };

    const handle = async (frame: Frame) => {
      const m = frame.header;
      if (st) touch(st);
      if (m.type === 'probe') {
        const n = Math.max(0, Math.min(8 * 1024 * 1024, Math.floor(Number(m.reply) || 0)));
        send({ type: 'probe', id: m.id, reply: 0 }, new Uint8Array(n));
        return;
      }
      if (m.type === 'hello' || m.type === 'resume') {
        if (st) throw protocolError('bad_hello', `this connection already has session ${st.id}`);
        if (m.type === 'resume') {
          const found = sessions.get(m.session);
          if (!found) throw Object.assign(protocolError('unknown_session', `session ${String(m.session).slice(0, 8)}… is unknown or expired: start a new one`), { fatal: true });
          if (found.socket && found.socket.readyState === found.socket.OPEN) throw Object.assign(protocolError('bad_hello', 'session is attached to another connection'), { fatal: true });
          attach(found);
          metrics.resumes++;
          send({ type: 'ready', session: found.id, layers: c.nLayers, split: found.hello.split, maxSeq: tokenLimit, length: found.runtime.length });
          // the edge fed `position` tokens; when the cloud holds as many, the last answer may have been lost
          if (found.lastToken && found.runtime.length === m.position) send(found.lastToken);
          return;
        }
        if (m.version !== PROTOCOL_VERSION) throw Object.assign(protocolError('bad_version', `protocol version ${m.version} is not served (this server speaks ${PROTOCOL_VERSION}): update the edge agent`), { fatal: true });
        if (m.modelHash !== pkg.hash) throw Object.assign(protocolError('bad_model', `model ${String(m.modelHash).slice(0, 12)}… is not the served model ${pkg.hash.slice(0, 12)}…: run the edge with the same model`), { fatal: true });
        if (!Number.isInteger(m.split) || m.split < 0 || m.split > c.nLayers) throw Object.assign(protocolError('bad_hello', `split ${m.split} is outside 0..${c.nLayers}`), { fatal: true });
        let sampler: Sampler;
        try {
          createCodec(m.codec, opts.calibration);
          sampler = new Sampler(m.sampling ?? {});
          checkWeightBits(m.backBits ?? 32, m.blockSize ?? 32);
        } catch (e) {
          throw Object.assign(protocolError('bad_hello', (e as Error).message), { fatal: true });
        }
        const runtime = await backRuntime(m.split, m.backBits, m.blockSize);
        const state: SessionState = { id: randomUUID(), hello: m, runtime, sampler, prefilled: false, generated: 0, pendingKv: new Map() };
        sessions.set(state.id, state);
        metrics.sessionsTotal++;
        attach(state);
        send({ type: 'ready', session: state.id, layers: c.nLayers, split: m.split, maxSeq: tokenLimit, length: 0 });
        return;
      }
      if (m.type === 'close') {
        if (st) release(st);
        socket.close(1000, 'bye');
        return;
      }
      if (!st) throw protocolError('unknown_session', 'send hello (or resume) before anything else');
      const state = st;
      if (m.type === 'kv') {
        state.pendingKv.set(m.layer, decodeLayerKv(frame.payload, m.layer, m.length, c.nKvHeads, c.headDim));
        return;
      }
      if (m.type === 'resplit') {
        const from = state.hello.split;
        const to = m.split;
        if (!Number.isInteger(to) || to < 0 || to > c.nLayers) throw protocolError('bad_resplit', `split ${to} is outside 0..${c.nLayers}`);
        let kvCodec;
        try {
          kvCodec = createCodec(m.kvCodec);
        } catch (e) {
          throw protocolError('bad_resplit', (e as Error).message);
        }
        const len = state.runtime.length;
        const entries = state.runtime.exportKV(Math.max(from, to), c.nLayers);
        if (to < from) {
          // the edge gave us layers [to, from): their KV came first as kv frames
          for (let l = to; l < from; l++) {
            const kv = state.pendingKv.get(l);
            if (!kv || kv.length !== len) throw protocolError('bad_resplit', `KV of layer ${l} at length ${len} is missing before resplit to ${to}`);
            entries.push(kv);
          }
        } else {
          // the edge takes layers [from, to): stream their KV
          for (const kv of state.runtime.exportKV(from, to)) {
            send({ type: 'kv', layer: kv.layer, length: kv.length }, encodeLayerKv(kvCodec, kv, c.nKvHeads, c.headDim));
            await drained(socket);
          }
        }
        state.pendingKv.clear();
        const next = await backRuntime(to, state.hello.backBits, state.hello.blockSize);
        next.importKV(entries);
        await state.runtime.release();
        state.runtime = next;
        state.hello = { ...state.hello, split: to };
        send({ type: 'ready', session: state.id, layers: c.nLayers, split: to, maxSeq: tokenLimit, length: len });
        return;
      }
      if (m.type !== 'prefill' && m.type !== 'step') throw protocolError('unknown_type', `a client does not send "${m.type}"`);
      if (m.type === 'step' && !state.prefilled) throw protocolError('step_before_prefill', 'step before prefill: send the prompt first');
      const t0 = performance.now();
      let x: Float32Array;
      let tokens: number;
      try {
        const d = decodeMessage(frame.payload, { contexts: opts.calibration?.contexts });
        if (d.dim !== c.dim) throw protocolError('bad_tensor', `hidden state has dim ${d.dim}, the model's is ${c.dim}`);
        x = d.x;
        tokens = d.tokens;
      } catch (e) {
        if (e instanceof SplitLLMError && e.code === 'E_PROTOCOL') throw e;
        throw protocolError((e as { nonFinite?: boolean }).nonFinite ? 'nan_tensor' : 'bad_tensor', (e as Error).message);
      }
      if (m.type === 'prefill' && tokens !== m.tokens) throw protocolError('bad_tensor', `prefill says ${m.tokens} tokens, its tensor holds ${tokens}`);
      if (m.type === 'step' && tokens !== 1) throw protocolError('bad_tensor', `a step carries one token, this one ${tokens}`);
      if (state.runtime.length + tokens > tokenLimit) throw protocolError('token_limit', `session would hold ${state.runtime.length + tokens} positions, over its limit of ${tokenLimit}`);
      const out = m.type === 'step' ? await runStep(state.hello.split, state.hello.backBits, state.hello.blockSize, state.runtime, x) : await state.runtime.run(x, tokens);
      state.prefilled = true;
      const id = state.sampler.sample(out.data, (tokens - 1) * c.vocabSize, c.vocabSize);
      const stop = new Set(state.hello.stopIds ?? [c.eosId, c.bosId]);
      const isStop = stop.has(id);
      if (!isStop) state.generated++;
      const done = isStop || state.generated >= state.hello.maxTokens || state.runtime.length + 1 > tokenLimit;
      const cloudMs = performance.now() - t0;
      metrics.stepMs.push(cloudMs);
      if (!isStop) metrics.tokens++;
      state.lastToken = { type: 'token', id: isStop ? -1 : id, done, cloudMs };
      send(state.lastToken);
    };

    metrics.sessionsOpen++;
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      metrics.bytesIn += data.length;
      chain = chain.then(async () => {
        try {
          if (!isBinary) throw protocolError('bad_frame', 'text frames are not part of the protocol: send binary frames');
          await handle(decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)));
          await drained(socket); // backpressure: this session reads its next message once its output has gone out
        } catch (e) {
          fail(e, !!(e as { fatal?: boolean }).fatal);
        }
      });
    });
    socket.on('close', () => {
      metrics.sessionsOpen--;
      // a dropped connection keeps its session until it expires: the edge may resume it
      if (st && st.socket === socket) st.socket = undefined;
    });
    socket.on('error', () => countError('frame_too_large'));
  });

  const maxBuffered = opts.maxBufferedBytes ?? 16 * 1024 * 1024;
  /** Waits until the socket's send buffer is under the limit; a peer that does not read for 30 s is dropped. */
  const drained = async (sock: WebSocket): Promise<void> => {
    const t0 = Date.now();
    while (sock.bufferedAmount > maxBuffered && sock.readyState === sock.OPEN) {
      if (Date.now() - t0 > 30_000) {
        sock.terminate();
        throw protocolError('internal', 'the edge stopped reading its socket: connection dropped');
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  };

  const release = (state: SessionState) => {
    clearTimeout(state.timer);
    if (sessions.delete(state.id)) void state.runtime.release();
  };
  const expire = (state: SessionState) => {
    metrics.expired++;
    const sock = state.socket;
    release(state);
    if (sock && sock.readyState === sock.OPEN) {
      sock.send(encodeFrame({ type: 'error', code: 'expired_session', message: `session idle for ${idleMs} ms: start a new one` }));
      sock.close(1008, 'expired');
    }
  };
  app.addHook('onClose', async () => {
    for (const state of [...sessions.values()]) release(state);
    for (const e of segments.values()) await (await e.session).release();
  });

  const address = await app.listen({ port: opts.port ?? 0, host: opts.host ?? '127.0.0.1' });
  const url = address.replace(/^http/, 'ws');
  return { url, app, close: () => app.close() };
}

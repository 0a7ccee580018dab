/**
 * One edge connection on the cloud: a state machine over parsed messages and a frame channel
 * (docs/PROTOCOL.md). It knows nothing of HTTP or WebSockets: the server hands it a channel, tests an
 * in-memory one. Messages are handled one at a time, the next read only once the answer has gone out
 * (backpressure). An error is answered on this connection only, with its wire code; codes that end the
 * session close the connection.
 */
import { SplitLLMError } from '../shared/errors.js';
import { DRAFT_Q_SCALE, encodeFrame, helloPrecision, newSessionId, parseEdgeFrame, ProtocolError, protocolError, type EdgeMessage, type Frame, type Hello, type Message, type Draft, type Resplit, type Resume, type Verified } from '../shared/protocol/index.js';
import type { FrameChannel } from '../shared/transport/channel.js';
import type { ModelPackage } from '../models/package.js';
import { Sampler } from '../models/runtime/sampler.js';
import type { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { denseDistribution, verifyDrafts } from '../models/runtime/verify.js';
import { checkWeightBits } from '../quantization/weights/blockwise.js';
import { BLOCK_SIZES, isBlockwise, WEIGHT_BITS } from '../shared/precision.js';
import type { CalibrationContexts } from '../quantization/activations/calibration.js';
import { createCodec, decodeMessage } from '../quantization/activations/registry.js';
import { decodeLayerKv, encodeLayerKv } from '../quantization/kv/stream.js';
import { randomBytes } from 'node:crypto';
import { sameSecret } from '../shared/secret.js';
import { totalmem } from 'node:os';
import { BackSegmentPool, type BackKey } from './segment-pool.js';
import { CloudMetrics } from './metrics.js';
import { SessionStore, type Attachment, type HeldSession } from './session-store.js';
import { MemoryReclaimer } from './reclaim.js';
import { DEFAULT_RATE_LIMITS, RateBudget, type RateLimits } from './rate-budget.js';
import { kvBytesPerToken } from '../quantization/weights/memory.js';
import { ProbeBudget } from './probe-budget.js';

/** What every connection of one server shares. */
export interface CloudContext {
  pkg: ModelPackage;
  pool: BackSegmentPool;
  store: SessionStore;
  metrics: CloudMetrics;
  /** runs a major GC after sessions' KV caches were released (closed with the server) */
  reclaimer: MemoryReclaimer;
  calibration?: CalibrationContexts;
  /** most positions (prompt + generated) one session may hold */
  tokenLimit: number;
  /** a session waits while more than this many bytes wait to be sent on its connection */
  maxBufferedBytes: number;
  /** a peer that does not read for this long is dropped */
  drainTimeoutMs: number;
  /** most sessions held at once (connected or waiting for a resume); a hello past it gets `busy` */
  maxSessions: number;
  /** bytes of KV cache all sessions together may reserve (each reserves its position limit at its split) */
  kvBudgetBytes: number;
  /** the precisions of the back segment a hello may ask for: only these are ever built */
  backPrecisions: { bits: readonly number[]; blockSizes: readonly number[] };
  /** a connection that sends neither hello nor resume within this long is closed (`hello_timeout`) */
  helloTimeoutMs: number;
  /** what one connection may send per second before its session loop slows it (rate-budget.ts) */
  rateLimits: RateLimits;
  /** errors answered on one connection before it is closed (`too_many_errors`) */
  maxErrors: number;
  /** probe replies in flight across all connections (probe-budget.ts) */
  probes: ProbeBudget;
  newSessionId(): string;
  /** fastify's logger (pino) or a silent one */
  log: SessionLog;
}

/** The part of pino the sessions use: one JSON line per session open/close and per error. */
export interface SessionLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

const SILENT: SessionLog = { info: () => undefined, warn: () => undefined };

/**
 * Who opened a connection: the tenant of its token (`default` without auth), that tenant's session cap,
 * and the session id the edge chose in the upgrade URL (`?session=ID`; without one, a hello gets a
 * server-chosen id).
 */
export interface Identity {
  tenant: string;
  maxSessions?: number;
  /** connections the tenant may hold open (tenants file; the server derives a default) */
  maxConnections?: number;
  session?: string;
}


/** Probe replies one connection may ask for in all (a link measurement needs a few MiB): bounds amplification. */
export const PROBE_BUDGET_BYTES = 64 * 1024 * 1024;
/** Largest |value| accepted in a hidden state: past it float32 sums of squares overflow inside the model. */
export const HIDDEN_LIMIT = 1e15;

/** Default KV budget: half of this machine's memory. */
export function defaultKvBudget(): number {
  return Math.floor(totalmem() / 2);
}

/**
 * KV bytes a session at `split` reserves: its back layers' float32 keys and values at its position
 * limit — what it may grow to, so that admitted sessions never outgrow the budget later.
 */
export function kvReservation(c: { nLayers: number; nKvHeads: number; headDim: number }, split: number, positions: number): number {
  return kvBytesPerToken(c, c.nLayers - split) * positions;
}

/** KV bytes all sessions of `store` reserve now (each for the positions it asked for), `except` one (a session about to change its split). */
export function reservedKvBytes(store: SessionStore, c: { nLayers: number; nKvHeads: number; headDim: number }, except?: HeldSession): number {
  let n = 0;
  for (const h of store.all()) if (h !== except) n += kvReservation(c, h.hello.split, h.positions);
  return n;
}

/** Errors answered on one connection before it is closed: a working edge meets a few, a fuzzer or a flood thousands. */
export const DEFAULT_MAX_ERRORS = 100;
/** Error lines logged per connection; the rest are counted and summed up when the connection ends. */
export const LOGGED_ERRORS_PER_CONNECTION = 5;

/** Default cap of held sessions (each holds a KV cache of up to the model's context). */
export const DEFAULT_MAX_SESSIONS = 64;

/** The shared state of one server, with its defaults: 60 s idle expiry, 16 MiB send buffer, 30 s drain timeout, 64 sessions, 10 s to say hello. */
export function cloudContext(
  pkg: ModelPackage,
  opts: {
    idleMs?: number;
    sessionTokenLimit?: number;
    maxBufferedBytes?: number;
    calibration?: CalibrationContexts;
    newSessionId?: () => string;
    maxSessions?: number;
    helloTimeoutMs?: number;
    log?: SessionLog;
    kvBudgetBytes?: number;
    backBits?: readonly number[];
    blockSizes?: readonly number[];
    segmentIdleMs?: number;
    threads?: number;
    kvSlab?: boolean;
    rateLimits?: Partial<RateLimits>;
    maxErrors?: number;
    probeBytesInFlight?: number;
    metricsTenants?: boolean;
  } = {},
): CloudContext {
  const c = pkg.config;
  const metrics = new CloudMetrics(opts.metricsTenants);
  const log = opts.log ?? SILENT;
  const reclaimer = new MemoryReclaimer({
    onCollect: (releasedBytes, ms) => {
      metrics.reclaims.inc();
      log.info({ event: 'memory_reclaim', releasedKvBytes: releasedBytes, gcMs: Number(ms.toFixed(1)) }, 'collected the memory of released sessions');
    },
  });
  const store = new SessionStore(opts.idleMs ?? 60_000, {
    // the KV bytes a released session held: its back layers at the positions it had
    onRelease: (s, remaining) => reclaimer.released(kvReservation(c, s.hello.split, s.runtime.length), remaining),
    onExpire: (s) => {
      metrics.expired.inc();
      log.info({ event: 'session_close', reason: 'expired', session: s.id, tenant: s.tenant, tokens: s.generated }, 'session expired');
    },
    onChange: (n) => metrics.sessionsHeld.set(n),
  });
  const tokenLimit = Math.min(opts.sessionTokenLimit ?? c.maxSeq, c.maxSeq);
  const kvBudgetBytes = opts.kvBudgetBytes ?? defaultKvBudget();
  metrics.kvBudget.set(kvBudgetBytes);
  metrics.watch(() => ({ ...store.counts(), kvReserved: reservedKvBytes(store, c) }));
  return {
    pkg,
    metrics,
    store,
    reclaimer,
    pool: new BackSegmentPool(
      pkg,
      (n, waits) => {
        metrics.batch(n);
        for (const w of waits) metrics.queueWait.observe(w);
      },
      opts.segmentIdleMs,
      opts.threads,
      undefined,
      opts.kvSlab,
      {
        warn: (message) => log.warn({ event: 'segment_cache' }, message),
        building: (dir) => log.info({ event: 'segment_build', cached: dir !== undefined }, 'building a back segment (the hello that asked for it waits)'),
        progress: throttled(10_000, (done, total, what) => log.info({ event: 'segment_build_progress', layer: done, layers: total }, `building ${what}: layer ${done}/${total}`)),
      },
    ),
    calibration: opts.calibration,
    tokenLimit,
    maxBufferedBytes: opts.maxBufferedBytes ?? 16 * 1024 * 1024,
    drainTimeoutMs: 30_000,
    maxSessions: opts.maxSessions ?? DEFAULT_MAX_SESSIONS,
    kvBudgetBytes,
    backPrecisions: { bits: opts.backBits ?? WEIGHT_BITS, blockSizes: opts.blockSizes ?? BLOCK_SIZES },
    helloTimeoutMs: opts.helloTimeoutMs ?? 10_000,
    rateLimits: {
      framesPerSecond: opts.rateLimits?.framesPerSecond ?? DEFAULT_RATE_LIMITS.framesPerSecond,
      bytesPerSecond: opts.rateLimits?.bytesPerSecond ?? DEFAULT_RATE_LIMITS.bytesPerSecond,
      burstSeconds: opts.rateLimits?.burstSeconds ?? DEFAULT_RATE_LIMITS.burstSeconds,
    },
    maxErrors: opts.maxErrors ?? DEFAULT_MAX_ERRORS,
    probes: new ProbeBudget(opts.probeBytesInFlight),
    newSessionId: opts.newSessionId ?? newSessionId,
    log,
  };
}

/** `f` at most once every `ms` (and always for the last of a run: done = total). */
function throttled(ms: number, f: (done: number, total: number, what: string) => void): (done: number, total: number, what: string) => void {
  let last = 0;
  return (done, total, what) => {
    const now = Date.now();
    if (done < total && now - last < ms) return;
    last = now;
    f(done, total, what);
  };
}

/** Finite but huge values would overflow inside the model and end a generation silently: `bad_tensor` instead. */
function refuseHuge(x: Float32Array, what: string): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    // the message names where, never the value: the cloud's errors and logs carry no hidden-state values
    if (v > HIDDEN_LIMIT || v < -HIDDEN_LIMIT) throw protocolError('bad_tensor', `${what} holds a value past ±${HIDDEN_LIMIT.toExponential(0)} at index ${i}: send the front segment's real values`);
  }
}

/** A codec or KV error as the wire code the edge gets: NaN/Inf is `nan_tensor`, anything else `bad_tensor`. */
export function tensorError(e: unknown): ProtocolError {
  if (e instanceof ProtocolError) return e;
  if (e instanceof SplitLLMError) return new ProtocolError(e.code === 'E_CODEC_NONFINITE' ? 'nan_tensor' : 'bad_tensor', e.message);
  throw e;
}

export class CloudSession implements Attachment {
  private held: HeldSession | undefined;
  private closing = false;
  private readonly startedAt = performance.now();
  private probeBytes = 0;
  /** errors answered on this connection, and those not logged */
  private errors = 0;
  private unlogged = 0;
  private readonly budget: RateBudget;

  constructor(
    private readonly channel: FrameChannel,
    private readonly ctx: CloudContext,
    private readonly who: Identity = { tenant: 'default' },
  ) {
    this.budget = new RateBudget(ctx.rateLimits);
  }

  /** a connection that never says hello (or resume) would hold its slot forever: cleared when one arrives */
  private helloTimer: ReturnType<typeof setTimeout> | undefined;

  /** Serves the connection until it closes. */
  private armHelloTimer(): void {
    clearTimeout(this.helloTimer);
    this.helloTimer = setTimeout(() => {
      if (!this.held && !this.closing) this.fail(protocolError('hello_timeout', `no hello or resume within ${this.ctx.helloTimeoutMs} ms: connect when there is something to send`));
    }, this.ctx.helloTimeoutMs);
    this.helloTimer.unref?.();
  }

  async run(): Promise<void> {
    this.armHelloTimer();
    try {
      await this.serve();
    } finally {
      clearTimeout(this.helloTimer);
    }
  }

  private async serve(): Promise<void> {
    for (;;) {
      const ev = await this.channel.next();
      if (ev.kind === 'close') break;
      const bytes = ev.kind === 'binary' ? ev.data.length : ev.length;
      this.ctx.metrics.bytesIn.inc(bytes);
      if (this.closing) continue;
      // past its frame or byte budget the connection waits (its frames stay in the bounded receive
      // queue); within it, the loop still lets the event loop run between frames, so that queued frames
      // of one connection never starve the others, /healthz or the timers. The frames a peer that is gone
      // left queued run unthrottled (a step that arrived before a drop still runs, for its resume)
      const wait = this.channel.open ? this.budget.charge(bytes) : 0;
      if (wait > 0) {
        this.ctx.metrics.throttled.inc(wait / 1000);
        await new Promise((r) => setTimeout(r, wait));
      } else await new Promise((r) => setImmediate(r));
      if (this.closing) continue;
      try {
        if (ev.kind === 'text') throw protocolError('bad_frame', 'text frames are not part of the protocol: send binary frames');
        const frame = parseEdgeFrame(ev.data);
        if (this.held) this.ctx.store.touch(this.held);
        await this.handle(frame);
        await this.drained();
      } catch (e) {
        this.fail(e);
      }
    }
    if (this.unlogged > 0) this.ctx.log.warn({ event: 'errors_not_logged', tenant: this.who.tenant, session: this.held?.id, count: this.unlogged }, `${this.unlogged} more errors on this connection were counted (splitllm_errors_total), not logged`);
    // a dropped connection keeps its session until it expires: the edge may resume it
    const s = this.held;
    if (s?.attached === this) {
      s.attached = undefined;
      this.ctx.log.info({ event: 'session_detached', ...this.facts(s) }, 'connection closed; session held for a resume');
    }
  }

  /** Attachment: the store released this connection's session for idleness. */
  expired(idleMs: number): void {
    this.held = undefined;
    this.fail(protocolError('expired_session', `session idle for ${idleMs} ms: start a new one`));
  }
  /** whether this connection has a session (a hello or resume went through) */
  get hasSession(): boolean {
    return this.held !== undefined;
  }

  /** Tells the edge to go elsewhere (close code 1001, going away): its session stays resumable until it expires. */
  move(reason: string): void {
    if (this.closing) return;
    this.end(1001, reason);
  }

  /** Attachment: whether a resume elsewhere would take the session from a live connection. */
  get open(): boolean {
    return this.channel.open && !this.closing;
  }

  private send(m: Message, payload?: Uint8Array): void {
    const f = encodeFrame(m, payload);
    this.ctx.metrics.bytesOut.inc(f.length);
    this.channel.send(f);
  }

  /** What a log line says of a session: never its resume secret. */
  private facts(s: HeldSession): Record<string, unknown> {
    return {
      session: s.id,
      tenant: s.tenant,
      split: s.hello.split,
      ...helloPrecision(s.hello),
      codec: s.hello.codec,
      tokens: s.generated,
      bytesIn: this.channel.bytesIn,
      bytesOut: this.channel.bytesOut,
      seconds: Number(((performance.now() - this.startedAt) / 1000).toFixed(3)),
    };
  }

  /** Answers an error with its wire code; codes that end the session close the connection. */
  fail(e: unknown): void {
    // a connection already told to go (drained, moved) is not told more: its hello's build was cancelled with the server
    if (this.closing) return;
    let pe = e instanceof ProtocolError ? e : new ProtocolError('internal', e instanceof Error ? e.message : String(e));
    if (++this.errors >= this.ctx.maxErrors && !pe.closes) {
      pe = protocolError('too_many_errors', `${this.errors} errors on this connection (the last: ${pe.wireCode}: ${pe.message}): it is closed; fix the client before it reconnects`);
    }
    this.ctx.metrics.countError(pe.wireCode);
    // a few lines per connection: a client that sends garbage in a loop cannot fill the disk with them
    if (this.errors <= LOGGED_ERRORS_PER_CONNECTION || pe.closes) this.ctx.log.warn({ event: 'error', code: pe.wireCode, session: this.held?.id, tenant: this.who.tenant, closes: pe.closes }, pe.message);
    else this.unlogged++;
    this.send({ type: 'error', code: pe.wireCode, message: pe.message });
    if (pe.closes) this.end(1008, pe.wireCode);
  }

  private end(code: number, reason: string): void {
    this.closing = true;
    this.channel.close(code, reason);
  }

  private async drained(maxBytes = this.ctx.maxBufferedBytes): Promise<void> {
    if (await this.channel.drain(maxBytes, this.ctx.drainTimeoutMs)) return;
    this.closing = true;
    this.channel.terminate();
  }

  private attach(s: HeldSession): void {
    this.held = s;
    s.attached = this;
  }

  private async handle(frame: Frame<EdgeMessage>): Promise<void> {
    const m = frame.header;
    switch (m.type) {
      case 'probe':
        this.probeBytes += m.reply + frame.payload.length;
        if (this.probeBytes > PROBE_BUDGET_BYTES) throw protocolError('bad_message', `probes on this connection passed ${PROBE_BUDGET_BYTES} bytes: open a new connection to measure again`, { closes: true });
        {
          // the reply waits for its share of the server's probe budget, which comes back once it has left
          const { probes, metrics } = this.ctx;
          const share = await probes.take(m.reply);
          metrics.probeBytes.set(probes.inFlight);
          try {
            this.send({ type: 'probe', id: m.id, reply: 0 }, new Uint8Array(m.reply));
            if (share > 0) await this.drained(0);
          } finally {
            probes.give(share);
            metrics.probeBytes.set(probes.inFlight);
          }
        }
        return;
      case 'hello':
      case 'resume':
        // the hello came: what follows (a back segment built for it, minutes at scale) is not the client's
        // delay; a refused one starts the wait again
        clearTimeout(this.helloTimer);
        try {
          return await (m.type === 'hello' ? this.hello(m) : this.resume(m));
        } finally {
          if (!this.held && !this.closing) this.armHelloTimer();
        }
      case 'close':
        this.handleGoodbye();
        return;
    }
    const s = this.held;
    if (!s) throw protocolError('unknown_session', 'send hello (or resume) before anything else');
    switch (m.type) {
      case 'kv': {
        // the edge hands over layers below its split, at the length both sides hold
        if (m.layer >= s.hello.split) throw protocolError('bad_resplit', `kv for layer ${m.layer}: the edge holds only layers below its split ${s.hello.split}`);
        if (m.length !== s.runtime.length) throw protocolError('bad_resplit', `kv for layer ${m.layer} holds ${m.length} positions, the session ${s.runtime.length}`);
        const c = this.ctx.pkg.config;
        let kv;
        try {
          kv = decodeLayerKv(frame.payload, m.layer, m.length, c.nKvHeads, c.headDim);
        } catch (e) {
          throw tensorError(e);
        }
        for (const part of [kv.key, kv.value]) refuseHuge(part, `KV of layer ${m.layer}`);
        s.pendingKv.set(m.layer, kv);
        return;
      }
      case 'resplit':
        return this.resplit(s, m);
      case 'prefill':
      case 'step':
      case 'draft': {
        // a resume on another connection waits for this to finish before it looks at the session
        const run = m.type === 'draft' ? this.draft(s, m, frame.payload) : this.forward(s, m.type, m.type === 'prefill' ? m.tokens : 1, frame.payload, m.type === 'prefill' && m.more === true);
        s.inflight = run.catch(() => undefined);
        try {
          return await run;
        } finally {
          s.inflight = undefined;
        }
      }
    }
  }

  /** The edge's `close`: its session is released and the connection ends. */
  private handleGoodbye(): void {
    if (this.held) {
      this.ctx.log.info({ event: 'session_close', reason: 'edge closed it', ...this.facts(this.held) }, 'session closed');
      this.ctx.store.release(this.held);
    }
    this.held = undefined;
    this.end(1000, 'bye');
  }

  private backKey(h: Hello): BackKey {
    const p = helloPrecision(h);
    return { split: h.split, bits: p.backBits, headBits: p.headBits, blockSize: p.blockSize };
  }

  private async hello(m: Hello): Promise<void> {
    const { pkg, store, metrics, tokenLimit } = this.ctx;
    const c = pkg.config;
    if (this.held) throw protocolError('bad_hello', `this connection already has session ${this.held.id}`);
    if (m.modelHash !== pkg.hash) throw protocolError('bad_model', `model ${m.modelHash.slice(0, 12)}… is not the served model ${pkg.hash.slice(0, 12)}…: run the edge with the same model`);
    if (m.split > c.nLayers) throw protocolError('bad_hello', `split ${m.split} is outside 0..${c.nLayers}`);
    const precision = helloPrecision(m);
    let sampler: Sampler;
    try {
      createCodec(m.codec, this.ctx.calibration);
      sampler = new Sampler(m.sampling ?? {});
      checkWeightBits(precision.backBits, precision.blockSize);
      checkWeightBits(precision.headBits, precision.blockSize);
    } catch (e) {
      if (e instanceof SplitLLMError) throw protocolError('bad_hello', e.message);
      throw e;
    }
    const allowed = this.ctx.backPrecisions;
    if (!allowed.bits.includes(precision.backBits)) {
      throw protocolError('bad_hello', `this server runs back layers at ${allowed.bits.join(', ')} bits, not ${precision.backBits}: plan for one of those`);
    }
    if (!allowed.bits.includes(precision.headBits)) throw protocolError('bad_hello', `this server runs the LM head at ${allowed.bits.join(', ')} bits, not ${precision.headBits}: plan for one of those`);
    // the block matters where the back layers or the head are blockwise
    if ((isBlockwise(precision.backBits) || isBlockwise(precision.headBits)) && !allowed.blockSizes.includes(precision.blockSize)) {
      throw protocolError('bad_hello', `this server quantizes in blocks of ${allowed.blockSizes.join(', ')}, not ${precision.blockSize}: plan for one of those (splitllm plan --block-sizes ${allowed.blockSizes.join(',')})`);
    }
    // admission: held sessions (connected or dropped, each with its KV) and hellos admitted before this one
    // (still awaiting their segment) count, the server's and the tenant's; checked and taken in one step
    if (store.heldOrAdmitting() >= this.ctx.maxSessions) throw protocolError('busy', `the server holds its limit of ${this.ctx.maxSessions} sessions: retry in a few seconds`);
    const cap = this.who.maxSessions;
    if (cap !== undefined && store.heldOrAdmitting(this.who.tenant) >= cap) throw protocolError('busy', `tenant ${this.who.tenant} holds its limit of ${cap} sessions: end one or retry later`);
    // KV is reserved for what the session asks (its tokens, and its prompt once it comes), not the model's context
    const positions = Math.min(tokenLimit, m.maxTokens + 1);
    const want = kvReservation(c, m.split, positions);
    const reserved = this.reservedKv() + store.admittingKvBytes();
    if (reserved + want > this.ctx.kvBudgetBytes) {
      throw protocolError('busy', `the KV budget (${this.ctx.kvBudgetBytes} bytes) has ${Math.max(0, this.ctx.kvBudgetBytes - reserved)} left, this session would reserve ${want}: retry later, or split deeper`);
    }
    const id = this.who.session ?? this.ctx.newSessionId();
    const taken = () => protocolError('session_in_use', `session ${id.slice(0, 8)}… is held already: resume it with its secret, or start with a new id`);
    if (store.get(id)) throw taken();
    const helloAt = performance.now();
    const admitted = store.admit({ tenant: this.who.tenant, kvBytes: want });
    let runtime: SegmentRuntime;
    try {
      runtime = await this.ctx.pool.runtime(this.backKey(m));
    } finally {
      admitted();
    }
    // its KV buffers never grow past the session's position limit; they grow as the local runtime's do
    // (a quarter at a time), so that the same positions give the same attention sums, bit for bit (the
    // padding of a buffer changes the order of a vectorized softmax sum): the reservation is the budget's
    runtime.limitPositions(tokenLimit);
    // another connection may have opened the same id while the segment was built
    if (store.get(id)) {
      await runtime.release();
      throw taken();
    }
    const s: HeldSession = {
      id,
      secret: m.resumeSecret ?? randomBytes(16).toString('base64url'),
      tenant: this.who.tenant,
      hello: m,
      runtime,
      positions,
      sampler,
      prefilled: false,
      generated: 0,
      pendingKv: new Map(),
      startedAt: helloAt,
    };
    store.add(s);
    metrics.sessionsTotal.inc();
    this.attach(s);
    this.ctx.log.info({ event: 'session_open', ...this.facts(s), maxTokens: m.maxTokens }, 'session open');
    this.send({ type: 'ready', session: s.id, layers: c.nLayers, split: m.split, maxSeq: tokenLimit, length: 0, resumeSecret: s.secret });
  }

  private async resume(m: Resume): Promise<void> {
    const { store, metrics, tokenLimit, pkg } = this.ctx;
    if (this.held) throw protocolError('bad_hello', `this connection already has session ${this.held.id}`);
    if (this.who.session !== undefined && m.session !== this.who.session) {
      throw protocolError('bad_message', `resume of session ${m.session.slice(0, 8)}… on a connection opened for ${this.who.session.slice(0, 8)}…: put the session's id in the upgrade URL`, { closes: true });
    }
    const found = store.get(m.session);
    if (!found) throw protocolError('unknown_session', `session ${m.session.slice(0, 8)}… is unknown or expired: start a new one`, { closes: true });
    // a wrong secret or another tenant is answered as an unknown session (nothing to learn), and the session is not touched
    if (!sameSecret(m.secret, found.secret) || found.tenant !== this.who.tenant) {
      throw protocolError('unknown_session', `session ${m.session.slice(0, 8)}… is unknown or expired: start a new one`, { closes: true });
    }
    if (found.attached?.open) throw protocolError('bad_hello', 'session is attached to another connection', { closes: true });
    // a step of the dropped connection may still be running: its token is then what the resume answers
    await found.inflight;
    if (this.ctx.store.get(found.id) !== found) throw protocolError('unknown_session', `session ${m.session.slice(0, 8)}… is unknown or expired: start a new one`, { closes: true });
    this.attach(found);
    store.touch(found);
    metrics.resumes.inc();
    this.ctx.log.info({ event: 'session_resume', ...this.facts(found), position: m.position }, 'session resumed');
    this.send({ type: 'ready', session: found.id, layers: pkg.config.nLayers, split: found.hello.split, maxSeq: tokenLimit, length: found.runtime.length });
    // the edge fed `position` tokens; when the cloud holds as many, the last answer may have been lost
    if (found.lastVerified && found.lastVerified.fedEnd === m.position) this.send(found.lastVerified.answer);
    else if (found.lastToken && found.runtime.length === m.position) this.send(found.lastToken);
  }

  /** KV bytes all held sessions reserve now, `except` one (the one about to change its split). */
  private reservedKv(except?: HeldSession): number {
    return reservedKvBytes(this.ctx.store, this.ctx.pkg.config, except);
  }

  /**
   * Grows a session's KV reservation to `positions` (at most its token limit) before it takes them: a
   * prompt's chunks and drafts go past what the hello reserved. `busy` when the budget has no room.
   */
  private reserve(s: HeldSession, positions: number): void {
    const want = Math.min(this.ctx.tokenLimit, positions);
    if (want <= s.positions) return;
    const c = this.ctx.pkg.config;
    const others = this.reservedKv(s);
    if (others + kvReservation(c, s.hello.split, want) > this.ctx.kvBudgetBytes) {
      throw protocolError('busy', `the KV budget (${this.ctx.kvBudgetBytes} bytes) has ${Math.max(0, this.ctx.kvBudgetBytes - others)} left, this session would need ${kvReservation(c, s.hello.split, want)} for ${want} positions: retry later, or split deeper`);
    }
    s.positions = want;
  }


  private async resplit(s: HeldSession, m: Resplit): Promise<void> {
    const c = this.ctx.pkg.config;
    const from = s.hello.split;
    const to = m.split;
    if (to > c.nLayers) throw protocolError('bad_resplit', `split ${to} is outside 0..${c.nLayers}`);
    if (to < from && this.reservedKv(s) + kvReservation(c, to, s.positions) > this.ctx.kvBudgetBytes) {
      throw protocolError('bad_resplit', `moving to split ${to} would pass the cloud's KV budget of ${this.ctx.kvBudgetBytes} bytes: stay at ${from}`);
    }
    let kvCodec;
    try {
      kvCodec = createCodec(m.kvCodec);
    } catch (e) {
      if (e instanceof SplitLLMError) throw protocolError('bad_resplit', e.message);
      throw e;
    }
    const len = s.runtime.length;
    // KV the edge sent for a layer this re-split does not move is refused (and dropped), not kept
    const stray = [...s.pendingKv.keys()].filter((l) => l < to || l >= from);
    if (stray.length) {
      s.pendingKv.clear();
      throw protocolError('bad_resplit', `kv for layer(s) ${stray.join(', ')}, which a re-split from ${from} to ${to} does not move: send kv only for layers ${to}..${from - 1}`);
    }
    const entries = s.runtime.exportKV(Math.max(from, to), c.nLayers);
    if (to < from) {
      // the edge gave us layers [to, from): their KV came first as kv frames
      for (let l = to; l < from; l++) {
        const kv = s.pendingKv.get(l);
        if (!kv || kv.length !== len) throw protocolError('bad_resplit', `KV of layer ${l} at length ${len} is missing before resplit to ${to}`);
        entries.push(kv);
      }
    } else {
      // the edge takes layers [from, to): stream their KV, each frame once the one before has gone out
      for (const kv of s.runtime.exportKV(from, to)) {
        this.send({ type: 'kv', layer: kv.layer, length: kv.length }, encodeLayerKv(kvCodec, kv, c.nKvHeads, c.headDim));
        await this.drained();
      }
    }
    s.pendingKv.clear();
    const hello = { ...s.hello, split: to };
    const next = await this.ctx.pool.runtime(this.backKey(hello));
    next.limitPositions(this.ctx.tokenLimit);
    next.importKV(entries, len);
    await s.runtime.release();
    s.runtime = next;
    s.hello = hello;
    this.send({ type: 'ready', session: s.id, layers: c.nLayers, split: to, maxSeq: this.ctx.tokenLimit, length: len });
  }

  /** The hidden state [tokens, dim] of a payload, checked (its codec message, dim, count, magnitude). */
  private hiddenOf(payload: Uint8Array, tokens: number, wrongCount: (got: number) => ProtocolError): Float32Array {
    const { pkg, calibration } = this.ctx;
    let x: Float32Array;
    try {
      // bounded before allocation by what the frame says it carries (its positions, already checked
      // against the session's limit) × the model's width: a small message claiming millions of values
      // (a decompression bomb) is refused from its header
      const d = decodeMessage(payload, { contexts: calibration?.contexts, maxValues: tokens * pkg.config.dim });
      if (d.dim !== pkg.config.dim) throw protocolError('bad_tensor', `hidden state has dim ${d.dim}, the model's is ${pkg.config.dim}`);
      if (d.tokens !== tokens) throw wrongCount(d.tokens);
      x = d.x;
    } catch (e) {
      throw tensorError(e);
    }
    refuseHuge(x, 'hidden state');
    return x;
  }

  /** Logits [from, to) that came out non-finite end the session: its KV cache now holds what produced them. */
  private refuseNonFinite(s: HeldSession, logits: Float32Array, from: number, to: number): void {
    for (let i = from; i < to; i++) {
      if (!Number.isFinite(logits[i]!)) {
        this.ctx.store.release(s);
        this.held = undefined;
        throw protocolError('bad_tensor', 'the model produced non-finite logits from this hidden state: the session is ended, start a new one', { closes: true });
      }
    }
  }

  /**
   * A speculative step: the fed token and its drafts run through the back segment in one pass; the drafts
   * that stand (verify.ts) and the token after them go back in `verified`, and the cache drops the rest.
   */
  private async draft(s: HeldSession, m: Draft, payload: Uint8Array): Promise<void> {
    const { pkg, tokenLimit, metrics, pool } = this.ctx;
    const c = pkg.config;
    if (!s.prefilled) throw protocolError('step_before_prefill', 'draft before prefill: send the prompt first');
    const bad = [...m.drafts, ...(m.q ?? []).flatMap((d) => d.ids)].find((id) => id >= c.vocabSize);
    if (bad !== undefined) throw protocolError('bad_draft', `draft token ${bad} is outside the model's vocabulary of ${c.vocabSize}`);
    const P = s.runtime.length;
    if (P + m.tokens > tokenLimit) throw protocolError('bad_draft', `the draft would take the session to ${P + m.tokens} positions, over its limit of ${tokenLimit}: draft fewer tokens`);
    this.reserve(s, P + m.tokens);
    const t0 = performance.now();
    const x = this.hiddenOf(payload, m.tokens, (got) => protocolError('bad_draft', `the draft says ${m.tokens} positions, its tensor holds ${got}`));
    const out = await s.runtime.run(x, m.tokens);
    this.refuseNonFinite(s, out.data, 0, out.data.length);
    // a sampled draft's distribution came with it; early-exit drafts': the head's on the states received (the greedy test needs neither)
    let q: Float64Array[] | undefined;
    if (m.q && !s.sampler.greedy) q = m.q.map((d) => denseDistribution(d, c.vocabSize, DRAFT_Q_SCALE));
    else if (m.exit && !s.sampler.greedy) {
      s.exitHead ??= await pool.runtime({ split: c.nLayers, bits: 32, headBits: 32, blockSize: helloPrecision(s.hello).blockSize });
      q = [];
      for (let i = 0; i < m.drafts.length; i++) {
        s.exitHead.reset();
        const l = await s.exitHead.run(x.subarray(i * c.dim, (i + 1) * c.dim), 1);
        q.push(s.sampler.probabilities(l.data, 0, c.vocabSize));
      }
    }
    const v = verifyDrafts(s.sampler, out.data, c.vocabSize, m.drafts, q);
    // the cache keeps the fed token and the drafts that stand
    s.runtime.truncate(P + 1 + v.accepted);
    const stops = s.hello.stopIds ?? [c.eosId, c.bosId];
    const ids: number[] = [];
    let done = false;
    for (const id of [...m.drafts.slice(0, v.accepted), v.next]) {
      if (stops.includes(id)) {
        done = true;
        break;
      }
      ids.push(id);
      s.generated++;
      if (s.generated >= s.hello.maxTokens || s.runtime.length + 1 > tokenLimit) {
        done = true;
        break;
      }
    }
    const cloudMs = performance.now() - t0;
    const answer: Verified = { type: 'verified', accepted: v.accepted, ids, done, cloudMs };
    s.lastVerified = { fedEnd: P + m.tokens, answer };
    s.lastToken = undefined;
    this.send(answer);
    metrics.stepSeconds.observe(cloudMs / 1000);
    if (ids.length) metrics.tokens.inc(ids.length);
  }

  /** Runs a prefill (or a chunk of one: `more`, answered by nothing) or a step through the back segment, and sends the token. */
  private async forward(s: HeldSession, type: 'prefill' | 'step', tokens: number, payload: Uint8Array, more = false): Promise<void> {
    const { pkg, tokenLimit, metrics, pool } = this.ctx;
    const c = pkg.config;
    if (type === 'step' && !s.prefilled) throw protocolError('step_before_prefill', 'step before prefill: send the prompt first');
    const t0 = performance.now();
    if (s.runtime.length + tokens > tokenLimit) throw protocolError('token_limit', `session would hold ${s.runtime.length + tokens} positions, over its limit of ${tokenLimit}`);
    const x = this.hiddenOf(payload, tokens, (got) => protocolError('bad_tensor', type === 'prefill' ? `prefill says ${tokens} tokens, its tensor holds ${got}` : `a step carries one token, this one ${got}`));
    // the prompt's positions and the tokens still to come
    this.reserve(s, s.runtime.length + tokens + (type === 'prefill' ? Math.max(0, s.hello.maxTokens - s.generated) : 0));
    const out = type === 'step' ? await pool.step(this.backKey(s.hello), s.runtime, x) : await s.runtime.run(x, tokens);
    // a chunk of the prompt: the next one (already on the wire) runs as soon as it is read
    if (more) return;
    s.prefilled = true;
    const row = (tokens - 1) * c.vocabSize;
    this.refuseNonFinite(s, out.data, row, row + c.vocabSize);
    const id = s.sampler.sample(out.data, row, c.vocabSize);
    const isStop = (s.hello.stopIds ?? [c.eosId, c.bosId]).includes(id);
    if (!isStop) s.generated++;
    const done = isStop || s.generated >= s.hello.maxTokens || s.runtime.length + 1 > tokenLimit;
    const cloudMs = performance.now() - t0;
    s.lastToken = { type: 'token', id: isStop ? -1 : id, done, cloudMs };
    s.lastVerified = undefined;
    this.send(s.lastToken);
    // the token is on its way: the bookkeeping is off the edge's critical path
    metrics.stepSeconds.observe(cloudMs / 1000);
    if (type === 'prefill' && s.startedAt !== undefined) {
      metrics.firstToken.observe((performance.now() - s.startedAt) / 1000);
      s.startedAt = undefined;
    }
    if (!isStop) metrics.tokens.inc();
  }
}

/**
 * The edge's connection to the cloud: frames in and out through a `FrameChannel`, every frame from the
 * cloud checked at the trust boundary (`parseCloudFrame`), and the resume policy: when the link drops
 * (close codes in RESUMABLE_CLOSE_CODES) while a token is awaited, it reconnects, resumes the session
 * and sends the last prefill/step again if the cloud never got it. A refusal is final. The edge chooses
 * the session id (`newSessionId`) and every connection of the session carries it in its upgrade URL, so
 * a balancer hashing on it sends them all to one replica.
 *
 * Every wait has a deadline (`Deadlines`, docs/PROTOCOL.md "Deadlines"): the cloud silent past the
 * silence deadline (no frame, no pong to the pings sent while waiting) is a dropped link, resumed like
 * one; an answer later than its deadline fails with E_TIMEOUT; the caller's abort signal ends a wait at
 * once (`InterruptedWait`).
 */
import { SplitLLMError } from '../shared/errors.js';
import { encodeFrame, newSessionId, parseCloudFrame, ProtocolError, type CloudMessage, type EdgeMessage, type Frame, type Ready, type TokenMsg, type Verified } from '../shared/protocol/index.js';
import { RESUMABLE_CLOSE_CODES, type ChannelEvent, type Connector, type FrameChannel } from '../shared/transport/channel.js';

/**
 * How long the edge waits for the cloud. The defaults hold for a CPU cloud building an 8B back segment
 * (the ready) and prefilling a long prompt (the first token); the silence deadline, which pings keep from
 * firing while the cloud computes, is what finds a dead link fast.
 */
export interface Deadlines {
  /** each connection attempt, TCP connect through the WebSocket upgrade (default 10 s; applied by the connector) */
  connectMs?: number;
  /**
   * the cloud silent this long while the edge waits (no frame, no pong to the pings it sends every fifth
   * of it) counts as a dropped link (default the larger of 15 s and 20 measured round trips; only over a
   * transport with pings: a page's WebSocket has none)
   */
  silenceMs?: number;
  /**
   * floor of the wait for a token or a verdict (default 60 s, once per 512 positions fed); the deadline is
   * the larger of it and 10× the round the slowest answer so far predicts (round trip + ms per position)
   */
  answerMs?: number;
  /** the ready that answers a hello (default 10 min: the cloud may build a back segment first, minutes at 8B) */
  readyMs?: number;
}

export const DEFAULT_DEADLINES = { connectMs: 10_000, silenceMs: 15_000, answerMs: 60_000, readyMs: 600_000 } as const;

/** A wait ended by the caller's abort signal (Ctrl-C, a client that went away): not an error of the link. */
export class InterruptedWait extends Error {
  constructor() {
    super('interrupted while waiting for the cloud');
    this.name = 'InterruptedWait';
  }
}

export interface ResumePolicy extends Deadlines {
  /** reconnect and resume when the link drops (default true) */
  resume?: boolean;
  /** most resumes in one session (default 5) */
  maxResumes?: number;
  /** how long one resume keeps retrying a cloud that does not answer, with backoff 100 ms … 1 s (default 5 s) */
  retryWindowMs?: number;
  /** ends any wait at once (InterruptedWait) */
  signal?: AbortSignal;
}

type CloudEvent = { kind: 'message'; frame: Frame<CloudMessage> } | { kind: 'close'; code: number; reason: string };

/** A cloud that answers with an error frame, or breaks the protocol, fails the edge with this. */
function cloudError(why: string): SplitLLMError {
  return new SplitLLMError('E_PROTOCOL', why);
}

/** The cloud reached on a resume does not hold the session (it restarted, or a balancer moved the id): a replay can rebuild it. */
export class SessionLostError extends SplitLLMError {
  constructor(message: string) {
    super('E_CONNECTION', message);
    this.name = 'SessionLostError';
  }
}

function closedError(code: number, reason: string): SplitLLMError {
  // 1006: no close frame came (a cut link, or the silence deadline cut it)
  const what = code === 1006 ? 'the connection to the cloud dropped' : 'the cloud closed the connection';
  return new SplitLLMError('E_CONNECTION', `${what} (${code}${reason ? `: ${reason}` : ''})`);
}

export class CloudConnection {
  private bytesInBefore = 0;
  private bytesOutBefore = 0;
  /** the prefill/step frames not yet answered by a token, with the position each starts at: sent again when a resume shows the cloud never got them */
  private kept: { start: number; end: number; frame: Uint8Array }[] = [];
  resumes = 0;
  /** the session's resume secret (from the cloud's first ready): a resume must show it */
  secret = '';
  /** the slowest answer so far, ms per position fed (round trip included): what the answer deadline scales */
  private msPerPosition = 0;

  private constructor(
    private channel: FrameChannel,
    private readonly connect: Connector,
    private readonly policy: ResumePolicy,
    /** the session id this connection is for, chosen by the edge, in every upgrade URL */
    readonly session: string,
  ) {}

  /**
   * Opens a connection for session `session` (default: a new random id). With `retry`, a cloud that
   * refuses or does not answer is tried again with backoff within the policy's retry window (a failover
   * reaching a replica that is starting or draining).
   */
  static async open(connect: Connector, policy: ResumePolicy = {}, session: string = newSessionId(), retry = false): Promise<CloudConnection> {
    const channel = retry ? await connectWithin(connect, session, policy.retryWindowMs ?? 5000, policy.signal) : await connect(session);
    return new CloudConnection(channel, connect, policy, session);
  }

  get bytesIn(): number {
    return this.bytesInBefore + this.channel.bytesIn;
  }
  get bytesOut(): number {
    return this.bytesOutBefore + this.channel.bytesOut;
  }

  send(m: EdgeMessage, payload?: Uint8Array): void {
    this.channel.send(encodeFrame(m, payload));
  }
  /** Sends a prefill (or a chunk of one) or a step that feeds positions from `start` on, kept until its token comes to be sent again after a resume. */
  sendKept(m: EdgeMessage, payload: Uint8Array, start: number): void {
    const frame = encodeFrame(m, payload);
    const positions = m.type === 'prefill' || m.type === 'draft' ? m.tokens : 1;
    this.kept.push({ start, end: start + positions, frame });
    this.channel.send(frame);
  }

  /** positions sent since the last answer (the frames kept for a resend) */
  private get fedUnanswered(): number {
    return this.kept.reduce((n, k) => n + k.end - k.start, 0);
  }

  /** the deadline of a ready that may wait for a back segment's build */
  get readyMs(): number {
    return this.policy.readyMs ?? DEFAULT_DEADLINES.readyMs;
  }

  /** the silence deadline now: the policy's, else the larger of the floor and 20 round trips */
  private get silenceMs(): number {
    return this.policy.silenceMs ?? Math.max(DEFAULT_DEADLINES.silenceMs, 20 * (this.channel.rttMs ?? 0));
  }

  /** the deadline of an answer to `positions` fed positions */
  private answerDeadline(positions: number): number {
    const floor = (this.policy.answerMs ?? DEFAULT_DEADLINES.answerMs) * Math.max(1, Math.ceil(positions / 512));
    return Math.max(floor, 10 * ((this.channel.rttMs ?? 0) + positions * this.msPerPosition));
  }

  /**
   * The channel's next event within `deadlineMs` (E_TIMEOUT past it, naming `what`), pinging while it
   * waits: a cloud silent past the silence deadline is cut and reads as a dropped link (close 1006); the
   * abort signal ends the wait with InterruptedWait.
   */
  private receive(what: string, deadlineMs: number): Promise<ChannelEvent> {
    const ch = this.channel;
    const signal = this.policy.signal;
    if (signal?.aborted) return Promise.reject(new InterruptedWait());
    const silence = this.silenceMs;
    const tick = Math.max(20, Math.min(1000, silence / 5, deadlineMs / 5));
    const start = performance.now();
    return new Promise((resolve, reject) => {
      let lastPing = start;
      const finish = (): void => {
        clearInterval(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        finish();
        reject(new InterruptedWait());
      };
      const timer = setInterval(() => {
        const now = performance.now();
        if (now - start > deadlineMs) {
          finish();
          ch.terminate();
          const alive = ch.ping !== undefined && ch.heardAt > start ? ' (it answers pings: up, but stuck or overloaded)' : '';
          reject(new SplitLLMError('E_TIMEOUT', `the cloud did not send ${what} within ${(deadlineMs / 1000).toFixed(1)} s${alive}: retry later, or raise the deadline (--answer-timeout, --ready-timeout)`));
          return;
        }
        if (!ch.ping) return;
        if (now - Math.max(ch.heardAt, start) > silence) {
          finish();
          ch.terminate();
          resolve({ kind: 'close', code: 1006, reason: `nothing from the cloud for ${(silence / 1000).toFixed(1)} s, not even a pong` });
          return;
        }
        if (now - lastPing >= silence / 5) {
          lastPing = now;
          ch.ping();
        }
      }, tick);
      signal?.addEventListener('abort', onAbort, { once: true });
      ch.next().then(
        (ev) => {
          finish();
          resolve(ev);
        },
        (e: unknown) => {
          finish();
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }

  /** The next event from the cloud within the deadline: a checked message, or the close. A frame that fails the checks fails the edge. */
  async next(what = 'an answer', deadlineMs: number = this.answerDeadline(1)): Promise<CloudEvent> {
    const ev = await this.receive(what, deadlineMs);
    if (ev.kind === 'close') return ev;
    if (ev.kind === 'text') throw cloudError('the cloud sent a text frame, which is not part of the protocol: is --cloud a splitllm cloud server?');
    try {
      return { kind: 'message', frame: parseCloudFrame(ev.data) };
    } catch (e) {
      if (e instanceof ProtocolError) throw cloudError(`the cloud sent a malformed frame (${e.wireCode}: ${e.message}): check that --cloud is a splitllm cloud server of this version`);
      throw e;
    }
  }

  /** The next message, which must be of `type`; an error frame or the close fails with what the cloud said. */
  async expect<T extends CloudMessage['type']>(type: T): Promise<Frame<Extract<CloudMessage, { type: T }>>> {
    const ev = await this.next(`a ${type}`);
    if (ev.kind === 'close') throw closedError(ev.code, ev.reason);
    return this.expectFrame(ev.frame, type);
  }

  expectFrame<T extends CloudMessage['type']>(frame: Frame<CloudMessage>, type: T): Frame<Extract<CloudMessage, { type: T }>> {
    const m = frame.header;
    if (m.type === 'error') throw cloudError(`cloud: ${m.code}: ${m.message}`);
    if (!isOfType(m, type)) throw cloudError(`expected ${type} from the cloud, got ${m.type}`);
    return { header: m, payload: frame.payload };
  }

  /**
   * The ready answering the hello, resuming the session if the link drops first (the edge chose the
   * secret, so it can): after a resume its ready stands for the hello's. `check` sees the hello's ready.
   */
  async awaitReady(position: number, check: (r: Ready) => void): Promise<void> {
    for (;;) {
      const ev = await this.next('the ready answering the hello', this.readyMs);
      if (ev.kind === 'message') return check(this.expectFrame(ev.frame, 'ready').header);
      if (!this.resumable(ev.code)) throw closedError(ev.code, ev.reason);
      await this.reconnect(position);
      return;
    }
  }

  private resumable(code: number): boolean {
    return RESUMABLE_CLOSE_CODES.includes(code) && this.policy.resume !== false && this.resumes < (this.policy.maxResumes ?? 5) && this.session !== '' && this.secret !== '';
  }

  /** The token answering the last prefill/step, resuming the session across dropped links. */
  async awaitToken(position: number): Promise<TokenMsg> {
    return this.awaitAnswer(position, 'token');
  }

  /** The verdict answering the last draft, resuming the session across dropped links. */
  async awaitVerified(position: number): Promise<Verified> {
    return this.awaitAnswer(position, 'verified');
  }

  private async awaitAnswer<T extends 'token' | 'verified'>(position: number, type: T): Promise<Extract<CloudMessage, { type: T }>> {
    for (;;) {
      const fed = this.fedUnanswered;
      const t0 = performance.now();
      const ev = await this.next(`the ${type} answering ${fed} position(s)`, this.answerDeadline(fed));
      if (ev.kind === 'message') {
        const t = this.expectFrame(ev.frame, type).header;
        if (fed > 0) this.msPerPosition = Math.max(this.msPerPosition, (performance.now() - t0) / fed);
        this.kept = [];
        return t;
      }
      if (!this.resumable(ev.code)) throw closedError(ev.code, ev.reason);
      await this.reconnect(position);
    }
  }

  private async reconnect(position: number): Promise<void> {
    this.bytesInBefore += this.channel.bytesIn;
    this.bytesOutBefore += this.channel.bytesOut;
    this.channel.close();
    this.channel = await connectWithin(this.connect, this.session, this.policy.retryWindowMs ?? 5000, this.policy.signal);
    this.send({ type: 'resume', session: this.session, secret: this.secret, position });
    // the cloud lets a step of the dropped connection finish before it answers
    const ev = await this.next('the ready answering the resume', this.answerDeadline(1 + this.fedUnanswered));
    if (ev.kind === 'close') throw closedError(ev.code, ev.reason);
    const m = ev.frame.header;
    if (m.type === 'error' && m.code === 'unknown_session') {
      // the cloud came back without the session (restarted, or it expired): this generation cannot go on
      throw new SessionLostError(`the cloud no longer holds session ${this.session.slice(0, 8)}… (restarted or expired): send the request again`);
    }
    const r = this.expectFrame(ev.frame, 'ready').header;
    if (r.session !== this.session) throw cloudError(`the cloud resumed session ${r.session.slice(0, 8)}… instead of ${this.session.slice(0, 8)}…`);
    if (r.length > position) throw cloudError(`the cloud holds ${r.length} positions of a session the edge fed ${position}`);
    this.resumes++;
    if (r.length < position) {
      // the cloud never got these frames: send them again from the first position it lacks
      const from = this.kept.findIndex((k) => k.start === r.length);
      // a draft the cloud ran, its rejected positions dropped: its verdict comes again, nothing to resend
      const ran = this.kept.some((k) => k.start < r.length && r.length < k.end);
      if (from < 0 && ran) return;
      if (from < 0) throw cloudError(`the cloud holds ${r.length} positions, which is not where a frame the edge sent begins: start a new session`);
      for (const k of this.kept.slice(from)) this.channel.send(k.frame);
    }
  }

  /** Waits until the send buffer holds at most `maxBytes`; a cloud that does not read for 30 s is an error. */
  async drain(maxBytes = 1 << 20): Promise<void> {
    if (!(await this.channel.drain(maxBytes, 30_000))) throw new SplitLLMError('E_CONNECTION', 'the cloud stopped reading for 30 s: connection dropped');
  }

  close(): void {
    this.channel.close();
  }
}

/** Connects for `session`, retrying with bounded exponential backoff (100 ms doubling to 1 s) for up to `windowMs`: the cloud may be restarting or draining. */
async function connectWithin(connect: Connector, session: string, windowMs: number, signal?: AbortSignal): Promise<FrameChannel> {
  const t0 = Date.now();
  let attempts = 0;
  for (let wait = 100; ; wait = Math.min(1000, wait * 2)) {
    attempts++;
    if (signal?.aborted) throw new InterruptedWait();
    try {
      return await connect(session);
    } catch (e) {
      if (signal?.aborted) throw new InterruptedWait();
      if (Date.now() + wait - t0 > windowMs) {
        const why = e instanceof Error ? e.message : String(e);
        throw new SplitLLMError('E_CONNECTION', `lost the cloud and could not resume after ${attempts} attempts over ${((Date.now() - t0) / 1000).toFixed(1)} s: ${why}`);
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

function isOfType<T extends CloudMessage['type']>(m: CloudMessage, type: T): m is Extract<CloudMessage, { type: T }> {
  return m.type === type;
}

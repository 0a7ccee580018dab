/**
 * Sessions the cloud holds, connected or waiting to be resumed, each with its back-segment runtime (its
 * KV cache). A session idle for `idleMs` (no message, connected or not) is released; the connection it
 * is attached to, if any, is told so that it can answer `expired_session`.
 */
import type { Hello, TokenMsg, Verified } from '../shared/protocol/index.js';
import type { Sampler } from '../models/runtime/sampler.js';
import type { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import type { LayerKvData } from '../quantization/kv/stream.js';

/** What a held session tells the connection it is attached to. */
export interface Attachment {
  /** the session was released for idleness */
  expired(idleMs: number): void;
  /** the connection is still open (a dropped one leaves the session free to be resumed) */
  readonly open: boolean;
}

export interface HeldSession {
  readonly id: string;
  /** what a resume must show (sent once, in the first ready) */
  readonly secret: string;
  /** the tenant whose token opened it: only that tenant may resume it, and it counts against its cap */
  readonly tenant: string;
  /** the session's hello, its split kept current across re-splits */
  hello: Hello;
  runtime: SegmentRuntime;
  /** positions its KV is reserved for: its prompt and max tokens as they became known, at most the token limit */
  positions: number;
  sampler: Sampler;
  prefilled: boolean;
  generated: number;
  /** KV of layers the edge hands over before a `resplit` (at most one entry per layer below the split) */
  pendingKv: Map<number, LayerKvData>;
  /** the prefill or step running now, if any (a resume waits for it) */
  inflight?: Promise<unknown>;
  /** when its hello came (performance.now()), until its first token went out: time to first token */
  startedAt?: number;
  /** the last answer, sent again when a resume shows it was lost */
  lastToken?: TokenMsg;
  /** the final norm and LM head alone, float32: the early-exit distribution of drafts (`draft.exit`), made at the first such draft */
  exitHead?: SegmentRuntime;
  /** the answer to the last draft and the positions the edge had fed with it (a resume at that position gets it again) */
  lastVerified?: { fedEnd: number; answer: Verified };
  attached?: Attachment;
}

/** A hello between its admission and its session being held: what it counts against the limits. */
export interface Admission {
  tenant: string;
  kvBytes: number;
}

export class SessionStore {
  private readonly sessions = new Map<string, HeldSession>();
  private readonly timers = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(
    readonly idleMs: number,
    private readonly events: { onExpire?: (s: HeldSession) => void; onChange?: (held: number) => void; onRelease?: (s: HeldSession, remaining: number) => void } = {},
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  /** hellos admitted and not yet held (their back segment is being fetched or built) */
  private readonly admitting = new Set<Admission>();
  /**
   * Counts a hello against the limits from the moment it is admitted, before it awaits its segment: the
   * limits are checked and the place taken in one synchronous step, so that concurrent hellos cannot all
   * pass the same check. Call the returned function once the session is held (or the hello failed).
   */
  admit(a: Admission): () => void {
    this.admitting.add(a);
    return () => this.admitting.delete(a);
  }
  /** Sessions held or being admitted (for the server's limit), for `tenant` only when given. */
  heldOrAdmitting(tenant?: string): number {
    let n = tenant === undefined ? this.sessions.size : this.heldBy(tenant);
    for (const a of this.admitting) if (tenant === undefined || a.tenant === tenant) n++;
    return n;
  }
  /** KV bytes the hellos being admitted reserve. */
  admittingKvBytes(): number {
    let n = 0;
    for (const a of this.admitting) n += a.kvBytes;
    return n;
  }
  /** Sessions by state and by tenant, for the metrics. */
  counts(): { connected: number; waiting: number; byTenant: Map<string, number> } {
    let connected = 0;
    const byTenant = new Map<string, number>();
    for (const s of this.sessions.values()) {
      if (s.attached?.open) connected++;
      byTenant.set(s.tenant, (byTenant.get(s.tenant) ?? 0) + 1);
    }
    return { connected, waiting: this.sessions.size - connected, byTenant };
  }
  /** sessions held for one tenant */
  heldBy(tenant: string): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.tenant === tenant) n++;
    return n;
  }
  all(): IterableIterator<HeldSession> {
    return this.sessions.values();
  }
  get(id: string): HeldSession | undefined {
    return this.sessions.get(id);
  }
  add(s: HeldSession): void {
    this.sessions.set(s.id, s);
    this.touch(s);
    this.events.onChange?.(this.sessions.size);
  }
  /** Restarts the session's idle clock. */
  touch(s: HeldSession): void {
    clearTimeout(this.timers.get(s.id));
    const t = setTimeout(() => this.expire(s), this.idleMs);
    t.unref?.();
    this.timers.set(s.id, t);
  }
  release(s: HeldSession): void {
    clearTimeout(this.timers.get(s.id));
    this.timers.delete(s.id);
    if (this.sessions.get(s.id) !== s) return;
    this.sessions.delete(s.id);
    s.attached = undefined;
    // told before the runtime lets go of its KV cache, while its length still says what it held
    this.events.onRelease?.(s, this.sessions.size);
    void s.runtime.release();
    void s.exitHead?.release();
    this.events.onChange?.(this.sessions.size);
  }
  releaseAll(): void {
    for (const s of [...this.sessions.values()]) this.release(s);
  }
  private expire(s: HeldSession): void {
    const a = s.attached;
    this.events.onExpire?.(s);
    this.release(s);
    if (a?.open) a.expired(this.idleMs);
  }
}

/**
 * A cloud without sockets: `CloudSession`s over in-memory channels, sharing one pool, store and metrics;
 * and a test edge that drives one of them with a real front segment.
 */
import { expect } from 'vitest';
import { SegmentRuntime } from '../../models/runtime/segment-runtime.js';
import { createCodec } from '../../quantization/activations/registry.js';
import type { ModelPackage } from '../../models/package.js';
import type { CalibrationContexts } from '../../quantization/activations/calibration.js';
import { CloudSession, cloudContext, type CloudContext, type Identity } from '../../cloud/session.js';
import { encodeFrame, parseCloudFrame, PROTOCOL_VERSION, type CloudMessage, type Frame, type Hello, type Message } from '../../shared/protocol/index.js';
import { memoryChannelPair, type MemoryChannel } from '../../shared/transport/memory.js';

export interface TestClient {
  /** the edge's end of the channel */
  channel: MemoryChannel;
  send(m: Message, payload?: Uint8Array): void;
  sendRaw(bytes: Uint8Array): void;
  /** the next frame from the cloud, or the close */
  next(): Promise<Frame<CloudMessage> | { closed: number; reason: string }>;
  /** the next message, which must be one (not the close) */
  message(): Promise<CloudMessage>;
  /** resolves when the cloud's session loop has ended */
  done: Promise<void>;
}

export interface TestCloud {
  ctx: CloudContext;
  connect(who?: Identity): TestClient;
  close(): Promise<void>;
}

export function testCloud(
  pkg: ModelPackage,
  opts: { idleMs?: number; tokenLimit?: number; calibration?: CalibrationContexts; maxBufferedBytes?: number; maxSessions?: number; helloTimeoutMs?: number; kvBudgetBytes?: number; backBits?: number[]; blockSizes?: number[]; segmentIdleMs?: number } = {},
): TestCloud {
  let n = 0;
  const ctx = cloudContext(pkg, { ...opts, sessionTokenLimit: opts.tokenLimit, newSessionId: () => `session-${++n}` });

  return {
    ctx,
    connect(who?: Identity) {
      const { a, b } = memoryChannelPair();
      const done = new CloudSession(b, ctx, who).run();
      const next = async () => {
        const ev = await a.next();
        if (ev.kind === 'close') return { closed: ev.code, reason: ev.reason };
        if (ev.kind === 'text') throw new Error('the cloud sent a text frame');
        return parseCloudFrame(ev.data);
      };
      return {
        channel: a,
        send: (m, payload) => a.send(encodeFrame(m, payload)),
        sendRaw: (bytes) => a.send(bytes),
        next,
        async message() {
          const f = await next();
          if ('closed' in f) throw new Error(`the cloud closed the connection (${f.closed} ${f.reason})`);
          return f.header;
        },
        done,
      };
    },
    async close() {
      ctx.reclaimer.close();
      ctx.store.releaseAll();
      await ctx.pool.close();
    },
  };
}

export const fp32 = createCodec('fp32');

export function hello(pkg: ModelPackage, over: Partial<Hello> = {}): Hello {
  return { type: 'hello', version: PROTOCOL_VERSION, modelHash: pkg.hash, split: 2, codec: 'fp32', maxTokens: 200, stopIds: [], ...over };
}

export async function expectError(c: TestClient, code: string): Promise<CloudMessage> {
  const m = await c.message();
  expect(m.type, `expected error ${code}, got ${JSON.stringify(m)}`).toBe('error');
  if (m.type === 'error') expect(m.code).toBe(code);
  return m;
}

export async function expectClosed(c: TestClient, code: number): Promise<void> {
  const f = await c.next();
  expect('closed' in f ? f.closed : `frame ${JSON.stringify(f)}`).toBe(code);
}

/** An edge in the test: the front segment [0, split) and the fp32 codec, driving one client. */
export class TestEdge {
  generated: number[] = [];
  private constructor(
    readonly pkg: ModelPackage,
    public front: SegmentRuntime,
    readonly client: TestClient,
    readonly session: string,
    /** the resume secret of the session's ready */
    readonly secret: string,
  ) {}
  static async start(pkg: ModelPackage, client: TestClient, split: number, over: Partial<Hello> = {}): Promise<TestEdge> {
    client.send(hello(pkg, { split, ...over }));
    const r = await client.message();
    if (r.type !== 'ready') throw new Error(`expected ready, got ${JSON.stringify(r)}`);
    expect(r).toMatchObject({ split, length: 0, layers: pkg.config.nLayers });
    expect(r.resumeSecret).toMatch(/^[A-Za-z0-9_-]{22}$/);
    return new TestEdge(pkg, await SegmentRuntime.create(pkg, 0, split, { embed: true, head: false }), client, r.session, r.resumeSecret ?? '');
  }
  async feed(ids: number[]): Promise<Uint8Array> {
    const h = await this.front.run(ids, ids.length);
    return fp32.encode(h.data, ids.length, this.pkg.config.dim);
  }
  /** prefill (first call) or one step; returns the cloud's token */
  async round(ids: number[]): Promise<number> {
    const payload = await this.feed(ids);
    if (this.generated.length === 0 && ids.length > 1) this.client.send({ type: 'prefill', tokens: ids.length }, payload);
    else this.client.send({ type: 'step', token: ids[0]! }, payload);
    const t = await this.client.message();
    if (t.type !== 'token') throw new Error(`expected a token, got ${JSON.stringify(t)}`);
    this.generated.push(t.id);
    return t.id;
  }
  async run(prompt: number[], n: number): Promise<number[]> {
    let next = await this.round(prompt);
    while (this.generated.length < n) next = await this.round([next]);
    return this.generated;
  }
}


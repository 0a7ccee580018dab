/**
 * CloudSession, the cloud's per-connection state machine, over in-memory channels: no sockets, no
 * fastify. Real back segments of the default model, so every answer is checked against local
 * generation token for token.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import type { ModelPackage } from '../models/package.js';
import { decodeLayerKv, encodeLayerKv } from '../quantization/kv/stream.js';
import { BackSegmentPool, type BackKey } from '../cloud/segment-pool.js';
import { PROTOCOL_VERSION, type CloudMessage } from '../shared/protocol/index.js';
import { defaultModel } from './helpers/models.js';
import { expectClosed, expectError, fp32, hello, testCloud, TestEdge, type TestCloud } from './helpers/cloud.js';

const PROMPT = 'ROMEO:\nIs the day so young?';

describe('CloudSession over an in-memory channel (default model)', () => {
  let pkg: ModelPackage;
  let cloud: TestCloud;
  let prompt: number[];
  let local: number[];
  beforeAll(async () => {
    pkg = await defaultModel();
    cloud = testCloud(pkg);
    prompt = pkg.tokenizer().encode(PROMPT, true);
    local = await generate(await Pipeline.create(pkg), prompt, { maxTokens: 24, stopIds: [] });
  });
  afterAll(async () => cloud?.close());

  it('hello → ready, prefill → token, steps → the tokens of local generation; close releases the session', async () => {
    const c = cloud.connect();
    const edge = await TestEdge.start(pkg, c, 2);
    expect(cloud.ctx.store.size).toBe(1);
    expect(await edge.run(prompt, 24)).toEqual(local);
    c.send({ type: 'close' });
    await expectClosed(c, 1000);
    await c.done;
    expect(cloud.ctx.store.size).toBe(0);
    const metrics = await cloud.ctx.metrics.text();
    expect(metrics).toMatch(/splitllm_tokens_total 24/);
    expect(metrics).toMatch(/splitllm_step_duration_seconds_count 24/);
  });

  it('every split, 0 (embedding only) to L (head only), gives the same tokens', async () => {
    for (let k = 0; k <= pkg.config.nLayers; k++) {
      const c = cloud.connect();
      const edge = await TestEdge.start(pkg, c, k);
      expect(await edge.run(prompt, 12), `split ${k}`).toEqual(local.slice(0, 12));
      c.send({ type: 'close' });
      await c.done;
    }
  });

  it('maxTokens and stop ids end generation with done', async () => {
    const c = cloud.connect();
    const edge = await TestEdge.start(pkg, c, 3, { maxTokens: 3 });
    const payload = await edge.feed(prompt);
    c.send({ type: 'prefill', tokens: prompt.length }, payload);
    const answers: CloudMessage[] = [await c.message()];
    let last = answers[0]!;
    while (last.type === 'token' && !last.done) {
      c.send({ type: 'step', token: last.id }, await edge.feed([last.id]));
      last = await c.message();
      answers.push(last);
    }
    expect(answers.map((a) => (a.type === 'token' ? a.id : -2))).toEqual(local.slice(0, 3));
    expect(answers.map((a) => a.type === 'token' && a.done)).toEqual([false, false, true]);
    // the first generated token as a stop id: the prefill answers id -1, done
    const s = cloud.connect();
    const e2 = await TestEdge.start(pkg, s, 3, { stopIds: [local[0]!] });
    s.send({ type: 'prefill', tokens: prompt.length }, await e2.feed(prompt));
    expect(await s.message()).toMatchObject({ type: 'token', id: -1, done: true });
  });

  it('re-splits with KV both ways (down: the edge sends kv first; up: the cloud streams kv) keep the tokens exact', async () => {
    const c = cloud.connect();
    const edge = await TestEdge.start(pkg, c, 3);
    const { nKvHeads: KV, headDim: hd } = pkg.config;
    let next = await edge.round(prompt);
    for (let i = 0; i < 5; i++) next = await edge.round([next]);
    // down 3 → 1: layers 1 and 2 go to the cloud
    const len = edge.front.length;
    for (const kv of edge.front.exportKV(1, 3)) c.send({ type: 'kv', layer: kv.layer, length: kv.length }, encodeLayerKv(fp32, kv, KV, hd));
    c.send({ type: 'resplit', split: 1, kvCodec: 'fp32' });
    expect(await c.message()).toMatchObject({ type: 'ready', split: 1, length: len });
    let front = await SegmentRuntime.create(pkg, 0, 1, { embed: true, head: false });
    front.importKV(edge.front.exportKV(0, 1), len);
    edge.front = front;
    for (let i = 0; i < 5; i++) next = await edge.round([next]);
    // up 1 → 4: the cloud streams layers 1..3, then ready
    c.send({ type: 'resplit', split: 4, kvCodec: 'fp32' });
    const kept = edge.front.exportKV(0, 1);
    const layers: number[] = [];
    for (;;) {
      const f = await c.next();
      if ('closed' in f) throw new Error('closed');
      if (f.header.type === 'kv') {
        layers.push(f.header.layer);
        kept.push(decodeLayerKv(f.payload, f.header.layer, f.header.length, KV, hd));
        continue;
      }
      expect(f.header).toMatchObject({ type: 'ready', split: 4, length: edge.front.length });
      break;
    }
    expect(layers).toEqual([1, 2, 3]);
    front = await SegmentRuntime.create(pkg, 0, 4, { embed: true, head: false });
    front.importKV(kept, edge.front.length);
    edge.front = front;
    while (edge.generated.length < 24) next = await edge.round([next]);
    expect(edge.generated).toEqual(local);
  });

  it('resume: a new connection takes the session over with its KV; a lost answer is sent again', async () => {
    const c = cloud.connect();
    const edge = await TestEdge.start(pkg, c, 2);
    let next = await edge.round(prompt);
    next = await edge.round([next]);
    const ready = cloud.ctx.store.size;
    // drop the link after a step went out but before its answer was read
    const payload = await edge.feed([next]);
    c.send({ type: 'step', token: next }, payload);
    await new Promise((r) => setTimeout(r, 50));
    c.channel.terminate();
    await c.done;
    expect(cloud.ctx.store.size).toBe(ready); // the session outlives its connection
    const session = edge.session;
    const r = cloud.connect();
    r.send({ type: 'resume', session, secret: edge.secret, position: edge.front.length });
    expect(await r.message()).toMatchObject({ type: 'ready', session, split: 2, length: edge.front.length });
    const again = await r.message(); // the cloud had run the step: its token comes again
    expect(again).toMatchObject({ type: 'token', id: local[2] });
    // a second connection cannot take a session that is attached
    const thief = cloud.connect();
    thief.send({ type: 'resume', session, secret: edge.secret, position: 0 });
    await expectError(thief, 'bad_hello');
    await expectClosed(thief, 1008);
    // an unknown session is refused and closed
    const u = cloud.connect();
    u.send({ type: 'resume', session: 'no-such-session', secret: 'x', position: 3 });
    await expectError(u, 'unknown_session');
    await expectClosed(u, 1008);
    r.send({ type: 'close' });
    await r.done;
  });

  it('expiry: an idle session is released, its connection told expired_session, and it cannot be resumed', async () => {
    const short = testCloud(pkg, { idleMs: 150 });
    try {
      const c = short.connect();
      await TestEdge.start(pkg, c, 2);
      expect(short.ctx.store.size).toBe(1);
      await expectError(c, 'expired_session');
      await expectClosed(c, 1008);
      expect(short.ctx.store.size).toBe(0);
      const r = short.connect();
      r.send({ type: 'resume', session: 'session-1', secret: 'x', position: 0 });
      await expectError(r, 'unknown_session');
      expect(await short.ctx.metrics.text()).toMatch(/splitllm_sessions_expired_total 1/);
    } finally {
      await short.close();
    }
  });

  it('answers every error code of docs/PROTOCOL.md on its own connection, closing only where the table says', async () => {
    const D = pkg.config.dim;
    const tensor = (tokens: number) => fp32.encode(new Float32Array(tokens * D), tokens, D);
    // before hello
    const a = cloud.connect();
    a.sendRaw(new Uint8Array([1, 2]));
    await expectError(a, 'bad_frame');
    a.channel.sendText('{"type":"hello"}');
    await expectError(a, 'bad_frame');
    a.sendRaw(new Uint8Array([2, 0, 0, 0, 0xc1, 0xc1]));
    await expectError(a, 'bad_msgpack');
    a.send({ type: 'ready', session: 'x', layers: 1, split: 1, maxSeq: 1, length: 0 });
    await expectError(a, 'unknown_type');
    a.send({ type: 'prefill', tokens: 1 }, tensor(1));
    await expectError(a, 'unknown_session');
    a.send({ type: 'resume', session: '', secret: 'x', position: 0 });
    await expectError(a, 'bad_message');
    expect(a.channel.open).toBe(true); // none of these closed it
    const v = cloud.connect();
    v.send(hello(pkg, { version: PROTOCOL_VERSION + 1 }));
    await expectError(v, 'bad_version');
    await expectClosed(v, 1008);
    const m = cloud.connect();
    m.send(hello(pkg, { modelHash: 'f00d' }));
    await expectError(m, 'bad_model');
    await expectClosed(m, 1008);
    const h = cloud.connect();
    h.send(hello(pkg, { split: pkg.config.nLayers + 1 }));
    await expectError(h, 'bad_hello');
    await expectClosed(h, 1008);
    // inside a session
    const s = cloud.connect();
    await TestEdge.start(pkg, s, 2, { maxTokens: 500 });
    s.send({ type: 'step', token: 5 }, tensor(1));
    await expectError(s, 'step_before_prefill');
    // a chunk of the prompt is answered by nothing; the session is prefilled only by its last chunk
    s.send({ type: 'prefill', tokens: 1, more: true }, tensor(1));
    s.send({ type: 'step', token: 5 }, tensor(1));
    await expectError(s, 'step_before_prefill');
    s.send({ type: 'prefill', tokens: 2 }, tensor(3));
    await expectError(s, 'bad_tensor');
    const nan = tensor(1);
    new DataView(nan.buffer).setFloat32(12, NaN, true);
    s.send({ type: 'prefill', tokens: 1 }, nan);
    await expectError(s, 'nan_tensor');
    s.send({ type: 'prefill', tokens: pkg.config.maxSeq + 1 }, tensor(pkg.config.maxSeq + 1));
    await expectError(s, 'token_limit');
    s.send({ type: 'resplit', split: 1, kvCodec: 'fp32' });
    await expectError(s, 'bad_resplit');
    s.send(hello(pkg));
    await expectError(s, 'bad_hello'); // a second hello on one connection ends it
    await expectClosed(s, 1008);
    const text = await cloud.ctx.metrics.text();
    for (const code of ['bad_frame', 'bad_msgpack', 'unknown_type', 'unknown_session', 'bad_message', 'bad_version', 'bad_model', 'bad_hello', 'step_before_prefill', 'bad_tensor', 'nan_tensor', 'token_limit', 'bad_resplit']) {
      expect(text, code).toMatch(new RegExp(`splitllm_errors_total\\{code="${code}"\\} \\d+`));
    }
    expect(text).not.toMatch(/code="internal"/);
  });

  it('a failure inside the server is answered internal and closes only that connection', async () => {
    class BrokenPool extends BackSegmentPool {
      override async runtime(k: BackKey): Promise<SegmentRuntime> {
        if (k.split === 4) throw new Error('disk on fire');
        return super.runtime(k);
      }
    }
    const broken = testCloud(pkg);
    broken.ctx.pool = new BrokenPool(pkg);
    try {
      const bad = broken.connect();
      bad.send(hello(pkg, { split: 4 }));
      const e = await expectError(bad, 'internal');
      expect(e).toMatchObject({ message: 'disk on fire' });
      await expectClosed(bad, 1008);
      const good = broken.connect();
      const edge = await TestEdge.start(pkg, good, 2);
      expect(await edge.run(prompt, 6)).toEqual(local.slice(0, 6));
    } finally {
      await broken.close();
    }
  });
});

/**
 * The trust boundary: every message type with fields of the wrong type or out of range gets its
 * documented wire code from the cloud — never `internal` — while a healthy session on the same cloud
 * keeps generating the right tokens. And the edge's side: malformed cloud frames are ProtocolErrors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import type { ModelPackage } from '../models/package.js';
import { lengthPrefixed, msgpack } from '../shared/protocol/frame.js';
import { encodeFrame, parseCloudFrame, parseEdgeFrame, ProtocolError, PROTOCOL_VERSION, WIRE_CODES } from '../shared/protocol/index.js';
import { defaultModel } from './helpers/models.js';
import { expectClosed, fp32, hello, testCloud, TestEdge, type TestClient, type TestCloud } from './helpers/cloud.js';

/** A frame with any header, valid or not (what a hostile client can send). */
function rawFrame(header: unknown, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return lengthPrefixed(msgpack.pack(header), payload);
}

interface Case {
  name: string;
  header: Record<string, unknown> | unknown;
  payload?: Uint8Array;
  code: string;
  /** the frame's bytes as they are (a compact frame), instead of a msgpack header */
  raw?: Uint8Array;
}

describe('every field of every message type, wrong or out of range', () => {
  let pkg: ModelPackage;
  let cloud: TestCloud;
  let local: number[];
  let prompt: number[];
  beforeAll(async () => {
    pkg = await defaultModel();
    cloud = testCloud(pkg);
    prompt = pkg.tokenizer().encode('ROMEO:', true);
    local = await generate(await Pipeline.create(pkg), prompt, { maxTokens: 100, stopIds: [] });
  });
  afterAll(async () => cloud?.close());

  it('gets the documented code for each of 60 cases, and the healthy session beside them is untouched', async () => {
    const L = pkg.config.nLayers;
    const D = pkg.config.dim;
    const h = (over: Record<string, unknown>) => ({ ...hello(pkg), maxTokens: 10, ...over });
    const long = (n: number) => 'x'.repeat(n);
    // cases on a fresh connection (hello errors close it)
    const fresh: Case[] = [
      { name: 'hello.version a string', header: h({ version: 'one' }), code: 'bad_version' },
      { name: 'hello.version missing', header: h({ version: undefined }), code: 'bad_version' },
      { name: 'hello.version of a newer edge', header: h({ version: PROTOCOL_VERSION + 1 }), code: 'bad_version' },
      { name: 'hello.version 1 (an old edge)', header: h({ version: 1 }), code: 'bad_version' },
      { name: 'hello.version 5 (an edge from before sampled drafts carried q)', header: h({ version: 5 }), code: 'bad_version' },
      { name: 'hello.modelHash a number', header: h({ modelHash: 42 }), code: 'bad_hello' },
      { name: 'hello.resumeSecret too short to be 128 bits', header: h({ resumeSecret: 'abc' }), code: 'bad_hello' },
      { name: 'hello.resumeSecret a number', header: h({ resumeSecret: 7 }), code: 'bad_hello' },
      { name: 'hello.modelHash empty', header: h({ modelHash: '' }), code: 'bad_hello' },
      { name: 'hello.modelHash too long', header: h({ modelHash: long(129) }), code: 'bad_hello' },
      { name: 'hello.modelHash another model', header: h({ modelHash: 'ab'.repeat(32) }), code: 'bad_model' },
      { name: 'hello.split a string', header: h({ split: '2' }), code: 'bad_hello' },
      { name: 'hello.split negative', header: h({ split: -1 }), code: 'bad_hello' },
      { name: 'hello.split fractional', header: h({ split: 2.5 }), code: 'bad_hello' },
      { name: 'hello.split absurd', header: h({ split: 5000 }), code: 'bad_hello' },
      { name: 'hello.split past the model', header: h({ split: L + 1 }), code: 'bad_hello' },
      { name: 'hello.split missing', header: h({ split: undefined }), code: 'bad_hello' },
      { name: 'hello.codec a number', header: h({ codec: 7 }), code: 'bad_hello' },
      { name: 'hello.codec empty', header: h({ codec: '' }), code: 'bad_hello' },
      { name: 'hello.codec unknown', header: h({ codec: 'nonesuch' }), code: 'bad_hello' },
      { name: 'hello.codec too long', header: h({ codec: long(300) }), code: 'bad_hello' },
      { name: 'hello.maxTokens a string', header: h({ maxTokens: '10' }), code: 'bad_hello' },
      { name: 'hello.maxTokens negative', header: h({ maxTokens: -1 }), code: 'bad_hello' },
      { name: 'hello.maxTokens absurd', header: h({ maxTokens: 2 ** 25 }), code: 'bad_hello' },
      { name: 'hello.sampling a string', header: h({ sampling: 'hot' }), code: 'bad_hello' },
      { name: 'hello.sampling an array', header: h({ sampling: [1] }), code: 'bad_hello' },
      { name: 'hello.sampling.temperature negative', header: h({ sampling: { temperature: -1 } }), code: 'bad_hello' },
      { name: 'hello.sampling.temperature a string', header: h({ sampling: { temperature: 'high' } }), code: 'bad_hello' },
      { name: 'hello.sampling.topK fractional', header: h({ sampling: { topK: 1.5 } }), code: 'bad_hello' },
      { name: 'hello.sampling.topP 0', header: h({ sampling: { topP: 0 } }), code: 'bad_hello' },
      { name: 'hello.sampling.topP 2', header: h({ sampling: { topP: 2 } }), code: 'bad_hello' },
      { name: 'hello.sampling.seed a string', header: h({ sampling: { seed: 'x' } }), code: 'bad_hello' },
      { name: 'hello.stopIds a string', header: h({ stopIds: 'eos' }), code: 'bad_hello' },
      { name: 'hello.stopIds with a string', header: h({ stopIds: [1, 'x'] }), code: 'bad_hello' },
      { name: 'hello.stopIds negative', header: h({ stopIds: [-1] }), code: 'bad_hello' },
      { name: 'hello.stopIds too many', header: h({ stopIds: Array.from({ length: 2000 }, (_, i) => i) }), code: 'bad_hello' },
      { name: 'hello.backBits unsupported', header: h({ backBits: 5 }), code: 'bad_hello' },
      { name: 'hello.backBits a string', header: h({ backBits: 'eight' }), code: 'bad_hello' },
      { name: 'hello.headBits unsupported', header: h({ headBits: 5 }), code: 'bad_hello' },
      { name: 'hello.headBits fractional', header: h({ headBits: 4.5 }), code: 'bad_hello' },
      { name: 'hello.blockSize unsupported', header: h({ backBits: 4, blockSize: 48 }), code: 'bad_hello' },
      { name: 'hello.blockSize 0', header: h({ blockSize: 0 }), code: 'bad_hello' },
      { name: 'resume.session a number', header: { type: 'resume', session: 42, secret: 's', position: 0 }, code: 'bad_message' },
      { name: 'resume.session empty', header: { type: 'resume', session: '', secret: 's', position: 0 }, code: 'bad_message' },
      { name: 'resume.session too long', header: { type: 'resume', session: long(200), secret: 's', position: 0 }, code: 'bad_message' },
      { name: 'resume.position negative', header: { type: 'resume', session: 'abc', secret: 's', position: -1 }, code: 'bad_message' },
      { name: 'resume.position a string', header: { type: 'resume', session: 'abc', secret: 's', position: 'end' }, code: 'bad_message' },
      { name: 'probe.id a string', header: { type: 'probe', id: 'a', reply: 0 }, code: 'bad_message' },
      { name: 'probe.reply over 8 MiB', header: { type: 'probe', id: 1, reply: 9 * 1024 * 1024 }, code: 'bad_message' },
      { name: 'probe.reply negative', header: { type: 'probe', id: 1, reply: -5 }, code: 'bad_message' },
      { name: 'type a number', header: { type: 42 }, code: 'bad_msgpack' },
      { name: 'type missing', header: { split: 2 }, code: 'bad_msgpack' },
      { name: 'header an array', header: ['hello', 1], code: 'bad_msgpack' },
      { name: 'header a string', header: 'hello', code: 'bad_msgpack' },
      { name: 'type a cloud message', header: { type: 'token', id: 1, done: false, cloudMs: 0 }, code: 'unknown_type' },
      { name: 'type unknown', header: { type: 'bogus' }, code: 'unknown_type' },
    ];
    const kvGarbage = new Uint8Array(64).fill(7);
    // cases inside an established session (none of these codes closes the connection)
    const inSession: Case[] = [
      { name: 'prefill.tokens a string', header: { type: 'prefill', tokens: '3' }, payload: fp32.encode(new Float32Array(3 * D), 3, D), code: 'bad_tensor' },
      { name: 'prefill.tokens 0', header: { type: 'prefill', tokens: 0 }, payload: fp32.encode(new Float32Array(D), 1, D), code: 'bad_tensor' },
      { name: 'prefill.tokens negative', header: { type: 'prefill', tokens: -2 }, code: 'bad_tensor' },
      { name: 'prefill payload not a codec message', header: { type: 'prefill', tokens: 1 }, payload: new Uint8Array([1, 2, 3]), code: 'bad_tensor' },
      { name: 'step.token a string', header: { type: 'step', token: 'a' }, payload: fp32.encode(new Float32Array(D), 1, D), code: 'bad_message' },
      { name: 'step.token negative', header: { type: 'step', token: -1 }, payload: fp32.encode(new Float32Array(D), 1, D), code: 'bad_message' },
      { name: 'step.token a 64-bit integer', header: { type: 'step', token: 2 ** 40 }, payload: fp32.encode(new Float32Array(D), 1, D), code: 'bad_message' },
      { name: 'step with two tokens', header: { type: 'step', token: 1 }, payload: fp32.encode(new Float32Array(2 * D), 2, D), code: 'bad_tensor' },
      { name: 'resplit.split a string', header: { type: 'resplit', split: 'x', kvCodec: 'fp32' }, code: 'bad_resplit' },
      { name: 'resplit.split past the model', header: { type: 'resplit', split: 99, kvCodec: 'fp32' }, code: 'bad_resplit' },
      { name: 'resplit.kvCodec a number', header: { type: 'resplit', split: 1, kvCodec: 3 }, code: 'bad_resplit' },
      { name: 'resplit.kvCodec unknown', header: { type: 'resplit', split: 1, kvCodec: 'bogus' }, code: 'bad_resplit' },
      { name: 'resplit down without the KV', header: { type: 'resplit', split: 1, kvCodec: 'fp32' }, code: 'bad_resplit' },
      { name: 'kv.layer a string', header: { type: 'kv', layer: 'a', length: 1 }, code: 'bad_resplit' },
      { name: 'kv.layer absurd', header: { type: 'kv', layer: 1e6, length: 1 }, code: 'bad_resplit' },
      { name: 'kv.layer the cloud already holds', header: { type: 'kv', layer: 4, length: 1 }, code: 'bad_resplit' },
      { name: 'kv.length negative', header: { type: 'kv', layer: 0, length: -1 }, code: 'bad_resplit' },
      { name: 'kv.length not the session length', header: { type: 'kv', layer: 0, length: 10_000 }, code: 'bad_resplit' },
      { name: 'kv payload garbage', header: { type: 'kv', layer: 0, length: 0 }, payload: kvGarbage, code: 'bad_tensor' },
      { name: 'compact step with a negative token', header: null, raw: new Uint8Array([0xff, 0xff, 0xff, 0xff, 2, 0xfb, 0xff, 0xff, 0xff]), code: 'bad_message' },
      { name: 'compact frame of an unknown kind', header: null, raw: new Uint8Array([0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0, 0]), code: 'bad_frame' },
      { name: 'compact token from the edge', header: null, raw: encodeFrame({ type: 'token', id: 1, done: false, cloudMs: 1 }), code: 'unknown_type' },
    ];
    expect(fresh.length + inSession.length).toBeGreaterThanOrEqual(60);

    const healthy = await TestEdge.start(pkg, cloud.connect(), 3, { maxTokens: 200 });
    let next = await healthy.round(prompt);
    const answer = async (c: TestClient, k: Case) => {
      c.sendRaw(k.raw ?? rawFrame(k.header, k.payload));
      const m = await c.message();
      expect(m.type, k.name).toBe('error');
      if (m.type !== 'error') return;
      expect(m.code, `${k.name}: ${m.message}`).toBe(k.code);
      expect(m.message.length, k.name).toBeGreaterThan(10);
      next = await healthy.round([next]); // the healthy session goes on between every two bad messages
    };
    for (const k of fresh) {
      const c = cloud.connect();
      await answer(c, k);
      if (WIRE_CODES[k.code as keyof typeof WIRE_CODES]) await expectClosed(c, 1008);
      else expect(c.channel.open, k.name).toBe(true);
      c.channel.close();
    }
    const s = await TestEdge.start(pkg, cloud.connect(), 2, { maxTokens: 200 });
    await s.round(prompt); // the cloud holds the prompt: kv lengths below are checked against it
    for (const k of inSession) {
      // length 0 is the wrong length once the prompt is in: make the garbage case reach the decoder
      const kk = k.name === 'kv payload garbage' ? { ...k, header: { type: 'kv', layer: 0, length: s.front.length } } : k;
      await answer(s.client, kk);
    }
    expect(s.client.channel.open).toBe(true);
    // the session that got every bad message still works
    const after = await s.round([s.generated[0]!]);
    expect(after).toBe(local[1]);
    while (healthy.generated.length < fresh.length + inSession.length + 1) next = await healthy.round([next]);
    expect(healthy.generated).toEqual(local.slice(0, healthy.generated.length));
    const text = await cloud.ctx.metrics.text();
    expect(text).not.toMatch(/code="internal"/);
  });
});

describe('the edge side of the boundary: frames from the cloud', () => {
  const bad = (header: unknown) => {
    try {
      parseCloudFrame(rawFrame(header));
    } catch (e) {
      expect(e).toBeInstanceOf(ProtocolError);
      return e instanceof ProtocolError ? e.wireCode : 'none';
    }
    return 'accepted';
  };
  it('checks every field of ready, token, error, probe and kv', () => {
    const ready = { type: 'ready', session: 's', layers: 6, split: 2, maxSeq: 256, length: 0 };
    expect(parseCloudFrame(encodeFrame({ type: 'ready', session: 's', layers: 6, split: 2, maxSeq: 256, length: 0 })).header).toEqual(ready);
    expect(bad({ ...ready, session: 7 })).toBe('bad_message');
    expect(bad({ ...ready, layers: -1 })).toBe('bad_message');
    expect(bad({ ...ready, length: 'all' })).toBe('bad_message');
    expect(bad({ type: 'token', id: 'x', done: false, cloudMs: 1 })).toBe('bad_message');
    expect(bad({ type: 'token', id: -2, done: false, cloudMs: 1 })).toBe('bad_message');
    expect(bad({ type: 'token', id: 3, done: 'yes', cloudMs: 1 })).toBe('bad_message');
    expect(bad({ type: 'token', id: 3, done: true, cloudMs: NaN })).toBe('bad_message');
    expect(bad({ type: 'error', code: 5, message: 'm' })).toBe('bad_message');
    expect(bad({ type: 'error', code: 'x', message: 'm'.repeat(5000) })).toBe('bad_message');
    expect(bad({ type: 'kv', layer: -1, length: 0 })).toBe('bad_resplit');
    expect(bad({ type: 'hello', version: PROTOCOL_VERSION })).toBe('unknown_type'); // an edge message
    expect(bad({ type: 'token', id: 3, done: true, cloudMs: 1 })).toBe('accepted');
  });
  it('builds fresh objects: unknown fields are dropped, a __proto__ key does nothing', () => {
    const f = parseEdgeFrame(rawFrame({ type: 'step', token: 3, extra: { deep: 1 }, ['__proto__']: { polluted: true } }));
    expect(f.header).toEqual({ type: 'step', token: 3 });
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });
});

describe('compact token and step frames', () => {
  /** a compact frame of `kind` with the given body bytes */
  const compact = (kind: number, body: number[]): Uint8Array => new Uint8Array([0xff, 0xff, 0xff, 0xff, kind, ...body]);
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(ProtocolError);
      return e instanceof ProtocolError ? e.wireCode : 'none';
    }
    return 'accepted';
  };
  it('a token is 14 bytes and a step 9 + its payload, and both round-trip exactly', () => {
    const t = encodeFrame({ type: 'token', id: 31_999, done: true, cloudMs: 0.75 });
    expect(t.length).toBe(14);
    expect(parseCloudFrame(t).header).toEqual({ type: 'token', id: 31_999, done: true, cloudMs: 0.75 });
    expect(parseCloudFrame(encodeFrame({ type: 'token', id: -1, done: false, cloudMs: 0 })).header).toEqual({ type: 'token', id: -1, done: false, cloudMs: 0 });
    const payload = fp32.encode(new Float32Array([1, 2, 3]), 1, 3);
    const s = encodeFrame({ type: 'step', token: 7 }, payload);
    expect(s.length).toBe(9 + payload.length);
    const back = parseEdgeFrame(s);
    expect(back.header).toEqual({ type: 'step', token: 7 });
    expect([...back.payload]).toEqual([...payload]);
    // the msgpack forms are still read
    expect(parseEdgeFrame(rawFrame({ type: 'step', token: 7 }, payload)).header).toEqual({ type: 'step', token: 7 });
  });
  it('refuses malformed compact frames with their codes', () => {
    const i32 = (n: number) => [...new Uint8Array(new Int32Array([n]).buffer)];
    const f32 = (n: number) => [...new Uint8Array(new Float32Array([n]).buffer)];
    expect(code(() => parseCloudFrame(compact(1, [...i32(3), 0, ...f32(1)])))).toBe('accepted');
    expect(code(() => parseCloudFrame(compact(1, [...i32(3), 0, ...f32(1), 0])))).toBe('bad_frame'); // a byte too many
    expect(code(() => parseCloudFrame(compact(1, [...i32(3), 0])))).toBe('bad_frame'); // cut short
    expect(code(() => parseCloudFrame(compact(1, [...i32(3), 2, ...f32(1)])))).toBe('bad_message'); // done 2
    expect(code(() => parseCloudFrame(compact(1, [...i32(-2), 0, ...f32(1)])))).toBe('bad_message'); // id below −1
    expect(code(() => parseCloudFrame(compact(1, [...i32(3), 0, ...f32(NaN)])))).toBe('bad_message');
    expect(code(() => parseCloudFrame(compact(1, [...i32(3), 0, ...f32(-1)])))).toBe('bad_message');
    expect(code(() => parseCloudFrame(compact(9, [0, 0, 0, 0])))).toBe('bad_frame'); // unknown kind
    expect(code(() => parseEdgeFrame(compact(2, [0, 0])))).toBe('bad_frame'); // step cut short
    expect(code(() => parseEdgeFrame(compact(2, i32(-5))))).toBe('bad_message'); // negative token
    expect(code(() => parseCloudFrame(compact(2, i32(5))))).toBe('unknown_type'); // the cloud sends no step
    expect(code(() => parseEdgeFrame(compact(1, [...i32(3), 0, ...f32(1)])))).toBe('unknown_type'); // nor the edge a token
  });
});

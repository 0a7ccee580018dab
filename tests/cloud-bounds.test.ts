/** Values and amounts a client can send: huge hidden states and KV are refused, probes are bounded per connection. */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ModelPackage } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { encodeLayerKv } from '../quantization/kv/stream.js';
import { packKv } from '../shared/protocol/frame.js';
import { HEADER_BYTES, writeHeader } from '../quantization/activations/format.js';
import { TOPK_ID } from '../quantization/activations/sparse.js';
import { PROBE_BUDGET_BYTES } from '../cloud/session.js';
import { expectClosed, expectError, fp32, hello, testCloud, TestEdge, type TestCloud } from './helpers/cloud.js';
import { defaultModel } from './helpers/models.js';

let pkg: ModelPackage;
let cloud: TestCloud;
let prompt: number[];
let local: number[];
beforeAll(async () => {
  pkg = await defaultModel();
  cloud = testCloud(pkg);
  prompt = pkg.tokenizer().encode('ROMEO:', true);
  local = await generate(await Pipeline.create(pkg), prompt, { maxTokens: 6, stopIds: [] });
});
afterAll(() => cloud?.close());

it('a finite but huge hidden state gets bad_tensor before it reaches the model; the session then runs normally', async () => {
  const D = pkg.config.dim;
  const c = cloud.connect();
  const edge = await TestEdge.start(pkg, c, 2);
  const huge = new Float32Array(prompt.length * D).fill(0.5);
  huge[7] = 3e20;
  c.send({ type: 'prefill', tokens: prompt.length }, fp32.encode(huge, prompt.length, D));
  const e = await expectError(c, 'bad_tensor');
  expect(e).toMatchObject({ message: 'hidden state holds a value past ±1e+15 at index 7: send the front segment\'s real values' });
  expect(await edge.run(prompt, 6)).toEqual(local);
  c.send({ type: 'close' });
  await c.done;
});

it('a decompression bomb (16 KB of topk claiming 349,525 × dim values) is refused from its header, before anything is allocated; the session goes on', async () => {
  const D = pkg.config.dim;
  const T = Math.ceil((1 << 26) / D) - 1;
  // header, scale, kept count; padded to 16 KiB so the bytes-per-value sanity check alone does not refuse it
  const bomb = new Uint8Array(16 * 1024);
  writeHeader(bomb, TOPK_ID, T, D);
  new DataView(bomb.buffer).setUint32(HEADER_BYTES + 4, 1000, true);
  const c = cloud.connect();
  const edge = await TestEdge.start(pkg, c, 2);
  c.send({ type: 'prefill', tokens: 1 }, bomb);
  const e = await expectError(c, 'bad_tensor');
  expect(e).toMatchObject({ message: expect.stringMatching(new RegExp(`claims \\[${T}, ${D}\\] = ${T * D} values, over the limit of ${D}$`)) });
  // a KV frame's messages are bounded by its layer's [heads × length, headDim] the same way
  await edge.round(prompt);
  const { nKvHeads: KV, headDim: hd } = pkg.config;
  const kvBomb = new Uint8Array(16 * 1024);
  writeHeader(kvBomb, TOPK_ID, Math.floor((1 << 26) / hd) - 1, hd);
  c.send({ type: 'kv', layer: 1, length: edge.front.length }, packKv(kvBomb, kvBomb));
  expect(await expectError(c, 'bad_tensor')).toMatchObject({ message: expect.stringMatching(new RegExp(`over the limit of ${KV * edge.front.length * hd}$`)) });
  c.send({ type: 'close' });
  await c.done;
});

it('KV with a huge value is refused with bad_tensor', async () => {
  const c = cloud.connect();
  const edge = await TestEdge.start(pkg, c, 3);
  await edge.round(prompt);
  const { nKvHeads: KV, headDim: hd } = pkg.config;
  const len = edge.front.length;
  const key = new Float32Array(KV * len * hd);
  const value = new Float32Array(KV * len * hd);
  value[3] = -1e18;
  c.send({ type: 'kv', layer: 2, length: len }, encodeLayerKv(fp32, { layer: 2, key, value, length: len }, KV, hd));
  expect(await expectError(c, 'bad_tensor')).toMatchObject({ message: expect.stringMatching(/^KV of layer 2 holds a value past ±1e\+15 at index \d+:/) });
  c.send({ type: 'close' });
  await c.done;
});

it(`probes are bounded: past ${PROBE_BUDGET_BYTES >> 20} MiB of replies on one connection the cloud closes it`, async () => {
  const c = cloud.connect();
  const eight = 8 * 1024 * 1024;
  let answered = 0;
  for (let i = 0; i < 9; i++) {
    c.send({ type: 'probe', id: i, reply: eight });
    const f = await c.next();
    if ('closed' in f) break;
    if (f.header.type === 'probe') {
      expect(f.payload.length).toBe(eight);
      answered++;
    } else {
      expect(f.header).toMatchObject({ type: 'error', code: 'bad_message', message: expect.stringMatching(/probes on this connection passed/) });
      break;
    }
  }
  expect(answered).toBe(PROBE_BUDGET_BYTES / eight);
  await expectClosed(c, 1008);
});

it('a slow-header client is cut by the header timeout; an idle WebSocket session is not', async () => {
  const { startCloud } = await import('../cloud/server.js');
  const { connect } = await import('node:net');
  const { runEdge } = await import('../edge/agent.js');
  const server = await startCloud(pkg, { headersTimeoutMs: 300 });
  expect(server.app.server.headersTimeout).toBe(300);
  try {
    const port = Number(new URL(server.url).port);
    const t0 = performance.now();
    const closedAfter = await new Promise<number>((resolve) => {
      const s = connect(port, '127.0.0.1', () => s.write('GET /v1/session HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n'));
      s.on('error', () => undefined);
      s.resume(); // read, so that the server's 408 and its close are seen
      s.on('close', () => resolve(performance.now() - t0));
    });
    expect(closedAfter).toBeLessThan(2000);
    const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: 'ROMEO:', maxTokens: 6, stopIds: [] });
    expect(r.tokens).toEqual(local);
  } finally {
    await server.close();
  }
});

it('a KV budget of two sessions: the third hello gets busy, a re-split that would pass it gets bad_resplit, and the healthy sessions keep their tokens', async () => {
  const { kvReservation } = await import('../cloud/session.js');
  const c = pkg.config;
  // each session reserves its prompt and its max tokens (200, the test hello's), not the model's context
  const budget = 2 * kvReservation(c, 2, prompt.length + 200);
  const small = testCloud(pkg, { kvBudgetBytes: budget });
  try {
    const a = small.connect();
    const b = small.connect();
    const ea = await TestEdge.start(pkg, a, 2);
    const eb = await TestEdge.start(pkg, b, 2);
    // their prompts complete what they reserve
    await ea.round(prompt);
    let next = await eb.round(prompt);
    const third = small.connect();
    third.send({ type: 'hello', version: (await import('../shared/protocol/index.js')).PROTOCOL_VERSION, modelHash: pkg.hash, split: 2, codec: 'fp32', maxTokens: 10, stopIds: [] });
    expect(await expectError(third, 'busy')).toMatchObject({ message: expect.stringMatching(/KV budget/) });
    // a session that wants more back layers (split 1) would pass the budget as well
    a.send({ type: 'kv', layer: 1, length: ea.front.length }, encodeLayerKv(fp32, ea.front.exportKV(1, 2)[0]!, c.nKvHeads, c.headDim));
    a.send({ type: 'resplit', split: 1, kvCodec: 'fp32' });
    expect(await expectError(a, 'bad_resplit')).toMatchObject({ message: expect.stringMatching(/KV budget/) });
    while (eb.generated.length < 6) next = await eb.round([next]);
    expect(eb.generated).toEqual(local);
    expect(await small.ctx.metrics.text()).toMatch(new RegExp(`splitllm_kv_budget_bytes ${budget}\\b`));
    expect(await small.ctx.metrics.text()).toMatch(new RegExp(`splitllm_kv_reserved_bytes ${budget}\\b`));
  } finally {
    await small.close();
  }
});

it('KV is reserved for what a session asks: its max tokens at the hello, its prompt at the prefill; a prompt that passes the budget gets busy there', async () => {
  const { kvReservation } = await import('../cloud/session.js');
  const c = pkg.config;
  const budget = kvReservation(c, 2, 40);
  const cloud = testCloud(pkg, { kvBudgetBytes: budget });
  try {
    const a = cloud.connect();
    const edge = await TestEdge.start(pkg, a, 2, { maxTokens: 10 });
    expect(await cloud.ctx.metrics.text()).toMatch(new RegExp(`splitllm_kv_reserved_bytes ${kvReservation(c, 2, 11)}\\b`));
    await edge.round(prompt);
    expect(await cloud.ctx.metrics.text()).toMatch(new RegExp(`splitllm_kv_reserved_bytes ${kvReservation(c, 2, prompt.length + 10)}\\b`));
    // a second session fits its hello, not a prompt of 30 positions beside the first
    const b = cloud.connect();
    const other = await TestEdge.start(pkg, b, 2, { maxTokens: 4 });
    const long = Array.from({ length: 30 }, (_, i) => 3 + i);
    b.send({ type: 'prefill', tokens: long.length }, await other.feed(long));
    expect(await expectError(b, 'busy')).toMatchObject({ message: expect.stringMatching(/KV budget .* would need \d+ for 34 positions/) });
    // the first goes on untouched
    expect(await edge.round([edge.generated[0]!])).toBeGreaterThanOrEqual(0);
  } finally {
    await cloud.close();
  }
});

it('a server with --block-sizes refuses a blockwise back or head at another block, and serves float ones from one segment whatever their block', async () => {
  const c = testCloud(pkg, { blockSizes: [32] });
  try {
    for (const over of [{ backBits: 8, blockSize: 128 }, { backBits: 32, headBits: 4, blockSize: 64 }]) {
      const refused = c.connect();
      refused.send(hello(pkg, over));
      expect(await expectError(refused, 'bad_hello')).toMatchObject({ message: expect.stringMatching(/quantizes in blocks of 32, not (128|64): plan for one of those \(splitllm plan --block-sizes 32\)/) });
    }
    expect(c.ctx.pool.size).toBe(0);
    // float layers and head have no block: the hello's is not held against them
    const s = c.connect();
    const edge = await TestEdge.start(pkg, s, 2, { blockSize: 128 });
    const first = await edge.round(prompt);
    expect(c.ctx.pool.size).toBe(1);
    // and one float back segment serves them all: another block does not build a second one
    const other = await TestEdge.start(pkg, c.connect(), 2, { blockSize: 16 });
    expect(await other.round(prompt)).toBe(first);
    expect(c.ctx.pool.size).toBe(1);
  } finally {
    await c.close();
  }
});

it('back segments are built only at the precisions the server allows, and released once unused', async () => {
  const c = testCloud(pkg, { backBits: [32, 8], segmentIdleMs: 100 });
  try {
    const refused = c.connect();
    refused.send({ ...(await import('./helpers/cloud.js')).hello(pkg, { backBits: 4 }) });
    expect(await expectError(refused, 'bad_hello')).toMatchObject({ message: expect.stringMatching(/runs back layers at 32, 8 bits/) });
    expect(c.ctx.pool.size).toBe(0);
    const s = c.connect();
    const edge = await TestEdge.start(pkg, s, 2, { backBits: 8 });
    await edge.round(prompt);
    expect(c.ctx.pool.size).toBe(1);
    s.send({ type: 'close' });
    await s.done;
    await new Promise((r) => setTimeout(r, 250));
    expect(c.ctx.pool.size).toBe(0); // its weights are freed
    // and built again on demand
    const again = c.connect();
    const e2 = await TestEdge.start(pkg, again, 2, { backBits: 8 });
    await e2.round(prompt);
    expect(c.ctx.pool.size).toBe(1);
    again.send({ type: 'close' });
    await again.done;
  } finally {
    await c.close();
  }
});

it('kv for a layer the re-split does not move is refused (bad_resplit) and dropped; the session goes on at its split', async () => {
  const c = pkg.config;
  const s = cloud.connect();
  const edge = await TestEdge.start(pkg, s, 3);
  const first = await edge.round(prompt);
  const len = edge.front.length;
  // a re-split 3 → 2 moves layer 2 only; layer 0's KV is not part of it
  for (const layer of [0, 2]) s.send({ type: 'kv', layer, length: len }, encodeLayerKv(fp32, edge.front.exportKV(layer, layer + 1)[0]!, c.nKvHeads, c.headDim));
  s.send({ type: 'resplit', split: 2, kvCodec: 'fp32' });
  expect(await expectError(s, 'bad_resplit')).toMatchObject({ message: expect.stringMatching(/kv for layer\(s\) 0, which a re-split from 3 to 2 does not move/) });
  // still at split 3: the next step runs and gives the local token
  s.send({ type: 'step', token: first }, await edge.feed([first]));
  expect(await s.message()).toMatchObject({ type: 'token', id: local[1] });
  s.send({ type: 'close' });
  await s.done;
});

it('20 concurrent hellos against a limit of 6 sessions: exactly 6 ready and 14 busy (admission is taken before the hello awaits its segment); tenant caps and the KV budget likewise', async () => {
  const { kvReservation } = await import('../cloud/session.js');
  const answers = async (t: TestCloud, n: number, who?: { tenant: string; maxSessions?: number }) => {
    const clients = Array.from({ length: n }, () => t.connect(who));
    // every hello is sent before any answer is read: they are all in flight together
    for (const c of clients) c.send(hello(pkg, { maxTokens: 10 }));
    const got = await Promise.all(clients.map(async (c) => {
      const m = await c.message();
      return m.type === 'error' ? m.code : m.type;
    }));
    return { ready: got.filter((x) => x === 'ready').length, busy: got.filter((x) => x === 'busy').length, other: got.filter((x) => x !== 'ready' && x !== 'busy') };
  };
  const six = testCloud(pkg, { maxSessions: 6 });
  try {
    expect(await answers(six, 20)).toEqual({ ready: 6, busy: 14, other: [] });
    expect(six.ctx.store.size).toBe(6);
  } finally {
    await six.close();
  }
  const tenant = testCloud(pkg);
  try {
    expect(await answers(tenant, 10, { tenant: 'alice', maxSessions: 3 })).toEqual({ ready: 3, busy: 7, other: [] });
  } finally {
    await tenant.close();
  }
  // a KV budget of four sessions' reservations (10 tokens + 1 position each at split 2)
  const kv = testCloud(pkg, { kvBudgetBytes: 4 * kvReservation(pkg.config, 2, 11) });
  try {
    expect(await answers(kv, 12)).toEqual({ ready: 4, busy: 8, other: [] });
  } finally {
    await kv.close();
  }
});

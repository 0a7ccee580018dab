/**
 * Who may use the cloud, and how much: tokens checked on the HTTP upgrade (never a 101 for a refused
 * client), tenants with caps, resume secrets, held-session admission and the hello timeout.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import type { ModelPackage } from '../models/package.js';
import { cli } from './helpers/cli.js';
import { expectClosed, expectError, hello, testCloud, TestEdge, type TestCloud } from './helpers/cloud.js';
import { defaultModel } from './helpers/models.js';
import { upgrade } from './helpers/upgrade.js';

let pkg: ModelPackage;
const tmp = mkdtempSync(join(tmpdir(), 'splitllm-auth-'));
beforeAll(async () => {
  pkg = await defaultModel();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('tokens on the upgrade', () => {
  it('no token or a wrong one gets HTTP 401 and never a 101; the right one upgrades; failures are counted', async () => {
    const server = await startCloud(pkg, { token: 'correct horse battery' });
    try {
      for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: 'Basic Y29ycmVjdA==' }, { authorization: 'Bearer correct horse battery x' }] as Record<string, string>[]) {
        const r = await upgrade(server.url, headers);
        expect(r, JSON.stringify(headers)).toMatchObject({ status: 401, upgraded: false });
        expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'unauthorized' } });
      }
      expect(await upgrade(server.url, { authorization: 'Bearer correct horse battery' })).toMatchObject({ status: 101, upgraded: true });
      const m = await (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text();
      expect(m).toMatch(/splitllm_errors_total\{code="unauthorized"\} 4/);
      // the edge says what happened in one line
      await expect(runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: 'hi', maxTokens: 2, token: 'nope' })).rejects.toThrow(
        /refused the connection \(HTTP 401, unauthorized: missing or wrong bearer token.*\): pass the token/,
      );
    } finally {
      await server.close();
    }
  });

  it('a page\'s token offered as the subprotocol base64url.bearer.authorization.splitllm.<token> beside splitllm upgrades, selecting splitllm; a wrong one gets 401', async () => {
    const server = await startCloud(pkg, { token: 'correct horse battery' });
    try {
      const offer = (token: string) => ({ 'sec-websocket-protocol': `splitllm, base64url.bearer.authorization.splitllm.${Buffer.from(token).toString('base64url')}` });
      expect(await upgrade(server.url, offer('correct horse battery'))).toMatchObject({ status: 101, upgraded: true });
      expect(await upgrade(server.url, offer('wrong'))).toMatchObject({ status: 401, upgraded: false });
      expect(await upgrade(server.url, { 'sec-websocket-protocol': 'splitllm' })).toMatchObject({ status: 401, upgraded: false });
      // a ws client that offers it gets 'splitllm' selected (the token's protocol is never echoed)
      const { default: WebSocket } = await import('ws');
      const ws = new WebSocket(`${server.url}/v1/session`, ['splitllm', `base64url.bearer.authorization.splitllm.${Buffer.from('correct horse battery').toString('base64url')}`]);
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      expect(ws.protocol).toBe('splitllm');
      ws.close();
    } finally {
      await server.close();
    }
  });

  it('an empty token refuses to start, from the flag, a file or the environment', () => {
    const empty = join(tmp, 'empty-token');
    writeFileSync(empty, '\n');
    for (const [args, env] of [
      [['cloud', '--token', ''], {}],
      [['cloud', '--token-file', empty], {}],
      [['cloud'], { SPLITLLM_TOKEN: '' }],
    ] as const) {
      const r = cli([...args, '--port', '0'], { env: { ...env } });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/^splitllm: error \[E_USAGE\]: .*empty/);
    }
    const tenants = join(tmp, 'tenants.json');
    writeFileSync(tenants, JSON.stringify({ tenants: [{ name: 'a', token: '   ' }] }));
    const r = cli(['cloud', '--tenants-file', tenants, '--port', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/tenant a has an empty token/);
    // a tenants file that lists nobody would run without auth: refused too
    writeFileSync(tenants, JSON.stringify({ tenants: [] }));
    const none = cli(['cloud', '--tenants-file', tenants, '--port', '0']);
    expect(none.code).toBe(2);
    expect(none.stderr.trim()).toBe(`splitllm: error [E_USAGE]: tenants file ${tenants} lists no tenant (the server would run without auth): add a tenant, or drop --tenants-file to run without auth on purpose`);
  });

  it('tenants: each token is its own tenant with its own cap (403 past it); others are unaffected', async () => {
    const server = await startCloud(pkg, { tenants: [{ name: 'alice', token: 'alice-token-1', maxSessions: 1 }, { name: 'bob', token: 'bob-token-22' }] });
    const url = `${server.url}/v1/session`;
    try {
      const hold = new AbortController();
      const first = runEdge(pkg, { url, split: 2, prompt: 'hi', maxTokens: 200, stopIds: [], token: 'alice-token-1', signal: hold.signal, onToken: () => undefined });
      const metrics = async () => (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text();
      for (let i = 0; i < 200 && !/splitllm_sessions_held 1/.test(await metrics()); i++) await new Promise((r) => setTimeout(r, 5));
      const over = await upgrade(server.url, { authorization: 'Bearer alice-token-1' });
      expect(over).toMatchObject({ status: 403, upgraded: false });
      expect(JSON.parse(over.body)).toMatchObject({ error: { code: 'tenant_limit' } });
      const bob = await runEdge(pkg, { url, split: 2, prompt: 'hi', maxTokens: 3, stopIds: [], token: 'bob-token-22' });
      expect(bob.tokens.length).toBe(3);
      hold.abort();
      expect((await first).stats.interrupted).toBe(true);
    } finally {
      await server.close();
    }
  });
});

it('an upgrade anywhere but /v1/session gets HTTP 404 before any WebSocket, with or without a token; /v1/session still upgrades', async () => {
  const server = await startCloud(pkg, { webEdge: true, token: 's3cret' });
  try {
    for (const path of ['/healthz', '/metrics', '/readyz', '/edge/', '/edge/segment?split=2', '/v1/models', '/nowhere']) {
      const variants: Record<string, string>[] = [{}, { authorization: 'Bearer s3cret' }];
      for (const headers of variants) {
        const r = await upgrade(server.url, headers, path);
        expect(r, path).toMatchObject({ status: 404, upgraded: false });
        expect(JSON.parse(r.body), path).toEqual({ error: { code: 'not_found', message: `WebSocket upgrades are served on /v1/session only, not on ${path.split('?')[0]}` } });
      }
    }
    expect(await upgrade(server.url, { authorization: 'Bearer s3cret' })).toMatchObject({ status: 101, upgraded: true });
    expect((await upgrade(server.url)).status).toBe(401);
    // plain requests to those routes are untouched
    expect((await fetch(`${server.url.replace(/^ws/, 'http')}/healthz`)).status).toBe(200);
  } finally {
    await server.close();
  }
});

it('past --max-connections an upgrade gets HTTP 503 busy with Retry-After, before any WebSocket', async () => {
  const { default: WebSocket } = await import('ws');
  const server = await startCloud(pkg, { maxConnections: 2 });
  const open: InstanceType<typeof WebSocket>[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const ws = new WebSocket(`${server.url}/v1/session`);
      await new Promise((r) => ws.once('open', r));
      open.push(ws);
    }
    const third = await upgrade(server.url);
    expect(third).toMatchObject({ status: 503, upgraded: false });
    expect(JSON.parse(third.body)).toMatchObject({ error: { code: 'busy' } });
    open[0]!.close();
    await new Promise((r) => open[0]!.once('close', r));
    for (let i = 0; i < 50 && (await upgrade(server.url)).status !== 101; i++) await new Promise((r) => setTimeout(r, 10));
    expect((await upgrade(server.url)).status).toBe(101);
  } finally {
    for (const ws of open) ws.terminate();
    await server.close();
  }
});

describe('sessions', () => {
  let cloud: TestCloud;
  let local: number[];
  let prompt: number[];
  beforeAll(async () => {
    cloud = testCloud(pkg, { maxSessions: 4, helloTimeoutMs: 300 });
    prompt = pkg.tokenizer().encode('ROMEO:', true);
    local = await generate(await Pipeline.create(pkg), prompt, { maxTokens: 8, stopIds: [] });
  });
  afterAll(() => cloud?.close());

  it('a resume with the id but not the secret (or from another tenant) is refused, and the owner goes on intact', async () => {
    const c = cloud.connect({ tenant: 'alice' });
    const edge = await TestEdge.start(pkg, c, 2);
    let next = await edge.round(prompt);
    next = await edge.round([next]);
    c.channel.terminate();
    await c.done;
    for (const [who, secret] of [
      [{ tenant: 'alice' }, 'not-the-secret'],
      [{ tenant: 'alice' }, edge.secret.slice(0, -1)],
      [{ tenant: 'mallory' }, edge.secret],
    ] as const) {
      const thief = cloud.connect(who);
      thief.send({ type: 'resume', session: edge.session, secret, position: edge.front.length });
      await expectError(thief, 'unknown_session');
      await expectClosed(thief, 1008);
    }
    const owner = cloud.connect({ tenant: 'alice' });
    owner.send({ type: 'resume', session: edge.session, secret: edge.secret, position: edge.front.length });
    expect(await owner.message()).toMatchObject({ type: 'ready', session: edge.session, length: edge.front.length });
    // the cloud had run the last step: it sends that token again in case it was lost
    expect(await owner.message()).toMatchObject({ type: 'token', id: next });
    const got = [...edge.generated];
    while (got.length < 8) {
      owner.send({ type: 'step', token: next }, await edge.feed([next]));
      const t = await owner.message();
      if (t.type !== 'token') throw new Error(JSON.stringify(t));
      got.push((next = t.id));
    }
    expect(got).toEqual(local);
    owner.send({ type: 'close' });
    await owner.done;
  });

  it('a resume that races a step still running for the dropped connection waits for it: no step is lost or run twice', async () => {
    const c = cloud.connect({ tenant: 'alice' });
    const edge = await TestEdge.start(pkg, c, 2);
    let next = await edge.round(prompt);
    next = await edge.round([next]);
    // the link drops the moment the step went out: the cloud is still running it when the resume comes
    c.send({ type: 'step', token: next }, await edge.feed([next]));
    c.channel.terminate();
    const r = cloud.connect({ tenant: 'alice' });
    r.send({ type: 'resume', session: edge.session, secret: edge.secret, position: edge.front.length });
    expect(await r.message()).toMatchObject({ type: 'ready', length: edge.front.length });
    expect(await r.message()).toMatchObject({ type: 'token', id: local[2] });
    r.send({ type: 'close' });
    await r.done;
    await c.done;
  });

  it('--max-sessions counts held sessions: ten clients that hello, prefill and leave keep at most 4, the rest get busy', async () => {
    expect(cloud.ctx.store.size).toBe(0);
    const outcomes: string[] = [];
    for (let i = 0; i < 10; i++) {
      const c = cloud.connect();
      try {
        const edge = await TestEdge.start(pkg, c, 2);
        await edge.round(prompt); // prefill: the session now holds KV
        outcomes.push('held');
      } catch {
        outcomes.push('refused');
      }
      c.channel.terminate(); // leave without close: the session waits for a resume
      await c.done;
    }
    expect(outcomes).toEqual([...Array(4).fill('held'), ...Array(6).fill('refused')]);
    expect(cloud.ctx.store.size).toBe(4);
    expect(await cloud.ctx.metrics.text()).toMatch(/splitllm_errors_total\{code="busy"\} 6/);
    // and a refused hello is told why
    const c = cloud.connect();
    c.send(hello(pkg));
    expect(await expectError(c, 'busy')).toMatchObject({ message: expect.stringMatching(/limit of 4 sessions/) });
    cloud.ctx.store.releaseAll();
  });

  it('a connection that never says hello is closed after the hello timeout and locks nobody out', async () => {
    const silent = cloud.connect();
    const t0 = performance.now();
    await expectError(silent, 'hello_timeout');
    await expectClosed(silent, 1008);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
    const c = cloud.connect();
    const edge = await TestEdge.start(pkg, c, 2);
    expect(await edge.run(prompt, 4)).toEqual(local.slice(0, 4));
    c.send({ type: 'close' });
    await c.done;
  });
});

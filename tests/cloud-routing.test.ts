/**
 * Routable sessions: the edge chooses its session id and puts it in every upgrade URL
 * (`/v1/session?session=ID`), where a balancer can hash on it; the cloud accepts only well-formed ids and
 * refuses one that is already held.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import type { ModelPackage } from '../models/package.js';
import WebSocket from 'ws';
import { encodeFrame, isSessionId, newSessionId, parseCloudFrame, type CloudMessage } from '../shared/protocol/index.js';
import { droppingConnector } from './helpers/channels.js';
import { expectClosed, expectError, hello, testCloud, TestEdge } from './helpers/cloud.js';
import { defaultModel } from './helpers/models.js';
import { upgrade } from './helpers/upgrade.js';

let pkg: ModelPackage;
beforeAll(async () => {
  pkg = await defaultModel();
});

/** JSON log lines of a cloud, kept in memory. */
function logLines(): { lines: Record<string, unknown>[]; stream: { write(l: string): void } } {
  const lines: Record<string, unknown>[] = [];
  return { lines, stream: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } };
}

describe('session ids', () => {
  it('are 128 random bits as 22 base64url characters, all distinct', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const id = newSessionId();
      expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
      ids.add(id);
    }
    expect(ids.size).toBe(2000);
    // the last character carries 2 bits and 4 zero bits: one of A, Q, g, w
    for (const id of ids) expect('AQgw').toContain(id[21]);
    expect(isSessionId('A'.repeat(22))).toBe(true);
    for (const bad of ['', 'A'.repeat(21), 'A'.repeat(23), 'A'.repeat(21) + '=', 'A'.repeat(21) + '/', 'A'.repeat(21) + '+']) expect(isSessionId(bad), bad).toBe(false);
  });
});

describe('the session parameter on the upgrade', () => {
  it('the first connection and every resume carry the edge-chosen id; the cloud opens the session under it', async () => {
    const log = logLines();
    const server = await startCloud(pkg, { logLevel: 'info', logStream: log.stream });
    try {
      const url = `${server.url}/v1/session`;
      const local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode('Once upon a time', true), { maxTokens: 24, stopIds: [] });
      const id = newSessionId();
      const r = await runEdge(pkg, { url, split: 2, prompt: 'Once upon a time', maxTokens: 24, stopIds: [], sessionId: id, connect: droppingConnector(url, [3, 10]) });
      expect(r.tokens).toEqual(local);
      expect(r.stats.resumes).toBe(2);
      const upgrades = log.lines.filter((l) => l.msg === 'incoming request').map((l) => (l.req as { url: string }).url);
      expect(upgrades).toEqual([`/v1/session?session=${id}`, `/v1/session?session=${id}`, `/v1/session?session=${id}`]);
      expect(log.lines.filter((l) => l.event === 'session_open').map((l) => l.session)).toEqual([id]);
      expect(log.lines.filter((l) => l.event === 'session_resume').map((l) => l.session)).toEqual([id, id]);
      // without sessionId the edge draws one
      log.lines.length = 0;
      await runEdge(pkg, { url, split: 2, prompt: 'hi', maxTokens: 2 });
      const opened = log.lines.find((l) => l.event === 'session_open')?.session;
      expect(typeof opened === 'string' && isSessionId(opened)).toBe(true);
      expect(log.lines.find((l) => l.msg === 'incoming request')?.req).toMatchObject({ url: `/v1/session?session=${String(opened)}` });
    } finally {
      await server.close();
    }
  });

  it('a malformed id gets HTTP 400 bad_session_id and never a 101; an id held by a live connection gets 409', async () => {
    const server = await startCloud(pkg);
    try {
      for (const q of ['?session=short', `?session=${'A'.repeat(21)}%3D`, `?session=${'A'.repeat(23)}`, `?session=${'A'.repeat(22)}&session=${'B'.repeat(22)}`, '?session=']) {
        const r = await upgrade(server.url, {}, `/v1/session${q}`);
        expect(r, q).toMatchObject({ status: 400, upgraded: false });
        expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'bad_session_id' } });
      }
      expect(await upgrade(server.url, {}, `/v1/session?session=${newSessionId()}`)).toMatchObject({ status: 101, upgraded: true });
      // a live session: a second connection for its id is refused before the upgrade, and the session goes on
      const id = newSessionId();
      const ws = new WebSocket(`${server.url}/v1/session?session=${id}`);
      await new Promise((r) => ws.once('open', r));
      const answer = new Promise<CloudMessage>((r) => ws.once('message', (d: Buffer) => r(parseCloudFrame(new Uint8Array(d)).header)));
      ws.send(encodeFrame(hello(pkg)));
      expect(await answer).toMatchObject({ type: 'ready', session: id });
      const twin = await upgrade(server.url, {}, `/v1/session?session=${id}`);
      expect(twin).toMatchObject({ status: 409, upgraded: false });
      expect(JSON.parse(twin.body)).toMatchObject({ error: { code: 'session_in_use' } });
      ws.send(encodeFrame({ type: 'close' }));
      await new Promise((r) => ws.once('close', r));
      const m = await (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text();
      expect(m).toMatch(/splitllm_errors_total\{code="bad_session_id"\} 5/);
      expect(m).toMatch(/splitllm_errors_total\{code="session_in_use"\} 1/);
    } finally {
      await server.close();
    }
  });
});

describe('a held id is not opened twice (in-memory cloud)', () => {
  it('a hello for a held id gets session_in_use and closes; a live one is refused too; the owner goes on intact', async () => {
    const cloud = testCloud(pkg);
    try {
      const prompt = pkg.tokenizer().encode('Once upon a time', true);
      const local = await generate(await Pipeline.create(pkg), prompt, { maxTokens: 6, stopIds: [] });
      const id = newSessionId();
      const owner = cloud.connect({ tenant: 'default', session: id });
      const edge = await TestEdge.start(pkg, owner, 2);
      expect(edge.session).toBe(id);
      let next = await edge.round(prompt);
      // the same id from another connection while the owner is attached
      const twin = cloud.connect({ tenant: 'default', session: id });
      twin.send(hello(pkg));
      await expectError(twin, 'session_in_use');
      await expectClosed(twin, 1008);
      // a resume on a connection opened for another id
      const other = cloud.connect({ tenant: 'default', session: newSessionId() });
      other.send({ type: 'resume', session: id, secret: edge.secret, position: edge.front.length });
      await expectError(other, 'bad_message');
      await expectClosed(other, 1008);
      while (edge.generated.length < 6) next = await edge.round([next]);
      expect(edge.generated).toEqual(local);
      // dropped, the session is still held: a hello for its id is refused, the resume with its secret works
      owner.channel.terminate();
      await owner.done;
      const thief = cloud.connect({ tenant: 'default', session: id });
      thief.send(hello(pkg));
      await expectError(thief, 'session_in_use');
      const back = cloud.connect({ tenant: 'default', session: id });
      back.send({ type: 'resume', session: id, secret: edge.secret, position: edge.front.length });
      expect(await back.message()).toMatchObject({ type: 'ready', session: id, length: edge.front.length });
      back.send({ type: 'close' });
      await back.done;
    } finally {
      await cloud.close();
    }
  });
});

/**
 * Connections bounded in count, not only in time (issue 35, finding 5): raw TCP sockets that never send a
 * byte are capped (all of them, and per remote address when asked), and one tenant's upgrades cannot take
 * every WebSocket slot. A healthy client beside each attack keeps its exact tokens.
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import type { ModelPackage } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { defaultModel } from './helpers/models.js';

let pkg: ModelPackage;
let local: number[];
beforeAll(async () => {
  pkg = await defaultModel();
  local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode('ROMEO:', true), { maxTokens: 8, stopIds: [] });
});

const sockets: Socket[] = [];
afterAll(() => {
  for (const s of sockets) s.destroy();
});

/** `n` TCP connections from `localAddress` that never send a byte; resolves once each is connected or refused. */
async function silent(port: number, n: number, localAddress = '127.0.0.1'): Promise<Socket[]> {
  const out: Socket[] = [];
  await Promise.all(
    Array.from({ length: n }, async () => {
      const s = connect({ port, host: '127.0.0.1', localAddress });
      s.on('error', () => undefined);
      sockets.push(s);
      out.push(s);
      await Promise.race([once(s, 'connect'), once(s, 'close')]);
    }),
  );
  return out;
}

const held = (server: { app: { server: { getConnections(cb: (e: Error | null, n: number) => void): void } } }) =>
  new Promise<number>((resolve, reject) => server.app.server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
const errorsOf = async (url: string, code: string) => Number(new RegExp(`^splitllm_errors_total\\{code="${code}"\\} (\\d+)$`, 'm').exec(await (await fetch(`${url.replace('ws', 'http')}/metrics`)).text())?.[1] ?? 0);

it('--max-sockets: 40 silent sockets against a cap of 16 — the server holds at most 16 (the rest closed as accepted, counted), and serves again once they go', async () => {
  const server = await startCloud(pkg, { maxSockets: 16 });
  try {
    const port = Number(new URL(server.url).port);
    const attack = await silent(port, 40);
    // the server closes what it does not take: wait until it has seen all 40
    for (let i = 0; i < 500 && (await held(server)) + attack.filter((s) => s.destroyed || s.readableEnded).length < 40; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await held(server)).toBeLessThanOrEqual(16);
    for (const s of attack) s.destroy();
    for (let i = 0; i < 500 && (await held(server)) > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await errorsOf(server.url, 'socket_limit')).toBeGreaterThanOrEqual(24);
    const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: 'ROMEO:', maxTokens: 8, stopIds: [] });
    expect(r.tokens).toEqual(local);
  } finally {
    await server.close();
  }
});

it('--max-sockets-per-address: 30 silent sockets from 127.0.0.2 hold 8; a client from 127.0.0.1 meanwhile gets its exact tokens', async () => {
  const server = await startCloud(pkg, { maxSocketsPerAddress: 8 });
  try {
    const port = Number(new URL(server.url).port);
    const attack = await silent(port, 30, '127.0.0.2');
    for (let i = 0; i < 500 && attack.filter((s) => s.destroyed || s.readableEnded).length < 22; i++) await new Promise((r) => setTimeout(r, 10));
    expect(attack.filter((s) => !s.destroyed && !s.readableEnded)).toHaveLength(8);
    expect(await errorsOf(server.url, 'address_limit')).toBe(22);
    const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: 'ROMEO:', maxTokens: 8, stopIds: [] });
    expect(r.tokens).toEqual(local);
  } finally {
    for (const s of sockets) s.destroy();
    await server.close();
  }
});

it('tenants without caps: one tenant holds at most three quarters of --max-connections (403 past it); the other still gets a session with its exact tokens', async () => {
  const server = await startCloud(pkg, { maxConnections: 8, tenants: [{ name: 'mallory', token: 'mallory-token' }, { name: 'alice', token: 'alice-token' }] });
  try {
    // silent upgrades of one tenant: 6 of 8 slots, then 403
    const held: { status: number }[] = [];
    for (let i = 0; i < 8; i++) held.push(await upgradeHeld(server.url, 'mallory-token'));
    expect(held.map((h) => h.status)).toEqual([101, 101, 101, 101, 101, 101, 403, 403]);
    const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: 'ROMEO:', maxTokens: 8, stopIds: [], token: 'alice-token' });
    expect(r.tokens).toEqual(local);
  } finally {
    for (const s of sockets) s.destroy();
    await server.close();
  }
});

/** An upgrade that, when it succeeds, keeps its socket open and silent (unlike `upgrade`, which closes it). */
function upgradeHeld(url: string, token: string): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url.replace(/^ws/, 'http') + '/v1/session');
    const s = connect({ port: Number(u.port), host: u.hostname });
    sockets.push(s);
    s.on('error', reject);
    s.on('connect', () => s.write(`GET /v1/session HTTP/1.1\r\nHost: ${u.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${token}\r\n\r\n`));
    s.once('data', (d: Buffer) => resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(d.toString())?.[1]) }));
  });
}

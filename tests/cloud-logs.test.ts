/** The cloud's log: one JSON line per session open/close, per error and per refused upgrade; never a token or a resume secret. */
import { calibrationContexts } from '../models/calibration-file.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import type { ModelPackage } from '../models/package.js';
import { defaultModel } from './helpers/models.js';

const lines: Record<string, unknown>[] = [];
let pkg: ModelPackage;
let cloud: CloudServer;
beforeAll(async () => {
  pkg = await defaultModel();
  cloud = await startCloud(pkg, { tenants: [{ name: 'alice', token: 'alice-secret-token' }], logLevel: 'info', logStream: { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) } });
});
afterAll(() => cloud?.close());

it('logs session open and close with tenant, split, precisions, codec, tokens, bytes and duration; errors with their code; refused upgrades with the address', async () => {
  const url = `${cloud.url}/v1/session`;
  const r = await runEdge(pkg, { url, split: 2, codec: 'ts-tabq', codecEnv: calibrationContexts({}, pkg), prompt: 'ROMEO:', maxTokens: 6, stopIds: [], token: 'alice-secret-token' });
  await expect(runEdge(pkg, { url, split: 2, prompt: 'x', maxTokens: 2, token: 'wrong-token' })).rejects.toThrow(/401/);
  await expect(runEdge(pkg, { url, split: 2, backBits: 5, prompt: 'x', maxTokens: 2, token: 'alice-secret-token' })).rejects.toThrow(/bad_hello/);
  await new Promise((res) => setTimeout(res, 50));
  const open = lines.find((l) => l['event'] === 'session_open');
  const close = lines.find((l) => l['event'] === 'session_close');
  expect(open).toMatchObject({ level: 30, tenant: 'alice', split: 2, backBits: 32, blockSize: 32, maxTokens: 6 });
  expect(String(open?.['codec'])).toMatch(/^ts-tabq/);
  expect(close).toMatchObject({ tenant: 'alice', tokens: r.tokens.length, reason: 'edge closed it' });
  expect(Number(close?.['bytesIn'])).toBeGreaterThan(0);
  expect(Number(close?.['seconds'])).toBeGreaterThan(0);
  expect(lines.find((l) => l['event'] === 'error')).toMatchObject({ level: 40, code: 'bad_hello', tenant: 'alice' });
  expect(lines.find((l) => l['code'] === 'unauthorized')).toMatchObject({ level: 40, remote: '127.0.0.1' });
  const all = JSON.stringify(lines);
  expect(all).not.toContain('alice-secret-token');
  expect(all).not.toContain('wrong-token');
  expect(all).not.toMatch(/resumeSecret|"secret"/);
});

it("a session's whole log (at debug level) and /metrics carry none of its token ids or text (error messages name where a bad value is, never the value: cloud-bounds.test.ts)", async () => {
  const debugLines: string[] = [];
  const server = await startCloud(pkg, { logLevel: 'debug', logStream: { write: (l: string) => debugLines.push(l) } });
  try {
    const url = `${server.url}/v1/session`;
    const prompt = 'JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?';
    const r = await runEdge(pkg, { url, split: 2, prompt, maxTokens: 24, stopIds: [] });
    const promptIds = pkg.tokenizer().encode(prompt, true);
    const out = pkg.tokenizer().decode(r.tokens);
    await new Promise((res) => setTimeout(res, 50));
    const metrics = await (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text();
    const all = debugLines.join('') + metrics;
    // the text, in pieces of 6 characters or more
    for (const text of [prompt, out]) {
      for (const piece of text.split(/\s+/).filter((w) => w.length >= 6)) expect(all, piece).not.toContain(piece);
    }
    // the ids: no run of 3 of the session's consecutive ids as a list (JSON arrays, comma- or space-separated)
    const ids = [...promptIds, ...r.tokens];
    for (let i = 0; i + 3 <= ids.length; i++) {
      const run = ids.slice(i, i + 3);
      expect(all).not.toMatch(new RegExp(`(^|[^\\d.])${run.join('(,|, | )')}($|[^\\d.])`));
    }
    // and no field that would hold them
    for (const l of debugLines) {
      const o = JSON.parse(l) as Record<string, unknown>;
      for (const k of ['ids', 'tokenIds', 'prompt', 'text', 'token', 'hidden', 'values', 'payload']) expect(o, `${k} in ${l}`).not.toHaveProperty(k);
    }
    expect(debugLines.length).toBeGreaterThan(3);
  } finally {
    await server.close();
  }
});

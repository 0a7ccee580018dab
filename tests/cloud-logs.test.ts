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

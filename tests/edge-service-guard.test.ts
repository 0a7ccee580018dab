/**
 * What the edge service lets in (issue 35, finding 8): API keys for its own clients, the Host header
 * checked against its names (DNS rebinding), prompts refused before tokenizing when they cannot fit, and
 * `edge serve` refusing to listen beyond loopback without a key (and warning on every interface).
 */
import { request } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { EdgeAgent } from '../edge/edge-agent.js';
import { MAX_CHARS_PER_TOKEN, startEdgeService, type EdgeService } from '../edge/service.js';
import type { ModelPackage } from '../models/package.js';
import { spawn } from 'node:child_process';
import { cli } from './helpers/cli.js';
import { REPO } from './helpers/fixtures.js';
import { defaultModel } from './helpers/models.js';

let pkg: ModelPackage;
let cloud: CloudServer;
let agent: EdgeAgent;
let service: EdgeService;
const tmp = mkdtempSync(join(tmpdir(), 'splitllm-guard-'));

beforeAll(async () => {
  pkg = await defaultModel();
  cloud = await startCloud(pkg);
  agent = await EdgeAgent.create({ model: pkg, cloud: cloud.url, split: 2 });
  service = await startEdgeService(agent, { port: 0, apiKeys: ['key-one', 'key-two'], allowedHosts: ['edge.internal'] });
});
afterAll(async () => {
  await service?.close();
  await agent?.close();
  await cloud?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** A request with a Host header of our choosing (fetch does not let one set it). */
function get(path: string, headers: Record<string, string>): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  const u = new URL(service.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, headers }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

it('API keys: none or a wrong one gets 401 invalid_api_key (WWW-Authenticate: Bearer); either key works with the official client; /health and /ready need none', async () => {
  const none = await get('/v1/models', {});
  expect(none.status).toBe(401);
  expect(JSON.parse(none.body)).toMatchObject({ error: { code: 'invalid_api_key', type: 'invalid_request_error' } });
  expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
  expect((await get('/v1/models', { authorization: 'Bearer key-three' })).status).toBe(401);
  expect((await get('/health', {})).status).toBe(200);
  for (const apiKey of ['key-one', 'key-two']) {
    const client = new OpenAI({ baseURL: `${service.url}/v1`, apiKey, maxRetries: 0 });
    const r = await client.completions.create({ model: pkg.manifest.name, prompt: 'ROMEO:', max_tokens: 4, temperature: 0 });
    expect(r.usage?.completion_tokens).toBe(4);
  }
  const wrong = new OpenAI({ baseURL: `${service.url}/v1`, apiKey: 'nope', maxRetries: 0 });
  await expect(wrong.models.list()).rejects.toMatchObject({ status: 401, code: 'invalid_api_key' });
});

it('Host: a name that is not this service\'s (a rebinding page) gets 403 host_not_allowed before anything else; loopback names, the bind address and --allowed-hosts pass', async () => {
  const port = new URL(service.url).port;
  const evil = await get('/v1/models', { host: `attacker.example:${port}`, authorization: 'Bearer key-one' });
  expect(evil.status).toBe(403);
  expect(JSON.parse(evil.body)).toMatchObject({ error: { code: 'host_not_allowed' } });
  // before auth too: a rebinding page learns nothing from /health either
  expect((await get('/health', { host: 'attacker.example' })).status).toBe(403);
  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, 'edge.internal', `EDGE.internal:${port}`]) {
    expect((await get('/v1/models', { host, authorization: 'Bearer key-one' })).status, host).toBe(200);
  }
});

it('a prompt past maxSeq × 32 characters is refused with 400 context_length_exceeded before it is tokenized', async () => {
  const chars = agent.maxSeq * MAX_CHARS_PER_TOKEN + 1;
  const r = await fetch(`${service.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer key-one' }, body: JSON.stringify({ prompt: 'a'.repeat(chars), max_tokens: 1 }) });
  expect(r.status).toBe(400);
  const e = (await r.json()) as { error: { code: string; message: string; param: string } };
  expect(e.error).toMatchObject({ code: 'context_length_exceeded', param: 'prompt' });
  expect(e.error.message).toBe(`the prompt has ${chars} characters: no tokenizer fits that in this model's context of ${agent.maxSeq} tokens (at most ${MAX_CHARS_PER_TOKEN} characters a token): shorten it`);
});

it('edge serve beyond loopback without --api-key-file refuses to start (exit 2, naming the fix); an empty key file is refused too', () => {
  const r = cli(['edge', 'serve', '--cloud', 'ws://127.0.0.1:9', '--split', '2', '--host', '0.0.0.0', '--port', '0']);
  expect(r.code).toBe(2);
  expect(r.stderr.trim()).toBe("splitllm: error [E_USAGE]: --host 0.0.0.0 reaches beyond this device, and without --api-key-file anyone who reaches the port spends this device's cloud token: give --api-key-file (or --insecure-no-api-key to accept that)");
  const empty = join(tmp, 'keys');
  writeFileSync(empty, '\n\n');
  const e = cli(['edge', 'serve', '--cloud', 'ws://127.0.0.1:9', '--split', '2', '--host', '0.0.0.0', '--api-key-file', empty]);
  expect(e.code).toBe(2);
  expect(e.stderr).toMatch(/--api-key-file .* holds no key/);
});

it('edge serve on 0.0.0.0 with --insecure-no-api-key starts with a warning naming the exposure', async () => {
  const child = spawn(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'edge', 'serve', '--cloud', 'ws://127.0.0.1:9', '--split', '2', '--host', '0.0.0.0', '--port', '0', '--insecure-no-api-key'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    for (let i = 0; i < 600 && !/warning/.test(stderr); i++) await new Promise((r) => setTimeout(r, 50));
    expect(stderr).toMatch(/splitllm edge service: warning: listening on every interface \(0\.0\.0\.0\) without an API key: any machine that reaches port \d+ can use it/);
  } finally {
    child.kill('SIGKILL');
  }
});

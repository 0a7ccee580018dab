/** TLS: the cloud serves wss:// with a certificate; the edge trusts it through --ca-file (a self-signed one here). */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { EdgeAgent } from '../edge/edge-agent.js';
import type { ModelPackage } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { cli, cliAsync } from './helpers/cli.js';
import { defaultModel } from './helpers/models.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-tls-'));
const cert = join(tmp, 'cert.pem');
const key = join(tmp, 'key.pem');
let pkg: ModelPackage;
let cloud: CloudServer;

beforeAll(async () => {
  // a self-signed certificate for 127.0.0.1, as README's TLS example makes one
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  pkg = await defaultModel();
  cloud = await startCloud(pkg, { tls: { cert: readFileSync(cert), key: readFileSync(key) }, token: 'tls-token' });
});
afterAll(async () => {
  await cloud?.close();
  rmSync(tmp, { recursive: true, force: true });
});

it('a wss:// round trip with the self-signed certificate as CA gives the tokens of local generation', async () => {
  expect(cloud.url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
  const ids = pkg.tokenizer().encode('ROMEO:', true);
  const local = await generate(await Pipeline.create(pkg), ids, { maxTokens: 12, stopIds: [] });
  const r = await runEdge(pkg, { url: `${cloud.url}/v1/session`, split: 2, prompt: 'ROMEO:', maxTokens: 12, stopIds: [], token: 'tls-token', ca: readFileSync(cert) });
  expect(r.tokens).toEqual(local);
  const agent = await EdgeAgent.create({ model: pkg, cloud: cloud.url, split: 2, token: 'tls-token', ca: readFileSync(cert) });
  try {
    expect(await agent.cloudReachable()).toBe(true);
    expect((await agent.generate({ prompt: 'ROMEO:', maxTokens: 12, sampling: { temperature: 0 } })).tokens).toEqual(local.slice(0, 12));
  } finally {
    await agent.close();
  }
});

it('without the CA the edge refuses the certificate in one line, naming --ca-file; the CLI takes --ca-file', async () => {
  // cliAsync: the cloud runs in this process and must keep answering while the CLI runs
  const bad = await cliAsync(['edge', '--cloud', cloud.url, '--token', 'tls-token', '--split', '2', '--prompt', 'hi', '--max-tokens', '2']);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toMatch(/^splitllm: error \[E_CONNECTION\]: cannot reach the cloud at wss:.*self-signed certificate.*--ca-file\n$/);
  const ok = await cliAsync(['edge', '--cloud', cloud.url, '--token', 'tls-token', '--ca-file', cert, '--split', '2', '--prompt', 'hi', '--max-tokens', '2', '--json']);
  expect(ok.code, ok.stderr).toBe(0);
  expect((JSON.parse(ok.stdout) as { tokens: number[] }).tokens.length).toBe(2);
});

it('a certificate that does not load is a one-line config error, and --tls-cert needs --tls-key', () => {
  const junk = join(tmp, 'junk.pem');
  writeFileSync(junk, 'not a certificate\n');
  const r = cli(['cloud', '--tls-cert', junk, '--tls-key', key, '--port', '0']);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/^splitllm: error \[E_BAD_CONFIG\]: the TLS certificate and key do not load/);
  expect(cli(['cloud', '--tls-cert', cert, '--port', '0']).stderr).toMatch(/give --tls-cert and --tls-key together/);
});

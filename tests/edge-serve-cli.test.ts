/** `splitllm edge serve` as a process (token from a file, SIGTERM), and the systemd unit that runs it. */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterAll, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { startCloud } from '../cloud/server.js';
import { encodeFrame, parseEdgeFrame } from '../shared/protocol/index.js';
import { REPO } from './helpers/fixtures.js';
import { defaultModel } from './helpers/models.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-serve-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** `splitllm edge serve ARGS` as a process, once it says where it listens: its url, its stderr so far, its exit. */
async function serveProcess(args: string[]) {
  const child = spawn(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'edge', 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: { child: typeof child; stderr: string; url?: string; exited: Promise<number | null> } = { child, stderr: '', exited: new Promise((r) => child.once('exit', (code) => r(code))) };
  child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
  for (let i = 0; i < 300 && !/edge service on (http:\/\/[^ ]+)/.test(out.stderr); i++) await new Promise((r) => setTimeout(r, 50));
  out.url = /edge service on (http:\/\/[^ ]+)/.exec(out.stderr)?.[1];
  return out;
}

it('edge serve reads its token from a file, serves the API, and exits 0 on SIGTERM', async () => {
  const pkg = await defaultModel();
  const cloud = await startCloud(pkg, { token: 's3cret' });
  const tokenFile = join(tmp, 'token');
  writeFileSync(tokenFile, 's3cret\n');
  const serve = await serveProcess(['--cloud', cloud.url, '--token-file', tokenFile, '--split', '2', '--port', '0']);
  const { child, url, exited } = serve;
  try {
    expect(url, serve.stderr).toBeDefined();
    expect(serve.stderr).toMatch(/reachable/);
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'ROMEO:', max_tokens: 5, temperature: 0 }) });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(5);
    expect((await fetch(`${url}/ready`)).status).toBe(200);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(serve.stderr).toMatch(/stopping/);
  } finally {
    child.kill('SIGKILL');
    await cloud.close();
  }
});

it('a token file that is empty is a usage error naming the file', () => {
  const empty = join(tmp, 'empty');
  writeFileSync(empty, '\n');
  const r = spawnSync(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'edge', 'serve', '--cloud', 'ws://127.0.0.1:9', '--token-file', empty, '--split', '2'], { encoding: 'utf8' });
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/^splitllm: error \[E_USAGE\]: --token-file .*empty holds an empty token/);
});

it('deploy/systemd/splitllm-edge.service passes the token as a credential file, never on the command line', () => {
  const unit = readFileSync(join(REPO, 'deploy', 'systemd', 'splitllm-edge.service'), 'utf8');
  expect(unit).toMatch(/^LoadCredential=token:/m);
  expect(unit).toMatch(/^ExecStart=.* edge serve .*--token-file \$\{CREDENTIALS_DIRECTORY\}\/token/m);
  expect(unit).not.toMatch(/--token /);
  expect(unit).toMatch(/^Restart=on-failure$/m);
  const verify = spawnSync('systemd-analyze', ['verify', join(REPO, 'deploy', 'systemd', 'splitllm-edge.service')], { encoding: 'utf8' });
  if (verify.error) {
    process.stderr.write('[splitllm tests] systemd-analyze is not installed: the unit file was checked by pattern only\n');
    return;
  }
  expect(verify.stderr.trim(), verify.stderr).toBe('');
  expect(verify.status).toBe(0);
});

it('edge serve takes its settings from $SPLITLLM_* and --config too (the systemd unit uses them); a token never shows', () => {
  const cfg = join(tmp, 'edge.yaml');
  writeFileSync(cfg, 'split: 3\nport: 9090\ntoken: not-to-be-shown\n');
  const r = spawnSync(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'edge', 'serve', '--cloud', 'ws://127.0.0.1:9', '--config', cfg, '--print-config'], {
    encoding: 'utf8',
    env: { ...process.env, SPLITLLM_MAX_CONCURRENT: '7', SPLITLLM_PORT: '9191', SPLITLLM_TOKEN: 'env-token' },
  });
  expect(r.status, r.stderr).toBe(0);
  const s = (JSON.parse(r.stdout) as { settings: Record<string, { value: unknown; source: string }> }).settings;
  expect(s['max-concurrent']).toEqual({ value: 7, source: 'env' });
  expect(s['port']).toEqual({ value: 9191, source: 'env' });
  expect(s['split']).toEqual({ value: 3, source: 'file' });
  expect(s['token']).toEqual({ value: '(set, not shown)', source: 'file' });
  expect(r.stdout).not.toMatch(/not-to-be-shown|env-token/);
});

it('SIGTERM with a request stuck on a cloud that never answers: the drain timeout ends it (503 shutting_down) and the process exits 0', async () => {
  // answers the hello and the prompt, then nothing (pings still answered: a stuck cloud, not a dead link)
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  wss.on('connection', (ws, req) => {
    const session = new URL(req.url ?? '/', 'http://x').searchParams.get('session') ?? '';
    ws.on('message', (d: Buffer) => {
      const m = parseEdgeFrame(new Uint8Array(d)).header;
      if (m.type === 'hello') ws.send(encodeFrame({ type: 'ready', session, layers: 6, split: 2, maxSeq: 256, length: 0, resumeSecret: 'x' }));
      else if (m.type === 'prefill') ws.send(encodeFrame({ type: 'token', id: 40, done: false, cloudMs: 1 }));
    });
  });
  const cloudUrl = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  const serve = await serveProcess(['--cloud', cloudUrl, '--split', '2', '--port', '0', '--drain-timeout', '1s']);
  const { child, url, exited } = serve;
  try {
    expect(url, serve.stderr).toBeDefined();
    const stuck = fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'ROMEO:', max_tokens: 5, temperature: 0 }) });
    // the request is running once the cloud saw its step (the first token came back)
    for (let i = 0; i < 600 && !(await fetch(`${url}/health`).then((r) => r.json() as Promise<{ activeRequests: number }>)).activeRequests; i++) await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGTERM');
    const res = await stuck;
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('shutting_down');
    expect(await exited).toBe(0);
    expect(serve.stderr).toMatch(/drain timeout: ended 1 running request/);
  } finally {
    child.kill('SIGKILL');
    for (const c of wss.clients) c.terminate();
    wss.close();
  }
});

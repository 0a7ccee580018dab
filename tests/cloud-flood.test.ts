/**
 * Clients that send without reading: the server stops reading them (TCP backpressure) instead of
 * queueing, so its memory stays bounded and a healthy session beside them is unaffected. The flooders
 * run as child processes, so that their own send buffers do not count in this process's memory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { encodeFrame } from '../shared/protocol/index.js';
import type { ModelPackage } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { REPO } from './helpers/fixtures.js';
import { defaultModel } from './helpers/models.js';

let pkg: ModelPackage;
let cloud: CloudServer;
let local: number[];
beforeAll(async () => {
  pkg = await defaultModel();
  cloud = await startCloud(pkg);
  local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode('ROMEO:', true), { maxTokens: 16, stopIds: [] });
});
afterAll(() => cloud?.close());

/** A child that connects, stops reading, and sends `count` frames of `bytes` bytes; prints "sent" when its sends are queued. */
function flooder(url: string, count: number, bytes: number): ChildProcess {
  const code = `
    const WebSocket = require(${JSON.stringify(join(REPO, 'node_modules', 'ws'))});
    const ws = new WebSocket(${JSON.stringify(url)});
    ws.on('error', () => {});
    ws.on('open', () => {
      ws.pause(); // never read what the server answers
      const frame = Buffer.alloc(${bytes}, 7);
      for (let i = 0; i < ${count}; i++) ws.send(frame);
      console.log('sent');
    });`;
  return spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'ignore'] });
}

const rss = () => process.memoryUsage().rss;

it.each([
  ['100,000 small frames', 100_000, 8],
  ['400 MiB of 1 MiB frames', 400, 1024 * 1024],
])('%s without reading: server memory grows < 64 MB and a healthy session keeps its tokens', async (_name, count, bytes) => {
  const url = `${cloud.url}/v1/session`;
  // the healthy session's own first run (its front segment, onnxruntime's arenas) is not the flood's
  expect((await runEdge(pkg, { url, split: 2, prompt: 'ROMEO:', maxTokens: 16, stopIds: [] })).tokens).toEqual(local);
  const before = rss();
  const child = flooder(url, count, bytes);
  try {
    await new Promise<void>((resolve) => child.stdout!.on('data', () => resolve()));
    // let the server take in what it will before it pauses the socket
    await new Promise((r) => setTimeout(r, 1500));
    const r = await runEdge(pkg, { url, split: 2, prompt: 'ROMEO:', maxTokens: 16, stopIds: [] });
    expect(r.tokens).toEqual(local);
    const grown = (rss() - before) / 1e6;
    process.stderr.write(`[flood] ${_name}: server RSS +${grown.toFixed(1)} MB\n`);
    expect(grown).toBeLessThan(64);
  } finally {
    child.kill('SIGKILL');
  }
}, 60_000);

/** A child that connects and sends `count` copies of `frame` as fast as it can (`deaf`: and never reads); prints "sent", then the close code it got. */
function frameFlooder(url: string, count: number, frame: Uint8Array, deaf = false): ChildProcess {
  const code = `
    const WebSocket = require(${JSON.stringify(join(REPO, 'node_modules', 'ws'))});
    const ws = new WebSocket(${JSON.stringify(url)});
    ws.on('error', () => {});
    ws.on('close', (code, reason) => console.log('closed ' + code + ' ' + reason));
    ws.on('open', () => {
      // a paused socket with nothing left to write does not keep a process alive: this does, until killed
      if (${deaf}) { ws.pause(); setInterval(() => {}, 1000); }
      const frame = Buffer.from(${JSON.stringify(Buffer.from(frame).toString('hex'))}, 'hex');
      for (let i = 0; i < ${count}; i++) ws.send(frame);
      console.log('sent');
    });`;
  return spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'ignore'] });
}

it('a connection streaming 50,000 tiny valid frames is slowed to its frame budget: /healthz answers and a healthy session keeps its exact tokens meanwhile', async () => {
  const lines: string[] = [];
  const limited = await startCloud(pkg, { rateLimits: { framesPerSecond: 200, burstSeconds: 1 }, logLevel: 'info', logStream: { write: (l: string) => lines.push(l) } });
  const url = `${limited.url}/v1/session`;
  // probes of 0 bytes: valid without a session, answered with a few bytes each, never an error
  const probe = encodeFrame({ type: 'probe', id: 1, reply: 0 });
  expect(probe.length).toBeLessThan(32);
  const child = frameFlooder(url, 50_000, probe);
  try {
    await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => d.toString().includes('sent') && resolve()));
    const health = await fetch(`${limited.url.replace('ws', 'http')}/healthz`);
    expect(health.status).toBe(200);
    const r = await runEdge(pkg, { url, split: 2, prompt: 'ROMEO:', maxTokens: 16, stopIds: [] });
    expect(r.tokens).toEqual(local);
    const metrics = await (await fetch(`${limited.url.replace('ws', 'http')}/metrics`)).text();
    const throttled = Number(/^splitllm_throttled_seconds_total ([\d.e+-]+)/m.exec(metrics)?.[1]);
    expect(throttled).toBeGreaterThan(0);
  } finally {
    child.kill('SIGKILL');
    await limited.close();
  }
}, 60_000);

it('a connection sending 5,000 frames that are each an error is closed with too_many_errors after 100, and logs 5 error lines and one summary, not 5,000', async () => {
  const lines: string[] = [];
  const logged = await startCloud(pkg, { logLevel: 'info', logStream: { write: (l: string) => lines.push(l) } });
  const url = `${logged.url}/v1/session`;
  // a step without a session: unknown_session, an error that does not close
  const child = frameFlooder(url, 5000, encodeFrame({ type: 'step', token: 1 }));
  try {
    const closed = await new Promise<string>((resolve) => child.stdout!.on('data', (d: Buffer) => /closed/.test(d.toString()) && resolve(d.toString())));
    expect(closed).toMatch(/closed 1008 too_many_errors/);
    // the summary line comes when the server's loop for that connection ends
    for (let i = 0; i < 500 && !lines.some((l) => l.includes('errors_not_logged')); i++) await new Promise((r) => setTimeout(r, 10));
    const errors = lines.map((l) => JSON.parse(l) as { event?: string; code?: string; count?: number }).filter((l) => l.event === 'error' || l.event === 'errors_not_logged');
    expect(errors.filter((l) => l.event === 'error' && l.code === 'unknown_session')).toHaveLength(5);
    expect(errors.filter((l) => l.event === 'error' && l.code === 'too_many_errors')).toHaveLength(1);
    expect(errors.find((l) => l.event === 'errors_not_logged')?.count).toBe(94);
    const metrics = await (await fetch(`${logged.url.replace('ws', 'http')}/metrics`)).text();
    expect(metrics).toMatch(/^splitllm_errors_total\{code="unknown_session"\} 99$/m);
    expect(metrics).toMatch(/^splitllm_errors_total\{code="too_many_errors"\} 1$/m);
  } finally {
    child.kill('SIGKILL');
    await logged.close();
  }
}, 60_000);

it('20 connections that ask for 8 × 8 MiB probe replies each and never read: the replies in flight stay within the server-wide 64 MiB (was up to 24 MiB per connection) and a healthy session keeps its tokens', async () => {
  const url = `${cloud.url}/v1/session`;
  expect((await runEdge(pkg, { url, split: 2, prompt: 'ROMEO:', maxTokens: 16, stopIds: [] })).tokens).toEqual(local);
  // array buffers count a reply whether or not its pages are resident (zeroed pages may never be)
  const buffers = () => process.memoryUsage().arrayBuffers;
  const before = buffers();
  const probe = encodeFrame({ type: 'probe', id: 1, reply: 8 * 1024 * 1024 });
  const children = Array.from({ length: 20 }, () => frameFlooder(url, 8, probe, true));
  try {
    await Promise.all(children.map((c) => new Promise<void>((resolve) => c.stdout!.on('data', (d: Buffer) => d.toString().includes('sent') && resolve()))));
    let most = 0;
    let mostBuffers = 0;
    for (let i = 0; i < 30; i++) {
      const m = await (await fetch(`${cloud.url.replace('ws', 'http')}/metrics`)).text();
      most = Math.max(most, Number(/^splitllm_probe_bytes_in_flight (\d+)/m.exec(m)?.[1]));
      mostBuffers = Math.max(mostBuffers, buffers() - before);
      await new Promise((r) => setTimeout(r, 50));
    }
    process.stderr.write(`[flood] 20 non-reading probers: probe replies in flight at most ${(most / 2 ** 20).toFixed(0)} MiB, array buffers +${(mostBuffers / 2 ** 20).toFixed(0)} MiB\n`);
    expect(most).toBe(64 * 2 ** 20);
    expect(mostBuffers).toBeLessThan(96 * 2 ** 20);
    const r = await runEdge(pkg, { url, split: 2, prompt: 'ROMEO:', maxTokens: 16, stopIds: [] });
    expect(r.tokens).toEqual(local);
  } finally {
    for (const c of children) c.kill('SIGKILL');
  }
}, 60_000);

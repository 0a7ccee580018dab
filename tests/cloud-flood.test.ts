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

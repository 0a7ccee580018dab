/** Drain: SIGTERM stops new sessions at once, lets running ones finish or tells them to move, and exits 0. */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { REPO } from './helpers/fixtures.js';
import { defaultModel } from './helpers/models.js';

it('drain with 8 sessions generating: /readyz is 503 at once, new upgrades get 503, each session finishes or is told to move', async () => {
  const pkg = await defaultModel();
  const cloud = await startCloud(pkg);
  const http = cloud.url.replace('ws', 'http');
  const url = `${cloud.url}/v1/session`;
  const runs = Array.from({ length: 8 }, (_, i) =>
    runEdge(pkg, { url, split: 2, prompt: 'ROMEO:', maxTokens: i < 2 ? 3 : 240, stopIds: [], retryWindowMs: 300, onToken: () => undefined }).then(
      (r) => ({ ok: true as const, tokens: r.tokens.length }),
      (e: unknown) => ({ ok: false as const, message: e instanceof Error ? e.message : String(e) }),
    ),
  );
  const metrics = async () => (await fetch(`${http}/metrics`)).text();
  for (let i = 0; i < 400 && !/splitllm_sessions_held [6-8]\b/.test(await metrics()); i++) await new Promise((r) => setTimeout(r, 5));
  expect((await fetch(`${http}/readyz`)).status).toBe(200);
  const drained = cloud.drain(400);
  const ready = await fetch(`${http}/readyz`);
  expect(ready.status).toBe(503);
  expect(await ready.json()).toEqual({ ready: false, reason: 'draining' });
  await expect(runEdge(pkg, { url, split: 2, prompt: 'hi', maxTokens: 2 })).rejects.toThrow(/HTTP 503, draining/);
  const r = await drained;
  const outcomes = await Promise.all(runs);
  expect(r.finished + r.moved).toBeGreaterThanOrEqual(6);
  expect(r.moved).toBeGreaterThan(0);
  for (const o of outcomes) {
    if (o.ok) expect([3, 240]).toContain(o.tokens);
    else expect(o.message).toMatch(/could not resume after \d+ attempts/);
  }
  // the short ones finished; the long ones were told to move and, with nowhere to go, said so
  expect(outcomes.filter((o) => o.ok).length).toBeGreaterThanOrEqual(2);
  expect(outcomes.filter((o) => !o.ok).length).toBe(r.moved);
});

it('splitllm cloud exits 0 on SIGTERM after draining, saying what it did', async () => {
  const child = spawn(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'cloud', '--port', '0', '--json', '--drain-timeout', '1s'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  for (let i = 0; i < 300 && !out.includes('\n'); i++) await new Promise((r) => setTimeout(r, 50));
  const { url } = JSON.parse(out) as { url: string };
  expect((await fetch(url.replace('ws', 'http').replace('/v1/session', '/livez'))).status).toBe(200);
  child.kill('SIGTERM');
  expect(await exited).toBe(0);
  expect(err).toMatch(/draining \(up to 1 s\)/);
  expect(err).toMatch(/stopped: 0 session\(s\) finished, 0 told to move, 0 idle connection\(s\) closed/);
});

it('a cloud restarted on the same port mid-generation: the edge replays the session there and finishes with the local tokens; without failover it says so in one line', async () => {
  const pkg = await defaultModel();
  const { generate, Pipeline } = await import('../models/runtime/pipeline.js');
  const local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode('ROMEO:', true), { maxTokens: 120, stopIds: [] });
  for (const failover of [true, false]) {
    let cloud = await startCloud(pkg);
    const port = Number(new URL(cloud.url).port);
    const url = `${cloud.url}/v1/session`;
    let n = 0;
    const run = runEdge(pkg, { url, split: 2, prompt: 'ROMEO:', maxTokens: 120, stopIds: [], retryWindowMs: 5000, failover, onToken: () => void n++ }).then(
      (r) => r,
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
    while (n < 5) await new Promise((r) => setTimeout(r, 2));
    // the process goes away at once (no drain) and a new one comes up on the same port a moment later
    for (const c of cloud.app.websocketServer.clients) c.terminate();
    await cloud.close();
    await new Promise((r) => setTimeout(r, 300));
    cloud = await startCloud(pkg, { port });
    try {
      const r = await run;
      if (failover) {
        if (typeof r === 'string') throw new Error(r);
        expect(r.tokens).toEqual(local);
        expect(r.stats.failovers).toBe(1);
        expect(r.stats.replayedPositions).toBeGreaterThan(pkg.tokenizer().encode('ROMEO:', true).length);
        process.stderr.write(`[failover] replayed ${r.stats.replayedPositions} positions after ${r.stats.resumes} resumes\n`);
      } else expect(r).toMatch(/^the cloud no longer holds session [A-Za-z0-9_-]{8}… \(restarted or expired\): send the request again$/);
    } finally {
      await cloud.close();
    }
  }
});

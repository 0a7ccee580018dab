/**
 * The cloud gives memory back: after held sessions expire, the server's RSS returns to within 15% of its
 * level before they were opened. Run as deployed — the CLI in its own process, with the allocator
 * setting the deploy files give it (MALLOC_MMAP_THRESHOLD_, deploy/README.md "Memory") — and no forced
 * GC from outside: the server's own reclaimer (cloud/reclaim.ts) has to do it.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MemoryReclaimer } from '../cloud/reclaim.js';
import { newSessionId } from '../shared/protocol/index.js';
import { lightSession } from '../bench/light-session.js';
import { REPO } from './helpers/fixtures.js';
import { defaultModel } from './helpers/models.js';

/** RSS of a process in bytes, from /proc. */
const rssOf = (pid: number) => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024;

it('after 200 dropped sessions of 200 positions expire, RSS is back within 15% of before', async () => {
  const pkg = await defaultModel();
  const child = spawn(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'cloud', '--port', '0', '--json', '--idle-ms', '20s', '--max-sessions', '256', '--log-level', 'warn'], {
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '32768', SPLITLLM_THREADS: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 600 && !out.includes('\n'); i++) await new Promise((r) => setTimeout(r, 50));
    const { url } = JSON.parse(out) as { url: string };
    const http = url.replace('ws', 'http').replace('/v1/session', '');
    /** hello, a prefill of `positions` zero states, its token; then close, or drop the connection */
    const session = (positions: number, end: 'close' | 'drop') => lightSession(`${url}?session=${newSessionId()}`, pkg, positions, end);
    const parts = async () => {
      const m = await (await fetch(`${http}/metrics`)).text();
      const g = (n: string) => (Number(new RegExp(`^${n} (\\S+)$`, 'm').exec(m)?.[1]) / 1e6).toFixed(1);
      return `heap ${g('nodejs_heap_size_total_bytes')} external ${g('nodejs_external_memory_bytes')} MB`;
    };
    const held = async () => Number(/^splitllm_sessions_held (\d+)/m.exec(await (await fetch(`${http}/metrics`)).text())?.[1]);
    // the server warm: its back segment built, its first sessions served
    for (let i = 0; i < 20; i++) await session(4, 'close');
    await new Promise((r) => setTimeout(r, 2500));
    const before = rssOf(child.pid!);
    const partsBefore = await parts();
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) await session(200, 'drop');
    const openMs = performance.now() - t0;
    expect(await held()).toBe(200);
    const during = rssOf(child.pid!);
    const partsDuring = await parts();
    // expiry (20 s idle: longer than opening the 200 takes on a loaded machine, so that all 200 are held at
    // once), then the reclaimer's collection once the releases have been quiet
    for (let i = 0; i < 600 && (await held()) > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await held()).toBe(0);
    // the reclaimer frees the buffers within about a second; V8's memory reducer hands the heap's
    // emptied pages back some 8 s after that collection, if the server stays quiet (polled gently here)
    const gone = performance.now();
    let after = rssOf(child.pid!);
    // (an upper bound, left as soon as RSS is back: under load the reducer's turn comes later)
    while (after > 1.15 * before && performance.now() - gone < 60_000) {
      await new Promise((r) => setTimeout(r, 500));
      after = rssOf(child.pid!);
    }
    const backMs = performance.now() - gone;
    const metrics = await (await fetch(`${http}/metrics`)).text();
    const reclaims = Number(/^splitllm_memory_reclaims_total (\S+)$/m.exec(metrics)?.[1]);
    process.stderr.write(`[memory] RSS ${(before / 1e6).toFixed(1)} MB before → ${(during / 1e6).toFixed(1)} MB with 200 held → ${(after / 1e6).toFixed(1)} MB after expiry (×${(after / before).toFixed(3)}), ${reclaims} reclaim(s); opened in ${(openMs / 1000).toFixed(1)} s, back ${(backMs / 1000).toFixed(1)} s after the last expiry; ${partsBefore} → ${partsDuring} → ${await parts()}\n`);
    expect(during - before).toBeGreaterThan(30e6); // the sessions really held memory
    expect(reclaims).toBeGreaterThanOrEqual(1);
    expect(after / before).toBeLessThan(1.15);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}, 180_000);

describe('MemoryReclaimer', () => {
  it('collects once per burst of releases, only past its threshold or when the last session went', async () => {
    const runs: number[] = [];
    const r = new MemoryReclaimer({ releasedBytes: 1000, delayMs: 30, maxWaitMs: 400, minIntervalMs: 0, onCollect: (bytes) => runs.push(bytes) });
    expect(r.active).toBe(true);
    // below the threshold with sessions left: nothing
    r.released(400, 5);
    await new Promise((res) => setTimeout(res, 150));
    expect(runs).toEqual([]);
    // a burst past it: one collection, after the burst, counting everything released
    for (let i = 0; i < 20; i++) {
      r.released(100, 4);
      await new Promise((res) => setTimeout(res, 5));
    }
    await new Promise((res) => setTimeout(res, 250));
    expect(runs).toEqual([2400]);
    // the last session gone: collected whatever its size
    r.released(10, 0);
    await new Promise((res) => setTimeout(res, 250));
    expect(runs).toEqual([2400, 10]);
    r.close();
    r.released(1e9, 0);
    await new Promise((res) => setTimeout(res, 150));
    expect(runs).toHaveLength(2);
  });
});

/**
 * bench/cloud-soak: does the cloud give its memory back? Two phases against an in-process server, with
 * a light client (hello, a zero-valued fp32 prefill, the token, close: no edge model runs):
 *   1. N sessions opened and closed in sequence: RSS, /metrics size and /metrics time after the first
 *      1,000 and after all N (ratios);
 *   2. M sessions that prefill P positions and drop their connection, then expire: RSS before they were
 *      opened, while held, and after expiry (ratio to before).
 *
 *   node --expose-gc dist/bench/cloud-soak.js [--sessions 20000] [--held 200] [--positions 200] [--json]
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { startCloud } from '../cloud/server.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { openModel } from '../models/package.js';
import { lightSession } from './light-session.js';
import { fmt } from './common.js';

const { values } = parseArgs({
  options: {
    sessions: { type: 'string', default: '20000' },
    held: { type: 'string', default: '200' },
    positions: { type: 'string', default: '200' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node --expose-gc dist/bench/cloud-soak.js [--sessions N] [--held M] [--positions P] [--json]\n');
  process.exit(0);
}
const N = Number(values.sessions);
const M = Number(values.held);
const P = Number(values.positions);
const gc = (globalThis as { gc?: () => void }).gc;
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((r) => setTimeout(r, 50));
  }
};
const mb = (b: number) => b / 1e6;
/** Where the memory is: V8's heap, buffers outside it, and the rest of RSS (native: onnxruntime, malloc). */
const memParts = () => {
  const m = process.memoryUsage();
  return { heapMB: Number(mb(m.heapTotal).toFixed(1)), externalMB: Number(mb(m.external).toFixed(1)), nativeMB: Number(mb(m.rss - m.heapTotal - m.external).toFixed(1)) };
};

const pkg = await openModel(DEFAULT_MODEL_DIR);
const idleMs = 5000;
const cloud = await startCloud(pkg, { idleMs, maxSessions: Math.max(64, M + 8), kvBudgetBytes: 8e9 });
const url = `${cloud.url}/v1/session`;
const http = cloud.url.replace('ws', 'http');

/** One session: hello, a prefill of `positions` zero states, its token; then close, or drop the connection. */
const session = (positions: number, end: 'close' | 'drop') => lightSession(url, pkg, positions, end);

async function scrape(): Promise<{ bytes: number; ms: number }> {
  const t0 = performance.now();
  const text = await (await fetch(`${http}/metrics`)).text();
  return { bytes: text.length, ms: performance.now() - t0 };
}

try {
  // phase 1: many sessions in sequence
  const t0 = performance.now();
  let at1k = { rss: 0, metrics: { bytes: 0, ms: 0 } };
  for (let i = 1; i <= N; i++) {
    await session(4, 'close');
    if (i === Math.min(1000, N)) {
      await settle();
      at1k = { rss: process.memoryUsage().rss, metrics: await scrape() };
    }
    if (!values.json && i % 5000 === 0) process.stderr.write(`  ${i} sessions, ${fmt((performance.now() - t0) / 1000)} s\n`);
  }
  await settle();
  const atN = { rss: process.memoryUsage().rss, metrics: await scrape() };
  // phase 2: held sessions that drop and expire
  await settle();
  const before = process.memoryUsage().rss;
  const parts0 = memParts();
  const round = async () => {
    for (let i = 0; i < M; i++) await session(P, 'drop');
    await settle();
    const heldRss = process.memoryUsage().rss;
    const heldParts = memParts();
    const heldCount = Number(/^splitllm_sessions_held (\d+)/m.exec(await (await fetch(`${http}/metrics`)).text())?.[1]);
    await new Promise((r) => setTimeout(r, idleMs + 500));
    await settle();
    const left = Number(/^splitllm_sessions_held (\d+)/m.exec(await (await fetch(`${http}/metrics`)).text())?.[1]);
    return { heldRss, heldCount, left, after: process.memoryUsage().rss, heldParts, afterParts: memParts() };
  };
  // two rounds: freed memory the allocator keeps for reuse shows as a flat second round, a leak as growth
  const first = await round();
  const second = await round();
  const held = first.heldRss;
  const after = first.after;
  const out = {
    sessions: N,
    seconds: (performance.now() - t0) / 1000,
    gc: gc !== undefined,
    loadavg: loadavg().map((x) => Number(x.toFixed(2))),
    rssAfter1kMB: mb(at1k.rss),
    rssAfterAllMB: mb(atN.rss),
    rssRatio: atN.rss / at1k.rss,
    metricsBytes: [at1k.metrics.bytes, atN.metrics.bytes],
    metricsMs: [at1k.metrics.ms, atN.metrics.ms],
    held: {
      sessions: M,
      positions: P,
      beforeMB: mb(before),
      heldMB: mb(held),
      afterExpiryMB: mb(after),
      afterOverBefore: after / before,
      sessionsHeldThenLeft: [first.heldCount, first.left],
      secondRound: { heldMB: mb(second.heldRss), afterExpiryMB: mb(second.after), overFirst: second.after / after },
      parts: { before: parts0, held: first.heldParts, afterExpiry: first.afterParts, secondAfterExpiry: second.afterParts },
    },
  };
  if (values.json) process.stdout.write(JSON.stringify(out) + '\n');
  else {
    process.stdout.write(
      [
        `cloud soak (${gc ? 'with' : 'without'} --expose-gc; load ${out.loadavg.join(' ')})`,
        `${N} sessions in sequence in ${fmt(out.seconds)} s: RSS ${fmt(out.rssAfter1kMB)} MB after 1,000 → ${fmt(out.rssAfterAllMB)} MB after ${N} (×${out.rssRatio.toFixed(3)})`,
        `/metrics: ${out.metricsBytes[0]} → ${out.metricsBytes[1]} bytes, ${fmt(out.metricsMs[0]!, 2)} → ${fmt(out.metricsMs[1]!, 2)} ms`,
        `${M} sessions × ${P} positions held (${first.heldCount} held, ${first.left} left after expiry): RSS ${fmt(out.held.beforeMB)} MB before → ${fmt(out.held.heldMB)} MB held → ${fmt(out.held.afterExpiryMB)} MB after expiry (×${out.held.afterOverBefore.toFixed(3)} of before)`,
        `  where: before ${JSON.stringify(parts0)}, held ${JSON.stringify(first.heldParts)}, after expiry ${JSON.stringify(first.afterParts)}`,
        `the same again: ${fmt(out.held.secondRound.heldMB)} MB held → ${fmt(out.held.secondRound.afterExpiryMB)} MB after expiry (×${out.held.secondRound.overFirst.toFixed(3)} of the first round's)`,
      ].join('\n') + '\n',
    );
  }
} finally {
  await cloud.close();
}

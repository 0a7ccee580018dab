/** /metrics parses as Prometheus text, with # HELP on every family, base units, and constant size. */
import parse, { type MetricFamily } from 'parse-prometheus-text-format';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import type { ModelPackage } from '../models/package.js';
import { defaultModel } from './helpers/models.js';

let pkg: ModelPackage;
let cloud: CloudServer;
beforeAll(async () => {
  pkg = await defaultModel();
  cloud = await startCloud(pkg, { tenants: [{ name: 'alice', token: 'alice-token' }, { name: 'bob', token: 'bob-token' }], metricsTenants: true });
});
afterAll(() => cloud?.close());

const scrape = async (): Promise<{ text: string; families: Map<string, MetricFamily> }> => {
  const text = await (await fetch(`${cloud.url.replace('ws', 'http')}/metrics`)).text();
  return { text, families: new Map(parse(text).map((f) => [f.name, f])) };
};
const value = (fs: Map<string, MetricFamily>, name: string, labels: Record<string, string> = {}): number => {
  const f = fs.get(name);
  const m = f?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  return Number(m?.value ?? m?.count ?? NaN);
};

it('before any session: every family has # HELP, no millisecond units, histograms complete (+Inf, _sum, _count)', async () => {
  const { families } = await scrape();
  expect(families.size).toBeGreaterThan(20);
  for (const f of families.values()) {
    expect(f.help.length, f.name).toBeGreaterThan(3);
    expect(f.name).not.toMatch(/_ms(_|$)|milli/);
    if (f.type === 'COUNTER') expect(f.name).toMatch(/_total$/);
    // (prom-client's own nodejs_gc_duration_seconds is labelled by GC kind and may have no series yet)
    if (f.type === 'HISTOGRAM' && f.name.startsWith('splitllm_')) {
      expect(f.metrics.length, f.name).toBe(1);
      for (const m of f.metrics) {
        expect(m.buckets?.['+Inf'], f.name).toBeDefined();
        expect(m.count, f.name).toBeDefined();
        expect(m.sum, f.name).toBeDefined();
      }
    }
  }
  for (const name of ['process_resident_memory_bytes', 'process_cpu_seconds_total', 'splitllm_step_duration_seconds', 'splitllm_time_to_first_token_seconds', 'splitllm_step_queue_wait_seconds', 'splitllm_step_batch_size', 'splitllm_connections_open']) {
    expect(families.has(name), name).toBe(true);
  }
});

it('counts a session: steps, time to first token, tokens, bytes, sessions by state and by tenant', async () => {
  const before = (await scrape()).families;
  const url = `${cloud.url}/v1/session`;
  const hold = new AbortController();
  const running = runEdge(pkg, { url, split: 2, prompt: 'ROMEO:', maxTokens: 200, stopIds: [], token: 'alice-token', signal: hold.signal, onToken: () => undefined });
  let during = before;
  for (let i = 0; i < 200 && value(during, 'splitllm_sessions', { state: 'connected' }) !== 1; i++) during = (await scrape()).families;
  expect(value(during, 'splitllm_sessions', { state: 'connected' })).toBe(1);
  expect(value(during, 'splitllm_tenant_sessions', { tenant: 'alice' })).toBe(1);
  hold.abort();
  const r = await running;
  await runEdge(pkg, { url, split: 2, prompt: 'ROMEO:', maxTokens: 8, stopIds: [], token: 'bob-token' });
  let after = (await scrape()).families;
  for (let i = 0; i < 100 && value(after, 'splitllm_connections_open') !== 0; i++) after = (await scrape()).families;
  const d = (name: string) => value(after, name) - value(before, name);
  // the abort ends the edge's wait at once: the step it had sent may still have run on the cloud, its token unread
  const unread = d('splitllm_step_duration_seconds') - (r.tokens.length + 8);
  expect([0, 1]).toContain(unread);
  expect(d('splitllm_time_to_first_token_seconds')).toBe(2);
  expect(d('splitllm_tokens_total')).toBe(r.tokens.length + 8 + unread);
  expect(d('splitllm_sessions_total')).toBe(2);
  expect(d('splitllm_received_bytes_total')).toBeGreaterThan(0);
  expect(value(after, 'splitllm_sessions', { state: 'connected' })).toBe(0);
  expect(value(after, 'splitllm_tenant_sessions', { tenant: 'alice' })).toBeNaN(); // no sessions left: no series
});

it('the /metrics response does not grow with the number of sessions served', async () => {
  const url = `${cloud.url}/v1/session`;
  // numbers change, names do not; prom-client's own nodejs_* families gain a few labelled series (GC kinds,
  // handle types) early in a process's life, a bounded set: the project's families are compared
  const size = async () =>
    (await scrape()).text
      .split('\n')
      .filter((l) => l.startsWith('splitllm_'))
      .join('\n')
      .replace(/-?\d+(\.\d+)?(e[-+]?\d+)?/g, '0').length;
  await runEdge(pkg, { url, split: 2, prompt: 'hi', maxTokens: 2, stopIds: [], token: 'bob-token' });
  const first = await size();
  for (let i = 0; i < 40; i++) await runEdge(pkg, { url, split: 2, prompt: 'hi', maxTokens: 2, stopIds: [], token: i % 2 ? 'bob-token' : 'alice-token' });
  expect(await size()).toBe(first);
});

it('without --metrics-tenants, /metrics names no tenant (whoever can scrape it would learn them)', async () => {
  const quiet = await startCloud(pkg, { tenants: [{ name: 'secret-customer', token: 'sc-token' }, { name: 'other', token: 'o-token' }] });
  try {
    const hold = new AbortController();
    const running = runEdge(pkg, { url: `${quiet.url}/v1/session`, split: 2, prompt: 'ROMEO:', maxTokens: 200, stopIds: [], token: 'sc-token', signal: hold.signal, onToken: () => undefined });
    const text = async () => (await fetch(`${quiet.url.replace('ws', 'http')}/metrics`)).text();
    for (let i = 0; i < 200 && !/^splitllm_sessions_held 1$/m.test(await text()); i++) await new Promise((r) => setTimeout(r, 5));
    const m = await text();
    expect(m).toMatch(/^splitllm_sessions_held 1$/m);
    expect(m).not.toMatch(/secret-customer|splitllm_tenant_sessions/);
    hold.abort();
    await running;
  } finally {
    await quiet.close();
  }
});

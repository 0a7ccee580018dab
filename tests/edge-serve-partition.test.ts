/**
 * `edge serve` behind a network path that stops forwarding mid-generation (issue 35, finding 1): the
 * request fails with a 503 within its deadlines instead of hanging, its slot is freed, /ready says the
 * cloud is unreachable, and once the route comes back the next request succeeds in the same process with
 * the exact text it had before.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { EdgeAgent } from '../edge/edge-agent.js';
import { startEdgeService, type EdgeService } from '../edge/service.js';
import { defaultModel } from './helpers/models.js';
import { partitionProxy, type PartitionProxy } from './helpers/proxy.js';

let cloud: CloudServer;
let proxy: PartitionProxy;
let agent: EdgeAgent;
let service: EdgeService;

// one second of silence is a dropped link; each reconnect attempt gets one second; the resume retries for 5 s
const deadlines = { silenceMs: 1000, connectMs: 1000 };

beforeAll(async () => {
  const pkg = await defaultModel();
  cloud = await startCloud(pkg);
  proxy = await partitionProxy(Number(new URL(cloud.url).port));
  agent = await EdgeAgent.create({ model: pkg, cloud: proxy.url, split: 2, deadlines, spareConnection: false });
  service = await startEdgeService(agent, { port: 0 });
});

afterAll(async () => {
  await service?.close();
  await agent?.close();
  await proxy?.close();
  await cloud?.close();
});

const complete = (body: object) =>
  fetch(`${service.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'ROMEO:', max_tokens: 40, temperature: 0, ...body }) });

it('a partition mid-generation fails the request with 503 within its deadlines; /ready says so; after the route heals the next request gets the same text', async () => {
  const before = await complete({});
  expect(before.status).toBe(200);
  const want = ((await before.json()) as { choices: { text: string }[] }).choices[0]!.text;
  expect(want.length).toBeGreaterThan(0);

  // the path stops after a few answers have come back: the ready and some tokens, not all 40
  proxy.partitionAfter(6);
  const t0 = performance.now();
  const cutOff = await complete({});
  const failedAfter = performance.now() - t0;
  expect(cutOff.status).toBe(503);
  expect(cutOff.headers.get('retry-after')).toBe('1');
  const err = (await cutOff.json()) as { error: { code: string; message: string } };
  expect(err.error.code).toBe('cloud_unreachable');
  expect(err.error.message).toMatch(/lost the cloud and could not resume after \d+ attempts|the connection to the cloud dropped/);
  // silence (1 s) + the resume's retry window (5 s) + one attempt's connect deadline (1 s), with room for a loaded machine
  expect(failedAfter).toBeLessThan(30_000);
  // its slot is free again
  expect(agent.busy).toBe(0);

  const ready = await fetch(`${service.url}/ready`);
  expect(ready.status).toBe(503);
  expect(((await ready.json()) as { error: { code: string } }).error.code).toBe('cloud_unreachable');

  proxy.heal();
  expect((await fetch(`${service.url}/ready`)).status).toBe(200);
  const after = await complete({});
  expect(after.status).toBe(200);
  expect(((await after.json()) as { choices: { text: string }[] }).choices[0]!.text).toBe(want);
});

it('streamed: a partition after the first chunk ends the stream with an error event and [DONE], and frees the slot', async () => {
  const r = await complete({ stream: true });
  expect(r.status).toBe(200);
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  let first = true;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += dec.decode(value);
    if (first && text.includes('data: ')) {
      first = false;
      proxy.partition();
    }
  }
  expect(text).toMatch(/data: \{"error":\{"message":"[^"]*","type":"server_error","param":null,"code":"cloud_unreachable"\}\}\n\ndata: \[DONE\]\n\n$/);
  expect(agent.busy).toBe(0);
  proxy.heal();
  const after = await complete({});
  expect(after.status).toBe(200);
});

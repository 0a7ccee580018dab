/** The edge service's memory budget holds for all its requests together, not one at a time. */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { EdgeAgent } from '../edge/edge-agent.js';
import type { ModelPackage } from '../models/package.js';
import { edgeBytes } from '../edge/memory-policy.js';
import { defaultModel } from './helpers/models.js';

let pkg: ModelPackage;
let cloud: CloudServer;
beforeAll(async () => {
  pkg = await defaultModel();
  cloud = await startCloud(pkg);
});
afterAll(() => cloud?.close());

it('two concurrent requests share --edge-memory: one moves its split down, a lone one does not, and the text is unchanged', async () => {
  const c = pkg.config;
  // what split 4 holds by the memory rule at 130 positions (the KV cache's growth room included): one
  // request of ~125 positions fits, two do not
  const budget = edgeBytes(pkg.memoryShape, {}, 4, 130);
  expect(budget).toBeLessThan(edgeBytes(pkg.memoryShape, {}, 4, 2 * 125));
  expect(edgeBytes(pkg.memoryShape, {}, 3, 2 * 125)).toBeLessThan(budget);
  const req = { prompt: 'ROMEO:', maxTokens: 120, sampling: { temperature: 0 } };
  const ref = await EdgeAgent.create({ model: pkg, cloud: cloud.url, split: 4 });
  const want = await ref.generate(req);
  await ref.close();
  const agent = await EdgeAgent.create({ model: pkg, cloud: cloud.url, split: 4, edgeMemory: budget });
  try {
    const lone = await agent.generate(req);
    expect(lone.stats.resplits).toEqual([]);
    expect(lone.tokens).toEqual(want.tokens);
    const [a, b] = await Promise.all([agent.generate(req), agent.generate({ ...req, prompt: 'ROMEO:' })]);
    const moved = [...a!.stats.resplits, ...b!.stats.resplits];
    expect(moved.length).toBeGreaterThan(0);
    expect(moved.every((m) => m.to < m.from)).toBe(true);
    expect(Math.min(a!.split, b!.split)).toBeLessThan(4);
    // fp32 KV moves losslessly and every split gives the same greedy tokens
    expect(a!.tokens).toEqual(want.tokens);
    expect(b!.tokens).toEqual(want.tokens);
  } finally {
    await agent.close();
  }
});

import { expect, it } from 'vitest';
import { SYNTHETIC_PRESETS } from '../models/importers/synthetic.js';
import { rng } from '../models/runtime/sampler.js';
import { bestPrefillChunk, expectedTokens, localMemory, predict } from '../planner/cost.js';
import { coordinate, exhaustive } from '../planner/strategies/index.js';
import { ACCURACY_TIE, LATENCY_TIE, rank, type Scored } from '../planner/search.js';
import { syntheticProblem } from '../planner/synthetic.js';
import { buildProblem } from '../planner/problem.js';
import { edgeBytes } from '../edge/memory-policy.js';
import { grownCapacity } from '../models/runtime/kv-cache.js';
import { kvRoom } from '../quantization/weights/memory.js';
import { accuracyProfile, computeProfile } from '../planner/profiles.js';

const tiny = { ...SYNTHETIC_PRESETS['tinyllama-1.1b']!.config, hash: 'tinyllama-shaped' };

it('exhaustive covers split × front bits × back bits × codec × sequence length and returns ranked feasible plans', () => {
  const pr = syntheticProblem(tiny, 1);
  const r = exhaustive.solve(pr, 5);
  expect(r.plans.length).toBe(5);
  expect(r.evaluated).toBeGreaterThanOrEqual(23 * 6 * 6 * 6); // at least one sequence length per configuration
  expect(r.evaluated).toBeLessThanOrEqual(23 * 6 * 6 * 6 * 10);
  // ranked by the objective: each plan is within LATENCY_TIE of the fastest of those after it, and no less accurate than
  // any of those that are that fast
  for (let i = 0; i < r.plans.length; i++) {
    const rest = r.plans.slice(i).map((p) => p.predicted);
    const fastest = Math.min(...rest.map((p) => p.latency));
    expect(r.plans[i]!.predicted.latency).toBeLessThanOrEqual(fastest * (1 + LATENCY_TIE));
    for (const p of rest) if (p.latency <= fastest * (1 + LATENCY_TIE)) expect(r.plans[i]!.predicted.accuracy).toBeLessThanOrEqual(p.accuracy + ACCURACY_TIE);
  }
  for (const p of r.plans) {
    expect(p.predicted.memory).toBeLessThanOrEqual(pr.budgets.edgeMemory);
    expect(p.predicted.latency).toBeLessThanOrEqual(pr.budgets.latencyMs);
    expect(p.predicted.accuracy).toBeLessThanOrEqual(pr.budgets.maxPplIncrease);
    // the sequence length is the longest candidate that fits: one step longer would not
    const longer = pr.candidates.seqLens.filter((s) => s > p.plan.maxSeq).sort((a, b) => a - b)[0];
    if (longer) expect(predict(pr, { ...p.plan, maxSeq: longer }).memory).toBeGreaterThan(pr.budgets.edgeMemory);
  }
});

it('plans within 1% of the fastest count as equally fast, and ppl within 0.05 points as equally accurate: the more accurate wins, then the longer sequence; a plan 2% faster wins', () => {
  const plan = (latency: number, accuracy: number, maxSeq = 256): Scored => ({
    c: { split: 1, frontBits: 4, backBits: 4, codec: 'fp32', maxSeq },
    p: { latency, accuracy, memory: 0, bytesPerToken: 0, firstTokenMs: 0, prefillChunk: 1 },
  });
  expect([LATENCY_TIE, ACCURACY_TIE]).toEqual([0.01, 0.0005]);
  const fast = plan(100, 0.02);
  const tie = plan(100.9, 0.005);
  const longer = plan(100.5, 0.0053, 512); // 0.04 points less accurate than the best: a tie, and twice the positions
  const shorter = plan(100.1, 0.0049, 128); // the most accurate, by 0.01 points: its short sequence loses to `tie`'s
  const slow = plan(102, 0.001);
  expect(rank([fast, tie, slow, longer, shorter], 5)).toEqual([longer, tie, shorter, fast, slow]);
  // 0.1 points better is better, whatever the sequence
  expect(rank([longer, plan(100.2, 0.0044, 64)], 1)[0]!.c.maxSeq).toBe(64);
  // 2% faster is faster: it wins over a more accurate plan
  expect(rank([slow, plan(100, 0.01)], 1)[0]!.p.latency).toBe(100);
  expect(rank([], 3)).toEqual([]);
});

it('time to first token: two round trips and the prompt through the edge → link → cloud pipeline in the chunk size that is fastest', () => {
  // stages linear in the chunk's tokens with no per-run cost: one token per chunk is best, and the
  // pipeline takes the first chunk's three stages plus n − 1 times the slowest
  const linear = (t: number) => [2.5 * t, 2 * t, 1 * t];
  expect(bestPrefillChunk(101, linear)).toEqual({ chunk: 1, ms: 5.5 + 100 * 2.5 });
  // a per-run cost that dwarfs the per-token ones: one message is best
  expect(bestPrefillChunk(101, (t) => [50 + 0.01 * t, 0.01 * t, 50 + 0.01 * t]).chunk).toBe(101);
  // in between: a chunk that balances the fixed cost against the overlap, and never slower than one message
  const mid = (t: number) => [5 + 0.5 * t, 0.4 * t, 5 + 0.1 * t];
  const best = bestPrefillChunk(200, mid);
  expect(best.chunk).toBeGreaterThan(1);
  expect(best.chunk).toBeLessThan(200);
  expect(best.ms).toBeLessThan(mid(200).reduce((x, y) => x + y, 0));

  const pr = syntheticProblem(tiny, 4);
  pr.edge = { ...pr.edge, layerPrefillMsPerToken: { '4': 0.5, '8': 0.6, '32': 1 } };
  pr.cloud = { ...pr.cloud, layerPrefillMsPerToken: { '4': 0.05, '8': 0.06, '32': 0.1 } };
  pr.link = { rttMs: 40, bytesPerSec: 1e6 };
  const c = { split: 5, frontBits: 4, backBits: 8, codec: 'fp16', maxSeq: 256 };
  pr.budgets = { ...pr.budgets, promptTokens: 1 };
  const one = predict(pr, c);
  expect(one.prefillChunk).toBe(1);
  expect(one.firstTokenMs).toBeGreaterThan(2 * 40);
  pr.budgets = { ...pr.budgets, promptTokens: 101 };
  const many = predict(pr, c);
  // per prompt token: 5 edge layers × 0.5 ms, 2048 fp16 bytes at 1 MB/s, 17 cloud layers × 0.06 ms
  const perToken = [5 * 0.5, (tiny.dim * 2 * 1000) / 1e6, 17 * 0.06];
  const serial = 100 * perToken.reduce((x, y) => x + y, 0);
  // pipelined: faster than one message, never faster than the slowest stage's share of the prompt
  expect(many.firstTokenMs - one.firstTokenMs).toBeLessThan(serial);
  expect(many.firstTokenMs - one.firstTokenMs).toBeGreaterThan(100 * Math.max(...perToken) - 1e-9);
  expect(many.prefillChunk).toBeGreaterThan(1);
  expect(many.prefillChunk).toBeLessThan(101);
});

it('coordinate descent reaches within 5% of the exhaustive optimum on 100 random budget settings', () => {
  const next = rng(2024);
  let compared = 0;
  let evalExh = 0;
  let evalCoord = 0;
  for (let i = 0; i < 100; i++) {
    const pr = syntheticProblem(tiny, 100 + i);
    pr.budgets = { edgeMemory: 150e6 + next() * 1.5e9, latencyMs: 60 + next() * 300, maxPplIncrease: 0.002 + next() * 0.05 };
    pr.link = { rttMs: 5 + next() * 80, bytesPerSec: (1e6 + next() * 100e6) / 8 };
    const e = exhaustive.solve(pr, 1);
    const c = coordinate.solve(pr, 1);
    evalExh += e.evaluated;
    evalCoord += c.evaluated;
    if (e.plans.length === 0) {
      expect(c.plans.length, `setting ${i}`).toBe(0);
      expect(c.infeasible?.binding).toBe(e.infeasible?.binding);
      continue;
    }
    compared++;
    expect(c.plans.length, `setting ${i}: coordinate found no plan`).toBe(1);
    expect(c.plans[0]!.predicted.latency, `setting ${i}`).toBeLessThanOrEqual(e.plans[0]!.predicted.latency * 1.05);
  }
  expect(compared).toBeGreaterThan(50);
  expect(evalCoord).toBeLessThan(evalExh / 5); // far fewer configurations than the joint grid
});

it('impossible budgets name the binding constraint and the smallest relaxation that works', () => {
  const pr = syntheticProblem(tiny, 3);
  pr.budgets = { edgeMemory: 50e6, latencyMs: 150, maxPplIncrease: 0.01 };
  const r = exhaustive.solve(pr);
  expect(r.plans).toEqual([]);
  expect(r.infeasible!.binding).toBe('memory');
  const to = r.infeasible!.relaxation.to;
  expect(to).toBeGreaterThan(50e6);
  pr.budgets.edgeMemory = to;
  expect(exhaustive.solve(pr).plans.length).toBeGreaterThan(0);
  pr.budgets = { edgeMemory: 2e9, latencyMs: 1, maxPplIncrease: 0.01 };
  const l = exhaustive.solve(pr);
  expect(l.infeasible!.binding).toBe('latency');
  pr.budgets.latencyMs = l.infeasible!.relaxation.to;
  expect(exhaustive.solve(pr).plans.length).toBeGreaterThan(0);
});

it('with a minimum sequence the memory needed is that of the shortest sequence that holds it, whatever budget falls short of it', () => {
  const pr = syntheticProblem(tiny, 3);
  pr.candidates.splits = pr.candidates.splits.filter((k) => k > 0); // split 0 holds no KV: its memory ignores the sequence
  pr.budgets = { edgeMemory: 1e6, latencyMs: 1e6, maxPplIncrease: 10, minSeq: 700 };
  const needs = (budget: number) => {
    pr.budgets.edgeMemory = budget;
    const r = exhaustive.solve(pr);
    expect(r.plans).toEqual([]);
    expect(r.infeasible!.binding).toBe('memory');
    return r.infeasible!.relaxation.to;
  };
  const need = needs(1e6);
  // a byte short: the same configuration fits 512 positions but not 768; the memory it asks for is the same
  expect(needs(need - 1)).toBe(need);
  expect(needs(need * 0.5)).toBe(need);
  pr.budgets.edgeMemory = need;
  const plans = exhaustive.solve(pr, 1).plans;
  expect(plans.length).toBe(1); // and that much is enough
  expect(plans[0]!.plan.maxSeq).toBeGreaterThanOrEqual(700);
});

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validatePlan } from '../shared/plan.js';
import { cli } from './helpers/cli.js';
import { describeWithFixtures, FIXTURES, STORIES_BIN } from './helpers/fixtures.js';
import { storiesModel } from './helpers/models.js';

describeWithFixtures('splitllm plan', () => {
  it('prints a plan and runners-up, writes the plan file, exits 3 with the binding budget, refuses foreign profiles', async () => {
    const pkg = await storiesModel();
    const pr = syntheticProblem({ ...pkg.config, hash: pkg.hash }, 5);
    pr.edge.baselineBytes = 20e6;
    const dir = mkdtempSync(join(tmpdir(), 'splitllm-plan-'));
    const write = (name: string, kind: string, data: unknown) => {
      const p = join(dir, name);
      writeFileSync(p, JSON.stringify({ format: 'splitllm-profile', kind, data }));
      return p;
    };
    const edgeF = write('edge.json', 'compute', pr.edge);
    const cloudF = write('cloud.json', 'compute', pr.cloud);
    const accF = write('acc.json', 'accuracy', pr.accuracy);
    const base = ['plan', '--model', STORIES_BIN, '--edge-profile', edgeF, '--cloud-profile', cloudF, '--accuracy-profile', accF, '--bandwidth', '10mbit', '--rtt', '40ms'];
    const out = join(dir, 'plan.json');
    const ok = cli([...base, '--edge-memory', '25MB', '--latency', '150ms', '--max-ppl-increase', '1%', '--json', '--out', out]);
    expect(ok.code, ok.stderr).toBe(0);
    const j = JSON.parse(ok.stdout) as { plan: { split: number; maxSeq: number }; alternatives: unknown[] };
    expect(j.alternatives.length).toBeGreaterThan(0);
    const file = validatePlan((JSON.parse(readFileSync(out, 'utf8')) as { plan: unknown }).plan);
    expect(file.split).toBe(j.plan.split);
    // --edge-memory is the model's share: the profile's 20 MB runtime comes on top (as in demo)
    const none = cli([...base, '--edge-memory', '200KB', '--latency', '150ms', '--json']);
    expect(none.code).toBe(3);
    const inf = (JSON.parse(none.stdout) as { infeasible: { binding: string; relaxation: { from: number; to: number } } }).infeasible;
    expect(inf.binding).toBe('memory');
    expect(inf.relaxation.from).toBe(200_000);
    expect(inf.relaxation.to).toBeGreaterThan(200_000);
    expect(inf.relaxation.to).toBeLessThan(20e6); // the model's share, not the whole process
    const foreign = write('foreign.json', 'compute', { ...pr.edge, model: 'another-model' });
    const f = cli(['plan', '--model', STORIES_BIN, '--edge-profile', foreign, '--cloud-profile', cloudF, '--accuracy-profile', accF, '--bandwidth', '10mbit', '--rtt', '40ms', '--edge-memory', '25MB', '--latency', '150ms']);
    expect(f.code).toBe(1);
    expect(f.stderr).toMatch(/\[E_BAD_CONFIG\]: .*another model/);
    const malformed = write('bad.json', 'link', { rttMs: -1 });
    const m = cli([...base.slice(0, 9), '--link-profile', malformed, '--edge-memory', '25MB', '--latency', '150ms']);
    expect(m.code).toBe(1);
    expect(m.stderr).toMatch(/bad\.json: rttMs must be at least 0, got -1/);
  });
});

describeWithFixtures('profile commands', () => {
  it('profile device and profile accuracy measure every precision, the blockwise ones again at each other block, and plan chooses among the blocks all profiles measured; profile link measures a running cloud', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'splitllm-prof-'));
    const dev = cli(['profile', 'device', '--model', STORIES_BIN, '--out', join(dir, 'edge.json'), '--steps', '3', '--bits', '4,32', '--block-sizes', '32,128']);
    expect(dev.code, dev.stderr).toBe(0);
    const pkg = await storiesModel();
    const { linkProfile } = await import('../planner/profiles.js');
    const p = computeProfile(JSON.parse(readFileSync(join(dir, 'edge.json'), 'utf8')), 'edge.json', pkg.hash);
    expect(Object.keys(p.layerDecodeMs).sort()).toEqual(['32', '4']);
    expect(p.layerDecodeMs['4']).toBeGreaterThan(0);
    expect(p.baselineBytes).toBeGreaterThan(10e6);
    // the blockwise precision again at block 128 (32-bit layers have no block)
    expect(Object.keys(p.blocks!)).toEqual(['128']);
    expect(Object.keys(p.blocks!['128']!.layerDecodeMs)).toEqual(['4']);
    expect(Object.keys(p.blocks!['128']!.headMsByBits!)).toEqual(['4']);
    expect(p.blocks!['128']!.layerDecodeMs['4']).toBeGreaterThan(0);
    const bad = cli(['profile', 'device', '--model', STORIES_BIN, '--out', join(dir, 'x.json'), '--block-sizes', '32,48']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/\[E_USAGE\]: --block-sizes 48 is not a supported block: use 16, 32, 64, 128/);

    // profile accuracy measures the quantized configurations again at block 128; plan chooses among the blocks
    const acc = cli(['profile', 'accuracy', '--model', STORIES_BIN, '--text', join(FIXTURES, 'corpus', 'tinystories_calib.txt'), '--bits', '4,32', '--codecs', 'fp32', '--block-sizes', '32,128', '--windows', '5', '--out', join(dir, 'acc.json')]);
    expect(acc.code, acc.stderr).toBe(0);
    const a = accuracyProfile(JSON.parse(readFileSync(join(dir, 'acc.json'), 'utf8')), 'acc.json', pkg.hash);
    const L = pkg.config.nLayers;
    const quantized = Object.keys(a.weights).filter((k) => {
      const [split, f, b] = k.split('/').map(Number);
      return (split! > 0 && f === 4) || (split! < L && b === 4);
    });
    expect(Object.keys(a.blocks!['128']!.weights).sort()).toEqual(quantized.sort());
    expect(quantized.length).toBe(16); // of 6 splits × 4: split 0 and L use one side only, 32/32 nothing
    expect(Object.keys(a.blocks!['128']!.heads!)).toEqual(['4']);
    // an all-4-bit model at block 128 is another model than at block 32
    expect(a.blocks!['128']!.weights['3/4/4']).not.toBeCloseTo(a.weights['3/4/4']!, 6);
    const plan = (extra: string[]) => cli(['plan', '--model', STORIES_BIN, '--edge-profile', join(dir, 'edge.json'), '--cloud-profile', join(dir, 'edge.json'), '--accuracy-profile', join(dir, 'acc.json'), '--bandwidth', '10mbit', '--rtt', '40ms', '--edge-memory', '25MB', '--latency', '1s', '--max-ppl-increase', '50%', '--json', ...extra]);
    const at128 = plan(['--block-sizes', '128']);
    expect(at128.code, at128.stderr).toBe(0);
    const j = JSON.parse(at128.stdout) as { plan: { blockSize: number }; alternatives: { blockSize: number }[] };
    expect([j.plan, ...j.alternatives].map((q) => q.blockSize)).toEqual(Array(1 + j.alternatives.length).fill(128));
    const unmeasured = plan(['--block-sizes', '32,64']);
    expect(unmeasured.code).toBe(1);
    expect(unmeasured.stderr).toMatch(/\[E_BAD_CONFIG\]: --block-sizes 64: the profiles do not all measure that block \(measured by every profile: 32, 128\)/);
    // the link probe runs in this process: a synchronous CLI child would block the in-process server
    const { startCloud } = await import('../cloud/server.js');
    const { measureLink } = await import('../edge/measure-link.js');
    const server = await startCloud(pkg);
    try {
      const data = await measureLink(`${server.url}/v1/session`, undefined, { bytes: 1 << 20 });
      const link = linkProfile({ format: 'splitllm-profile', kind: 'link', data }, 'link');
      expect(link.rttMs).toBeGreaterThan(0);
      expect(link.bytesPerSec).toBeGreaterThan(1e6); // loopback moves more than 1 MB/s
    } finally {
      await server.close();
    }
    const down = cli(['profile', 'link', '--cloud', 'ws://127.0.0.1:1', '--out', join(dir, 'link.json')]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/\[E_CONNECTION\]/);
  });
});

it('baseline methods narrow the search: one precision for both segments (a naive split), fp16 hidden states only; the whole model on the device by the same memory rule', () => {
  const pr = syntheticProblem(tiny, 4);
  pr.budgets = { edgeMemory: 1e12, latencyMs: 1e6, maxPplIncrease: 10 };
  const free = exhaustive.solve(pr, 100_000);
  const naive = exhaustive.solve({ ...pr, candidates: { ...pr.candidates, sameBits: true, codecs: ['fp16'] } }, 100_000);
  expect(free.plans.some((p) => p.plan.split > 0 && p.plan.split < tiny.nLayers && p.plan.frontBits !== p.plan.backBits)).toBe(true);
  expect(naive.plans.length).toBeGreaterThan(0);
  for (const p of naive.plans) {
    expect(p.plan.codec).toBe('fp16');
    if (p.plan.split > 0 && p.plan.split < tiny.nLayers) expect(p.plan.backBits).toBe(p.plan.frontBits);
  }
  // every (split, bits) once per codec, split 0 and L once per precision: (L − 1) × 6 + 6 + 6 configurations
  const distinct = new Set(naive.plans.map((p) => `${p.plan.split}/${p.plan.frontBits}/${p.plan.backBits}`));
  expect(distinct.size).toBe((tiny.nLayers - 1) * 6 + 12);
  // coordinate descent keeps to the same narrowing
  for (const p of coordinate.solve({ ...pr, candidates: { ...pr.candidates, sameBits: true, codecs: ['fp16'] } }, 10).plans) expect(p.plan.backBits).toBe(p.plan.frontBits);
  // no plan of the narrowed search beats the free one
  expect(naive.plans[0]!.predicted.latency).toBeGreaterThanOrEqual(free.plans[0]!.predicted.latency);
  // the whole model on the device: the front's rule at split L plus the LM head; float32 at 4 bits ≈ 1/8 of the bytes
  const base = pr.edge.baselineBytes;
  const front = predict(pr, { split: tiny.nLayers, frontBits: 32, backBits: 32, codec: 'fp32', maxSeq: 512 }).memory;
  const whole = localMemory(tiny, { bits: 32, maxSeq: 512, baselineBytes: base });
  // the head adds the final norm and, untied, its float32 table (once, as every weight)
  expect(whole - front).toBe(tiny.dim * 4 + (tiny.tiedEmbeddings ? 0 : tiny.vocabSize * tiny.dim * 4));
  const at4 = localMemory(tiny, { bits: 4, maxSeq: 512, baselineBytes: base, embedBits: 8, headBits: 8 });
  expect(at4).toBeLessThan(whole / 4);
  expect(localMemory(tiny, { bits: 4, maxSeq: 1024, baselineBytes: base })).toBeGreaterThan(localMemory(tiny, { bits: 4, maxSeq: 512, baselineBytes: base }));
});

it('the plan and the edge count memory by one rule: a plan predicts what the edge policy counts at its split, bits, block and embedding, plus the runtime', () => {
  // a bf16 package: its float embedding is held at 2 bytes a value
  const shape = { ...tiny, embedValueBytes: 2 };
  const pr = syntheticProblem(shape, 3);
  const configs = [
    { split: 2, frontBits: 4, backBits: 8, codec: 'fp32', maxSeq: 300, blockSize: 32 },
    { split: 5, frontBits: 8, backBits: 8, codec: 'fp32', maxSeq: 1000, blockSize: 32, embedBits: 8 },
    { split: 1, frontBits: 32, backBits: 4, codec: 'fp32', maxSeq: 64, blockSize: 32 },
  ];
  for (const cfg of configs) {
    const edge = edgeBytes(shape, { bits: cfg.frontBits, blockSize: cfg.blockSize, embedBits: cfg.embedBits }, cfg.split, cfg.maxSeq);
    expect(predict(pr, cfg).memory).toBe(edge + pr.edge.baselineBytes);
  }
  // the weights once: the float table at half of float32's bytes, the KV with the cache's growth room
  expect(edgeBytes(tiny, {}, 2, 100) - edgeBytes(shape, {}, 2, 100)).toBe(tiny.vocabSize * tiny.dim * 2);
  const kv = 2 * 2 * tiny.nKvHeads * tiny.headDim * 4;
  expect(edgeBytes(shape, {}, 2, 1000) - edgeBytes(shape, {}, 2, 0)).toBe(kvRoom(1000) * kv);
  expect([0, 1, 256, 1000].map(kvRoom)).toEqual([0, 80, 320, 1264]);
});

it('kvRoom bounds the capacity the KV cache grows to, one position or one prompt at a time', () => {
  for (const step of [1, 7, 100]) {
    let cap = 0;
    for (let p = step; p <= 5000; p += step) {
      if (p > cap) cap = grownCapacity(cap, p, 1 << 20);
      expect(cap).toBeGreaterThanOrEqual(p);
      expect(cap, `${p} positions in steps of ${step}`).toBeLessThanOrEqual(kvRoom(p));
    }
  }
});

it('split 0 and split L do not multiply plans by precisions they do not use', () => {
  const pr = syntheticProblem(tiny, 9);
  pr.budgets = { edgeMemory: 4e9, latencyMs: 1e4, maxPplIncrease: 10 };
  const plans = exhaustive.solve(pr, 10_000).plans;
  expect(plans.filter((p) => p.plan.split === 0).every((p) => p.plan.frontBits === 32)).toBe(true);
  expect(plans.filter((p) => p.plan.split === tiny.nLayers).every((p) => p.plan.backBits === 32)).toBe(true);
});

it('bandit over 300 simulated sessions with noisy latencies ends within 10% of the best fixed plan in hindsight', async () => {
  const { LatencyBandit } = await import('../planner/bandit.js');
  const pr = syntheticProblem(tiny, 4);
  pr.budgets = { edgeMemory: 2e9, latencyMs: 400, maxPplIncrease: 0.05 };
  const arms = exhaustive.solve(pr, 8).plans;
  expect(arms.length).toBe(8);
  const next = rng(77);
  // reality differs from the profile: each plan's true latency is its prediction times an unknown factor
  const truth = arms.map((a) => a.predicted.latency * (0.7 + 0.6 * next()));
  const gauss = () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
  const bandit = new LatencyBandit(arms, 5);
  const sums = arms.map(() => 0);
  let total = 0;
  const curve: string[] = [];
  let regret = 0;
  const bestTrue = Math.min(...truth);
  for (let s = 1; s <= 300; s++) {
    const i = bandit.choose();
    const observed = truth[i]! * Math.exp(0.2 * gauss()); // one session's mean per-token latency, lognormal noise
    bandit.observe(i, observed);
    total += observed;
    sums[i]! += observed;
    regret += truth[i]! - bestTrue;
    if (s % 50 === 0) curve.push(`${s}:${regret.toFixed(1)}`);
  }
  process.stderr.write(`[planner] bandit cumulative regret (ms, by session): ${curve.join(' ')}; final choice ${bandit.best()} (best ${truth.indexOf(bestTrue)})\n`);
  expect(total / 300).toBeLessThanOrEqual(1.1 * bestTrue);
  expect(bandit.best()).toBe(truth.indexOf(bestTrue));
});

it('speculation: a measured proposer lowers the predicted per-token latency by the expected tokens per round, within the memory budget; a poor one or a slow draft is not chosen', () => {
  const pr = syntheticProblem(tiny, 4);
  // a long round trip against a drafted position's cost (4 KB of fp16 at 10 MB/s, the layers' prefill share)
  pr.link = { rttMs: 100, bytesPerSec: 10e6 };
  const c = { split: 5, frontBits: 4, backBits: 8, codec: 'fp16', maxSeq: 256 };
  const plain = predict(pr, c);
  expect(plain.speculation).toBeUndefined();
  const draft = { proposer: 'model:../draft', acceptance: 0.6, coverage: 1, draftMsPerToken: 0.3, edgeBytes: 4e6 };
  pr.speculation = [draft];
  pr.maxDraft = 4;
  pr.budgets = { ...pr.budgets, edgeMemory: plain.memory + 5e6 };
  const spec = predict(pr, c);
  const s = spec.speculation!;
  expect(s.proposer).toBe('model:../draft');
  expect(s.plainLatency).toBeCloseTo(plain.latency, 9);
  expect(s.tokensPerRound).toBeCloseTo(expectedTokens(0.6, s.draftTokens), 9);
  expect(spec.latency).toBeLessThan(plain.latency / 1.2);
  // the draft model's memory is the plan's too
  expect(spec.memory).toBeCloseTo(plain.memory + 4e6, 0);
  // it does not fit: no speculation, the plain prediction
  pr.budgets = { ...pr.budgets, edgeMemory: plain.memory + 1e6 };
  expect(predict(pr, c)).toEqual(plain);
  pr.budgets = { ...pr.budgets, edgeMemory: plain.memory + 5e6 };
  // acceptance 0, or a draft that costs more than a round trip: plain steps win
  pr.speculation = [{ ...draft, acceptance: 0 }];
  expect(predict(pr, c).speculation).toBeUndefined();
  pr.speculation = [{ ...draft, draftMsPerToken: 1000 }];
  expect(predict(pr, c).speculation).toBeUndefined();
  // early exit counts only at the split it was measured at; ngram drafts only where it covers
  pr.speculation = [{ proposer: 'early-exit', split: 3, acceptance: 0.9, coverage: 1, draftMsPerToken: 0 }];
  expect(predict(pr, c).speculation).toBeUndefined();
  pr.speculation = [{ proposer: 'ngram', acceptance: 0.9, coverage: 0.5, draftMsPerToken: 0 }];
  const ngram = predict(pr, c).speculation!;
  expect(ngram.tokensPerRound).toBeCloseTo(0.5 * expectedTokens(0.9, ngram.draftTokens) + 0.5, 9);
  // and the strategies carry the choice into the plan
  pr.speculation = [draft];
  const best = exhaustive.solve(pr, 1).plans[0]!;
  expect(best.plan.speculate).toBe('model:../draft');
  expect(best.plan.draftTokens).toBe(best.predicted.speculation!.draftTokens);
  expect(best.plan.predicted!['tokensPerRound']).toBeCloseTo(best.predicted.speculation!.tokensPerRound, 9);
});

it('the LM head\'s precision: the plan quantizes the head where the profiles measured it faster and its ppl cost fits the budget, and keeps it at 32 bits where it does not', () => {
  const pr = syntheticProblem(tiny, 4);
  const base = exhaustive.solve(pr, 1).plans[0]!;
  expect(base.plan.headBits).toBeUndefined();
  // the cloud's head at 4 bits takes 0.2 ms instead of 1, for +0.01% ppl: chosen (no other plan changes)
  pr.cloud = { ...pr.cloud, headMsByBits: { '4': 0.2, '8': 0.5 } };
  pr.accuracy = { ...pr.accuracy, heads: { '4': 0.0001, '8': 0.00001 } };
  pr.candidates = { ...pr.candidates, headBits: [32, 8, 4] };
  const q = exhaustive.solve(pr, 1).plans[0]!;
  expect(q.plan.headBits).toBe(4);
  expect(q.predicted.latency).toBeCloseTo(base.predicted.latency - 0.8, 6);
  expect(q.predicted.accuracy).toBeCloseTo(base.predicted.accuracy + 0.0001, 9);
  // coordinate descent finds it too
  expect(coordinate.solve(pr, 1).plans[0]!.plan.headBits).toBe(4);
  // a head whose ppl cost leaves no room in the budget is not taken
  pr.accuracy = { ...pr.accuracy, heads: { '4': 0.5, '8': 0.4 } };
  expect(exhaustive.solve(pr, 1).plans[0]!.plan.headBits).toBeUndefined();
  // a precision the cloud's compute profile did not measure is refused by name
  expect(() => predict(pr, { split: 5, frontBits: 4, backBits: 8, codec: 'fp16', maxSeq: 256, headBits: 2 })).toThrow(/no LM head latency for 2-bit weights/);
});

it('the quantization block: the plan takes a longer block where the profiles measured it faster and its ppl cost fits the budget, keeps 32 where it does not; float configurations are not multiplied by blocks', () => {
  const pr = syntheticProblem(tiny, 4);
  const base = exhaustive.solve(pr, 1).plans[0]!;
  expect(base.plan.blockSize).toBe(32);
  // at block 128 the blockwise layers (below 16 bits) run 20% faster, for +0.05% ppl on every quantized configuration
  const faster = (t: Record<string, number>) => Object.fromEntries(Object.entries(t).filter(([b]) => Number(b) < 16).map(([b, ms]) => [b, 0.8 * ms]));
  pr.edge = { ...pr.edge, blocks: { '128': { layerDecodeMs: faster(pr.edge.layerDecodeMs) } } };
  pr.cloud = { ...pr.cloud, blocks: { '128': { layerDecodeMs: faster(pr.cloud.layerDecodeMs) } } };
  const worse = (d: number) => ({ weights: Object.fromEntries(Object.entries(pr.accuracy.weights).map(([k, v]) => [k, v + d])) });
  pr.accuracy = { ...pr.accuracy, blocks: { '128': worse(0.0005) } };
  pr.candidates = { ...pr.candidates, blockSizes: [32, 128] };
  const q = exhaustive.solve(pr, 1).plans[0]!;
  expect(q.plan.blockSize).toBe(128);
  const { split, frontBits, backBits, codec, maxSeq } = q.plan;
  const c = { split, frontBits, backBits, codec, maxSeq };
  const at32 = predict(pr, { ...c, blockSize: 32 });
  const at128 = predict(pr, { ...c, blockSize: 128 });
  expect(q.predicted.latency).toBe(at128.latency);
  // each blockwise layer's share 20% less, on both sides
  const saved = 0.2 * (split * (frontBits < 16 ? pr.edge.layerDecodeMs[String(frontBits)]! : 0) + (tiny.nLayers - split) * (backBits < 16 ? pr.cloud.layerDecodeMs[String(backBits)]! : 0));
  expect(saved).toBeGreaterThan(0);
  expect(at32.latency - at128.latency).toBeCloseTo(saved, 9);
  expect(at128.accuracy - at32.accuracy).toBeCloseTo(0.0005, 12);
  // a scale per 128 weights instead of per 32 (where the front is quantized)
  if (split > 0 && frontBits < 16) expect(at128.memory).toBeLessThan(at32.memory);
  else expect(at128.memory).toBe(at32.memory);
  const front4 = { split: 5, frontBits: 4, backBits: 8, codec: 'fp16', maxSeq: 256 };
  expect(predict(pr, { ...front4, blockSize: 128 }).memory).toBeLessThan(predict(pr, { ...front4, blockSize: 32 }).memory);
  // coordinate descent finds the block too
  expect(coordinate.solve(pr, 1).plans[0]!.plan.blockSize).toBe(128);
  // a block whose ppl cost leaves no room in the budget is not taken
  pr.accuracy = { ...pr.accuracy, blocks: { '128': worse(0.5) } };
  expect(exhaustive.solve(pr, 1).plans[0]!.plan).toMatchObject({ blockSize: 32, split: base.plan.split, frontBits: base.plan.frontBits });
  // a block no profile measured is refused by name
  expect(() => predict(pr, { ...c, blockSize: 64 })).toThrow(/no decode latency for \d-bit layers at block 64/);
  // configurations with float layers and head only are the same at every block: searched once
  const float = { ...pr, candidates: { ...pr.candidates, bits: [16, 32] } };
  expect(exhaustive.solve(float, 1).evaluated).toBe(exhaustive.solve({ ...float, candidates: { ...float.candidates, blockSizes: [32] } }, 1).evaluated);
  expect(exhaustive.solve(pr, 1).evaluated).toBeGreaterThan(exhaustive.solve({ ...pr, candidates: { ...pr.candidates, blockSizes: [32] } }, 1).evaluated);
  // a problem built from profiles offers a block only where all three measured it for every blockwise precision
  const build = (edge = pr.edge) => buildProblem(tiny, { edge, cloud: pr.cloud, link: pr.link, accuracy: pr.accuracy }, pr.budgets).candidates.blockSizes;
  expect(build()).toEqual([32, 128]);
  expect(build({ ...pr.edge, blocks: { '128': { layerDecodeMs: { '4': 1 } } } })).toEqual([32]); // 2, 3 and 8 bits missing there
  expect(build({ ...pr.edge, blocks: undefined })).toEqual([32]);
});

it('profiles: a blocks table keys supported blocks other than 32 and holds blockwise precisions only', () => {
  const pr = syntheticProblem(tiny, 4);
  const file = (kind: string, data: unknown) => ({ format: 'splitllm-profile', kind, data });
  const ok = computeProfile(file('compute', { ...pr.edge, blocks: { '128': { layerDecodeMs: { '4': 0.5, '8': 0.7 }, headMsByBits: { '4': 0.2 } } } }), 'edge.json', tiny.hash);
  expect(ok.blocks).toEqual({ '128': { layerDecodeMs: { '4': 0.5, '8': 0.7 }, headMsByBits: { '4': 0.2 } } });
  expect(() => computeProfile(file('compute', { ...pr.edge, blocks: { '32': { layerDecodeMs: { '4': 0.5 } } } }), 'edge.json', tiny.hash)).toThrow(/edge\.json.*has a block 32: blocks holds 16, 64, 128/);
  expect(() => computeProfile(file('compute', { ...pr.edge, blocks: { '48': { layerDecodeMs: { '4': 0.5 } } } }), 'edge.json', tiny.hash)).toThrow(/has a block 48/);
  expect(() => computeProfile(file('compute', { ...pr.edge, blocks: { '64': { layerDecodeMs: { '32': 0.5 } } } }), 'edge.json', tiny.hash)).toThrow(/32-bit weights, which have no block/);
  expect(() => computeProfile(file('compute', { ...pr.edge, blocks: { '64': { layerDecodeMs: { '4': -1 } } } }), 'edge.json', tiny.hash)).toThrow(/at least 0/);
  const acc = accuracyProfile(file('accuracy', { ...pr.accuracy, blocks: { '64': { weights: { '3/4/8': 0.01 }, heads: { '4': 0.002 } } } }), 'acc.json', tiny.hash);
  expect(acc.blocks).toEqual({ '64': { weights: { '3/4/8': 0.01 }, heads: { '4': 0.002 } } });
  expect(() => accuracyProfile(file('accuracy', { ...pr.accuracy, blocks: { '64': { heads: { '4': 0.002 } } } }), 'acc.json', tiny.hash)).toThrow(/weights must be a map/);
});

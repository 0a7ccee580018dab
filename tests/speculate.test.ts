/**
 * Speculative decoding across the split: the edge drafts (ngram proposer), the cloud verifies every draft
 * in one pass and both sides drop rejected positions. Greedy output equals generation without
 * speculation, token for token, at every split; the acceptance rule is the standard one; hostile drafts
 * get `bad_draft` and the session goes on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { ngramPropose } from '../edge/draft/ngram.js';
import { DRAFT_SUPPORT, DraftModel } from '../edge/draft/model.js';
import type { DraftProposer } from '../edge/draft/proposer.js';
import { proposerFor } from '../edge/draft/registry.js';
import { DEFAULT_DRAFT_DIR, DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { accuracyProfile } from '../planner/profiles.js';
import type { SpeculationProfile } from '../planner/types.js';
import { validatePlan } from '../shared/plan.js';
import { cli, cliAsync } from './helpers/cli.js';
import { calibrationContexts } from '../cli/calibration-io.js';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelPackage, openModel } from '../models/package.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { buildSegment } from '../models/onnx/segment.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { Sampler } from '../models/runtime/sampler.js';
import { denseDistribution, drawSparse, sparseDistribution, verifyDrafts } from '../models/runtime/verify.js';
import { DRAFT_Q_SCALE, MAX_DRAFT, encodeFrame } from '../shared/protocol/index.js';
import { droppingConnector } from './helpers/channels.js';
import { describeWithFixtures } from './helpers/fixtures.js';
import { defaultModel, storiesModel } from './helpers/models.js';
import { expectError, fp32, testCloud, TestEdge } from './helpers/cloud.js';

describe('the ngram proposer', () => {
  it('continues the latest earlier occurrence of the longest repeated suffix (2..4 tokens), else nothing', () => {
    expect(ngramPropose([1, 2, 3, 4, 9, 9, 1, 2, 3], 3)).toEqual([4, 9, 9]);
    // the longest suffix wins over a shorter, later one
    expect(ngramPropose([5, 6, 7, 1, 6, 7, 2, 5, 6, 7], 2)).toEqual([1, 6]);
    // a suffix of 2 that repeats: its latest earlier occurrence
    expect(ngramPropose([8, 9, 1, 8, 9, 2, 8, 9], 4)).toEqual([2, 8, 9]);
    expect(ngramPropose([1, 2, 3, 4, 5], 4)).toEqual([]);
    expect(ngramPropose([7], 4)).toEqual([]);
    // k bounds the draft, and the history's end bounds it too
    expect(ngramPropose([1, 2, 3, 1, 2], 8)).toEqual([3, 1, 2]);
  });

  it('--speculate names a proposer or off; anything else is a one-line usage error', async () => {
    expect(await proposerFor('off')).toBeUndefined();
    expect((await proposerFor('ngram'))?.name).toBe('ngram:4');
    expect((await proposerFor('ngram:3'))?.name).toBe('ngram:3');
    await expect(proposerFor('ngram:1')).rejects.toThrow(/n-gram length must be an integer in 2\.\.16/);
    await expect(proposerFor('magic')).rejects.toThrow(/unknown proposer "magic": use ngram, early-exit, model, off/);
  });
});

describe('verification', () => {
  const V = 5;
  const rows = (...r: number[][]) => Float32Array.from(r.flat());

  it('greedy: drafts stand while each is the argmax of the row before it; the next token is the argmax after them', () => {
    const g = new Sampler({ temperature: 0 });
    const logits = rows([0, 9, 0, 0, 0], [0, 0, 0, 9, 0], [9, 0, 0, 0, 0], [0, 0, 9, 0, 0]);
    expect(verifyDrafts(g, logits, V, [1, 3, 0])).toEqual({ accepted: 3, next: 2 });
    expect(verifyDrafts(g, logits, V, [1, 4, 0])).toEqual({ accepted: 1, next: 3 });
    expect(verifyDrafts(g, logits, V, [2, 3, 0])).toEqual({ accepted: 0, next: 1 });
  });

  it('sampling with a one-hot draft: the draft stands with probability p(draft), and the emitted token is distributed as p', () => {
    // p = softmax(log [0.1, 0.6, 0.3, 0, 0]) at temperature 1
    const logits = rows([Math.log(0.1), Math.log(0.6), Math.log(0.3), -1e9, -1e9], [0, 0, 0, 0, 0]);
    const s = new Sampler({ temperature: 1, seed: 11 });
    const n = 20_000;
    let stood = 0;
    const first = new Array<number>(V).fill(0);
    for (let i = 0; i < n; i++) {
      const v = verifyDrafts(s, logits, V, [1]);
      if (v.accepted === 1) stood++;
      first[v.accepted === 1 ? 1 : v.next]!++;
    }
    expect(stood / n).toBeGreaterThan(0.58);
    expect(stood / n).toBeLessThan(0.62);
    // the token that follows the fed one: draft if it stood, else the residual's draw
    expect(first[0]! / n).toBeCloseTo(0.1, 1);
    expect(first[1]! / n).toBeCloseTo(0.6, 1);
    expect(first[2]! / n).toBeCloseTo(0.3, 1);
    expect(first[3]! + first[4]!).toBe(0);
  });
});

const REPEAT =
  'ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\nROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and';

/** The proposers every split is tested with: the two without weights and a draft model (`draft`: its package). */
async function proposersFor(pkg: ModelPackage, draft: ModelPackage): Promise<DraftProposer[]> {
  return [(await proposerFor('ngram'))!, (await proposerFor('early-exit', { pkg }))!, await DraftModel.fromPackage(draft, pkg)];
}

async function speculationMatches(pkg: ModelPackage, draft: ModelPackage, prompt: string, maxTokens: number): Promise<void> {
  const server: CloudServer = await startCloud(pkg);
  try {
    const url = `${server.url}/v1/session`;
    const ids = pkg.tokenizer().encode(prompt, true);
    const p = await Pipeline.create(pkg);
    const local = await generate(p, ids, { maxTokens, stopIds: [] });
    await p.release();
    for (const proposer of await proposersFor(pkg, draft)) {
      const spec = proposer.name;
      let accepted = 0;
      for (let K = 0; K <= pkg.config.nLayers; K++) {
        // a fixed draft length, so that every step drafts (the adaptive one follows this machine's timings)
        const r = await runEdge(pkg, { url, split: K, codec: 'fp32', prompt, maxTokens, stopIds: [], speculate: { proposer, maxDraft: 5, fixed: true } });
        expect(r.tokens, `${spec}, split ${K}`).toEqual(local);
        const sp = r.stats.speculation!;
        expect(sp.draftSteps).toBeGreaterThan(0);
        accepted += sp.accepted;
        // fewer round trips than tokens when drafts stand
        if (sp.accepted > 0) expect(sp.tokensPerRound).toBeGreaterThan(1);
        // the early exit of the last layer is the model itself: every draft stands
        if (spec === 'early-exit' && K === pkg.config.nLayers) expect(sp.acceptance).toBe(1);
      }
      expect(accepted, spec).toBeGreaterThan(0);
      await proposer.release?.();
    }
  } finally {
    await server.close();
  }
}

it('greedy output with --speculate ngram, early-exit and model:models/draft equals the output without, at every split, on the default model', async () => {
  await speculationMatches(await defaultModel(), await openModel(DEFAULT_DRAFT_DIR), REPEAT, 48);
}, 180_000);

describeWithFixtures('speculation on stories260K', () => {
  it('greedy output with --speculate ngram, early-exit and a 2-layer draft model equals the output without, at every split', async () => {
    const pkg = await storiesModel();
    // the draft: stories260K's own first two layers and head as a model of its own (the same tokenizer)
    const draft = new ModelPackage({ ...pkg.manifest, name: 'stories260K-2-layers', config: { ...pkg.config, nLayers: 2 } }, pkg.weights, pkg.tokenizerJson);
    await speculationMatches(pkg, draft, 'Once upon a time, there was a little girl named Lily. She loved to play outside. Once upon a time, there was a little', 60);
  }, 180_000);
});

describe('the model proposer', () => {
  it('refuses a draft with another vocabulary or tokenizer, a missing package and bad bits, in one line each', async () => {
    const pkg = await defaultModel();
    await expect(proposerFor('model', { pkg })).rejects.toThrow(/--speculate model needs the draft package: --speculate model:PATH/);
    await expect(proposerFor('model:/nonexistent/draft', { pkg })).rejects.toThrow(/draft model \/nonexistent\/draft does not exist: pass a draft package/);
    await expect(proposerFor(`model:${DEFAULT_DRAFT_DIR}@5`, { pkg })).rejects.toThrow(/weight bits must be one of 2, 3, 4, 8, 16, 32/);
    const tiny = ModelPackage.fromImported(syntheticModel('tiny', 3));
    await expect(DraftModel.fromPackage(tiny, pkg)).rejects.toThrow(new RegExp(`vocabulary of ${tiny.config.vocabSize}, the model 512: a draft model must share the model's tokenizer`));
    const other = { ...pkg.tokenizerJson!, model: { type: 'BPE', vocab: {}, merges: [] } };
    await expect(DraftModel.fromPackage(new ModelPackage(pkg.manifest, pkg.weights, other), pkg)).rejects.toThrow(/another tokenizer than the model/);
  });

  it('sampled drafts carry their distribution: integer weights that sum to the scale, the draft among them', async () => {
    const pkg = await defaultModel();
    const model = await DraftModel.fromPackage(await openModel(DEFAULT_DRAFT_DIR), pkg);
    const s = await model.open();
    const ids = pkg.tokenizer().encode('ROMEO:\n', true);
    const r = await s.propose(ids, 4, new Sampler({ temperature: 0.8, seed: 3 }));
    expect(r.tokens).toHaveLength(4);
    expect(r.q).toHaveLength(4);
    r.q!.forEach((d, i) => {
      expect(d.weights.reduce((a, b) => a + b, 0)).toBe(DRAFT_Q_SCALE);
      expect(d.ids).toContain(r.tokens[i]);
      expect(d.ids.length).toBeLessThanOrEqual(DRAFT_SUPPORT);
    });
    // greedy: no distribution, and after a verdict the cache follows the history (the same drafts as a fresh session)
    const g = await s.propose(ids, 3, new Sampler({ temperature: 0 }));
    expect(g.q).toBeUndefined();
    const fresh = await model.open();
    expect((await fresh.propose(ids, 3, new Sampler({ temperature: 0 }))).tokens).toEqual(g.tokens);
    const longer = [...ids, g.tokens[0]!, 7];
    expect((await s.propose(longer, 3, new Sampler({ temperature: 0 }))).tokens).toEqual((await fresh.propose(longer, 3, new Sampler({ temperature: 0 }))).tokens);
    await s.release?.();
    await fresh.release?.();
    await model.release();
  });

  it('sparseDistribution keeps the most likely tokens with integer weights summing to the scale; drawSparse inverts them', () => {
    const d = sparseDistribution([0.5, 0.2, 0.3, 0, 1e-9], 3, 100);
    expect(d).toEqual({ ids: [0, 2, 1], weights: [50, 30, 20] });
    expect(drawSparse(d, 0, 100)).toBe(0);
    expect(drawSparse(d, 0.5, 100)).toBe(2);
    expect(drawSparse(d, 0.8, 100)).toBe(1);
    expect(denseDistribution(d, 5, 100)).toEqual(Float64Array.from([0.5, 0.2, 0.3, 0, 0]));
    // remainders go to the largest fractions; shares that round to nothing are left out
    expect(sparseDistribution([1, 1, 1], 3, 10).weights).toEqual([4, 3, 3]);
    expect(sparseDistribution([0.999, 0.001], 2, 100)).toEqual({ ids: [0], weights: [100] });
  });
});

/** P(X ≥ x) for X ~ χ²(k): the regularized upper incomplete gamma Q(k/2, x/2) (series / continued fraction). */
function chiSquareSurvival(x: number, k: number): number {
  const a = k / 2;
  const z = x / 2;
  if (z <= 0) return 1;
  const lnGamma = (v: number): number => {
    const c = [76.18009172947146, -86.50532032941677, 24.01409824083091, -1.231739572450155, 0.1208650973866179e-2, -0.5395239384953e-5];
    let y = v;
    const t = v + 5.5 - (v + 0.5) * Math.log(v + 5.5);
    let ser = 1.000000000190015;
    for (const ci of c) ser += ci / ++y;
    return -t + Math.log((2.5066282746310005 * ser) / v);
  };
  const g = lnGamma(a);
  if (z < a + 1) {
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 500; n++) {
      term *= z / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-12) break;
    }
    return 1 - sum * Math.exp(-z + a * Math.log(z) - g);
  }
  let b = z + 1 - a;
  let cc = 1 / 1e-300;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 500; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < 1e-300) d = 1e-300;
    cc = b + an / cc;
    if (Math.abs(cc) < 1e-300) cc = 1e-300;
    d = 1 / d;
    const del = d * cc;
    h *= del;
    if (Math.abs(del - 1) < 1e-12) break;
  }
  return Math.exp(-z + a * Math.log(z) - g) * h;
}

/** Two-sample χ² test of homogeneity (bins with fewer than 10 samples in both together pooled): its p-value. */
function homogeneity(a: number[], b: number[]): number {
  const count = (xs: number[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<number, number>());
  const ca = count(a);
  const cb = count(b);
  const bins: [number, number][] = [];
  let rest: [number, number] = [0, 0];
  for (const key of new Set([...ca.keys(), ...cb.keys()])) {
    const x = ca.get(key) ?? 0;
    const y = cb.get(key) ?? 0;
    if (x + y >= 10) bins.push([x, y]);
    else rest = [rest[0] + x, rest[1] + y];
  }
  if (rest[0] + rest[1] > 0) bins.push(rest);
  const na = a.length;
  const nb = b.length;
  let chi = 0;
  for (const [x, y] of bins) {
    const e = (x + y) / (na + nb);
    chi += (x - e * na) ** 2 / (e * na) + (y - e * nb) ** 2 / (e * nb);
  }
  return chiSquareSurvival(chi, Math.max(1, bins.length - 1));
}

it('the χ² helper gives known p-values', () => {
  expect(chiSquareSurvival(3.841, 1)).toBeCloseTo(0.05, 3);
  expect(chiSquareSurvival(9.21, 2)).toBeCloseTo(0.01, 3);
  expect(chiSquareSurvival(18.307, 10)).toBeCloseTo(0.05, 3);
});

/**
 * 2,000 seeded runs through edge and cloud with and without speculation (split 3, 3 tokens, 3 fixed drafts
 * each step): the χ² homogeneity of tokens 1, 2 and 3 between the two, and both branches of the rule ran.
 */
async function samplingMatches(label: string, make: (pkg: ModelPackage) => Promise<DraftProposer>): Promise<void> {
  const pkg = await defaultModel();
  const cloud = testCloud(pkg);
  try {
    // the session id the edge chose is the one the upgrade URL would carry
    const connect = async (session?: string) => cloud.connect({ tenant: 'default', ...(session ? { session } : {}) }).channel;
    // one front session for all runs (each run gets its own cache over it)
    const seg = buildSegment(pkg.config, pkg.weights, 0, 3, { embed: true, head: false });
    const shared = await SegmentRuntime.openSession(seg);
    const fronts = async () => SegmentRuntime.withSession(pkg.config, seg, shared);
    const proposer = await make(pkg);
    const runs = 2000;
    const plain: number[][] = [[], [], []];
    const spec: number[][] = [[], [], []];
    let drafted = 0;
    let accepted = 0;
    for (let i = 0; i < runs; i++) {
      const base = { url: 'memory', split: 3, codec: 'fp32', prompt: 'ROMEO:', maxTokens: 3, stopIds: [] as number[], connect, fronts };
      const a = await runEdge(pkg, { ...base, sampling: { temperature: 0.8, seed: i } });
      const b = await runEdge(pkg, { ...base, sampling: { temperature: 0.8, seed: runs + i }, speculate: { proposer, maxDraft: 3, fixed: true } });
      a.tokens.forEach((t, j) => plain[j]!.push(t));
      b.tokens.forEach((t, j) => spec[j]!.push(t));
      drafted += b.stats.speculation!.drafted;
      accepted += b.stats.speculation!.accepted;
    }
    await proposer.release?.();
    await shared.session.release();
    expect(drafted).toBeGreaterThan(runs / 2);
    // some drafts stand and some fall: both sides of the acceptance rule ran
    expect(accepted).toBeGreaterThan(drafted * 0.05);
    expect(accepted).toBeLessThan(drafted * 0.95);
    for (let j = 0; j < 3; j++) {
      expect(spec[j]!.length).toBe(runs);
      const p = homogeneity(plain[j]!, spec[j]!);
      process.stderr.write(`[speculate] ${label}: token ${j + 1}: χ² homogeneity p = ${p.toFixed(3)} (${runs} runs each; ${accepted}/${drafted} drafts stood)\n`);
      expect(p, `token ${j + 1}`).toBeGreaterThan(0.01);
    }
  } finally {
    await cloud.close();
  }
}

it('sampling at temperature 0.8: the first 3 tokens with early-exit speculation are distributed as without (2,000 seeded runs each, χ² p > 0.01)', async () => {
  await samplingMatches('early-exit', async (pkg) => (await proposerFor('early-exit', { pkg }))!);
}, 300_000);

it('sampling at temperature 0.8: the first 3 tokens with the draft model (models/draft, q sent with each draft) are distributed as without (2,000 seeded runs each, χ² p > 0.01)', async () => {
  await samplingMatches('model:models/draft', async (pkg) => DraftModel.fromPackage(await openModel(DEFAULT_DRAFT_DIR), pkg));
}, 300_000);

it('a link cut right after a draft is resumed: the verdict comes again (or the draft goes again) and the output is unchanged', async () => {
  const pkg = await defaultModel();
  const server = await startCloud(pkg);
  try {
    const url = `${server.url}/v1/session`;
    const p = await Pipeline.create(pkg);
    const local = await generate(p, pkg.tokenizer().encode(REPEAT, true), { maxTokens: 40, stopIds: [] });
    await p.release();
    const proposer = (await proposerFor('ngram'))!;
    const r = await runEdge(pkg, { url, split: 3, codec: 'fp32', prompt: REPEAT, maxTokens: 40, stopIds: [], speculate: { proposer, maxDraft: 4, fixed: true }, connect: droppingConnector(url, [0, 2], undefined, ['draft']) });
    expect(r.tokens).toEqual(local);
    // cut right after the 1st and 3rd drafts
    expect(r.stats.resumes).toBe(2);
    expect(r.stats.speculation!.accepted).toBeGreaterThan(0);
  } finally {
    await server.close();
  }
});

describe('hostile drafts', () => {
  let pkg: ModelPackage;
  beforeAll(async () => {
    pkg = await defaultModel();
  });
  const cloudClosers: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cloudClosers) await c();
  });

  it('too many positions, a wrong count, ids outside the vocabulary, positions past the limit, a short tensor: bad_draft, and the session goes on', async () => {
    const cloud = testCloud(pkg, { tokenLimit: 16 });
    cloudClosers.push(() => cloud.close());
    const client = cloud.connect();
    const edge = await TestEdge.start(pkg, client, 2, { maxTokens: 8 });
    const prompt = pkg.tokenizer().encode('ROMEO:', true);
    let next = await edge.round(prompt);
    const D = pkg.config.dim;
    const zeros = (n: number) => fp32.encode(new Float32Array(n * D), n, D);
    const raw = (header: Record<string, unknown>, payload: Uint8Array) => client.sendRaw(encodeFrame(header as never, payload));
    // more drafts than a frame may carry
    raw({ type: 'draft', tokens: MAX_DRAFT + 2, token: next, drafts: new Array(MAX_DRAFT + 1).fill(1) }, zeros(MAX_DRAFT + 2));
    await expectError(client, 'bad_draft');
    // tokens ≠ drafts + 1
    raw({ type: 'draft', tokens: 3, token: next, drafts: [1] }, zeros(3));
    await expectError(client, 'bad_draft');
    // an id outside the vocabulary
    client.send({ type: 'draft', tokens: 2, token: next, drafts: [pkg.config.vocabSize] }, zeros(2));
    await expectError(client, 'bad_draft');
    // the tensor holds fewer positions than the frame says
    client.send({ type: 'draft', tokens: 3, token: next, drafts: [1, 2] }, zeros(2));
    await expectError(client, 'bad_draft');
    // past the session's position limit (16)
    client.send({ type: 'draft', tokens: 16, token: next, drafts: new Array(15).fill(1) }, zeros(16));
    await expectError(client, 'bad_draft');
    // none of that touched the session: a plain step still gives the next token
    next = await edge.round([next]);
    expect(next).toBeGreaterThanOrEqual(0);
  });

  it('a sampled draft whose distribution is malformed (weights off the scale, the draft outside it, ids outside the vocabulary, a count that differs, with exit): bad_draft, and the session goes on', async () => {
    const cloud = testCloud(pkg);
    cloudClosers.push(() => cloud.close());
    const client = cloud.connect();
    const edge = await TestEdge.start(pkg, client, 2, { maxTokens: 8, sampling: { temperature: 0.8, seed: 1 } });
    let next = await edge.round(pkg.tokenizer().encode('ROMEO:', true));
    const D = pkg.config.dim;
    const zeros = (n: number) => fp32.encode(new Float32Array(n * D), n, D);
    const raw = (header: Record<string, unknown>) => client.sendRaw(encodeFrame(header as never, zeros(2)));
    const draft = { type: 'draft', tokens: 2, token: next, drafts: [5] };
    const cases: [unknown, RegExp][] = [
      [[{ ids: [5, 6], weights: [100, 200] }], /weights sum to 300, not 65536/],
      [[{ ids: [6], weights: [DRAFT_Q_SCALE] }], /gives draft 5 no weight/],
      [[{ ids: [5, pkg.config.vocabSize], weights: [DRAFT_Q_SCALE - 1, 1] }], /outside the model's vocabulary/],
      [[{ ids: [5, 5], weights: [DRAFT_Q_SCALE / 2, DRAFT_Q_SCALE / 2] }], /names an id twice/],
      [[{ ids: [5], weights: [DRAFT_Q_SCALE] }, { ids: [5], weights: [DRAFT_Q_SCALE] }], /2 distributions for 1 drafts/],
      [[{ ids: [5], weights: [0] }], /weights\[0\]/],
      [['no map'], /q\[0\]: must be a map/],
    ];
    for (const [q, why] of cases) {
      raw({ ...draft, q });
      const e = await expectError(client, 'bad_draft');
      expect(e.type === 'error' ? e.message : '').toMatch(why);
    }
    raw({ ...draft, exit: true, q: [{ ids: [5], weights: [DRAFT_Q_SCALE] }] });
    const both = await expectError(client, 'bad_draft');
    expect(both.type === 'error' ? both.message : '').toMatch(/both exit and q/);
    // the session is untouched: a well-formed sampled draft is verified, then a plain step goes on
    client.send({ type: 'draft', tokens: 2, token: next, drafts: [5], q: [{ ids: [5, 6], weights: [DRAFT_Q_SCALE - 1000, 1000] }] } as never, zeros(2));
    const v = await client.message();
    expect(v.type).toBe('verified');
    next = await edge.round([next]);
    expect(next).toBeGreaterThanOrEqual(0);
  });
});

describe('the planner chooses speculation', () => {
  it('profile speculation measures every proposer; plan chooses the draft model on a slow link where it fits, and the edge runs with the plan\'s choice (same tokens)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'splitllm-spec-'));
    const acc = join(dir, 'acc.json');
    copyFileSync(join(DEFAULT_MODEL_DIR, 'accuracy-profile.json'), acc);
    const text = join(dir, 'calib.txt');
    writeFileSync(text, `${REPEAT}\n\nJULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n\n`.repeat(3));
    const m = cli(['profile', 'speculation', '--text', text, '--profile', acc, '--speculate', `ngram,early-exit,model:${DEFAULT_DRAFT_DIR}`, '--json']);
    expect(m.code, m.stderr).toBe(0);
    const entries = JSON.parse(m.stdout) as SpeculationProfile[];
    // one per proposer, early exit once per inner split; the draft's path is relative to the model
    expect(entries.map((e) => `${e.proposer}${e.split ?? ''}`)).toEqual(['ngram', 'early-exit1', 'early-exit2', 'early-exit3', 'early-exit4', 'early-exit5', 'model:../draft']);
    for (const e of entries) {
      expect(e.acceptance).toBeGreaterThanOrEqual(0);
      expect(e.acceptance).toBeLessThanOrEqual(1);
    }
    const draft = entries[6]!;
    expect(draft.draftMsPerToken).toBeGreaterThan(0);
    const d = (await openModel(DEFAULT_DRAFT_DIR)).config;
    // the draft's float32 weights and its KV for 256 positions with the cache's growth room (320: a quarter
    // more, at least 64), once (and its small tables: rotary angles; a step's buffers)
    const weights = 4 * (d.vocabSize * d.dim + d.nLayers * (2 * d.dim + d.dim * d.nHeads * d.headDim * 2 + 2 * d.dim * d.nKvHeads * d.headDim + 3 * d.dim * d.ffnDim) + d.dim);
    expect(d.maxSeq).toBe(256);
    const counted = weights + 320 * d.nLayers * 2 * d.nKvHeads * d.headDim * 4;
    expect(draft.edgeBytes).toBeGreaterThanOrEqual(counted);
    expect(draft.edgeBytes).toBeLessThan(counted * 1.02);
    // the profile now holds them, and the accuracy profile reader takes them
    expect(accuracyProfile(JSON.parse(readFileSync(acc, 'utf8')), acc, (await defaultModel()).hash).speculation).toHaveLength(7);
    // on a 256 kbit/s, 30 ms link with room for the draft: the plan drafts with it
    const out = join(dir, 'plan.json');
    const base = ['plan', '--accuracy-profile', acc, '--bandwidth', '256kbit', '--rtt', '30ms', '--latency', '200ms', '--max-ppl-increase', '3%'];
    const p = cli([...base, '--edge-memory', '8MB', '--json', '--out', out]);
    expect(p.code, p.stderr).toBe(0);
    const plan = validatePlan((JSON.parse(p.stdout) as { plan: unknown }).plan);
    expect(plan.speculate).toBe('model:../draft');
    expect(plan.draftTokens).toBeGreaterThanOrEqual(1);
    expect(plan.predicted!['latency']).toBeLessThan(plan.predicted!['plainLatency']!);
    // too little memory for the draft (it alone holds more than 2 MB): not the draft; --speculate off: plain steps
    expect(draft.edgeBytes).toBeGreaterThan(2e6);
    const tight = validatePlan((JSON.parse(cli([...base, '--edge-memory', '2MB', '--json']).stdout) as { plan: unknown }).plan);
    expect(tight.speculate).not.toBe('model:../draft');
    expect(validatePlan((JSON.parse(cli([...base, '--edge-memory', '8MB', '--speculate', 'off', '--json']).stdout) as { plan: unknown }).plan).speculate).toBeUndefined();
    // the edge takes the plan's proposer (its path from the model's directory) unless told otherwise (the CLI runs
    // asynchronously: the cloud is in this process)
    const pkg = await defaultModel();
    const server = await startCloud(pkg, { calibration: calibrationContexts({}, pkg) });
    try {
      const cloud = server.url.replace(/^http/, 'ws');
      const e = await cliAsync(['edge', '--cloud', cloud, '--plan', out, '--prompt', 'ROMEO:', '--max-tokens', '24', '--temperature', '0', '--json']);
      expect(e.code, e.stderr).toBe(0);
      const spec = JSON.parse(e.stdout) as { tokens: number[]; stats: { speculation?: { proposer: string; draftSteps: number } } };
      expect(spec.stats.speculation?.proposer).toBe(`model:${join(DEFAULT_MODEL_DIR, '../draft')}`);
      const off = JSON.parse((await cliAsync(['edge', '--cloud', cloud, '--plan', out, '--prompt', 'ROMEO:', '--max-tokens', '24', '--temperature', '0', '--speculate', 'off', '--json'])).stdout) as { tokens: number[]; stats: { speculation?: unknown } };
      expect(off.stats.speculation).toBeUndefined();
      expect(spec.tokens).toEqual(off.tokens);
    } finally {
      await server.close();
    }
  }, 180_000);
});

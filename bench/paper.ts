/**
 * bench/paper: the comparison of "Memory- and Latency-Constrained Inference of Large Language Models via
 * Adaptive Split Computing" (OPSC, TS + TAB-Q, the joint plan), measured end to end on this machine for
 * the default model and stories260K (real weights, so accuracy is real), on a grid of edge memory budgets
 * (fractions of the model's float16 weight bytes) × links (the project's link emulator) under one ppl budget:
 *
 * - quantization only, on the device: the whole model on the edge, every layer under one weight strategy
 *   (SmoothQuant W8A8; AWQ and RTN at 4 / 3 / 2 bits) at the best precision that fits the budget, the
 *   embedding and the LM head at 8 bits (4 where 8 does not fit); no link;
 * - naive split: the planner's split point search with one precision for both segments and fp16 hidden
 *   states on the wire (how Petals and exo send activations);
 * - OPSC only: the planner with mixed precision, fp16 hidden states;
 * - splitllm: the planner's joint choice (split, front / back / head / embedding bits, every codec the
 *   accuracy profile measured, sequence length), its prediction printed beside the measurement.
 *
 * Memory: every method by the planner's own rule (quantization/weights/memory.ts `heldBytes`: the weights
 * and KV the device holds, plus a decode step's buffers; the runtime's own memory not counted, as in `splitllm demo`), for
 * the prompt and the reply (128 positions by default). A plan's accuracy is chosen from the model's
 * accuracy profile (calibration text); every ppl printed is measured on the evaluation text
 * (tinystories_eval.txt, the default model's held-out tail of tinyshakespeare). A row is feasible when it
 * fits the memory budget and its measured ppl change is within the ppl budget. Every row with a
 * configuration runs — a quantization-only row whose model does not fit runs its strategy's most accurate
 * setting, marked infeasible, for reference — a 64-token prompt from the evaluation text, then 64 greedy tokens (no stop token), timed; TTFT counts from
 * the session's hello (the connection open) or from the local call; ms per token is the mean gap between
 * tokens after the first; total = TTFT + that gap × (tokens − 1). Edge, cloud and local sessions each
 * have one onnxruntime intra-op thread (SPLITLLM_THREADS=1), edge and cloud in this process as in
 * `splitllm demo`. The speed-up is the fastest feasible baseline's total time ÷ splitllm's.
 *
 *   node dist/bench/paper.js [--models default,stories260K] [--budgets 25,40,60] [--links 256kbit/30ms,1mbit/40ms,10mbit/20ms]
 *     [--max-ppl-increase 3] [--prompt-tokens 64] [--tokens 64] [--runs 3] [--eval-windows N] [--json]
 *
 * --json prints {"settings":[{"model","edgeMemoryBytes","budgetPercent","bandwidth" (bits/s),"rttMs","rows":[{"method",
 * "feasible","why","config","memoryBytes","pplIncrease","ttftMs","msPerToken","totalMs","totalRange","bytesUp",
 * "predicted","step"}],"speedupVsBestBaseline","bestBaseline","breakEven"}],…}; a row's figures are those of its
 * median run (by total time), totalRange the fastest and slowest.
 */
process.env['SPLITLLM_THREADS'] = '1'; // before any onnxruntime session: one intra-op thread each, known
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { calibrationContexts } from '../cli/calibration-io.js';
import { planEdgeSession, readJsonFile } from '../cli/common.js';
import { configPerplexity } from '../cli/evaluate.js';
import { emulateLink } from '../cli/link-emulator.js';
import { parseBandwidth, parseDuration } from '../cli/units.js';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { captureLinearInputs, type CapturedInputs } from '../models/eval/capture.js';
import { pplWindows } from '../models/eval/ppl.js';
import { parameterCount } from '../models/manifest.js';
import { usableCores } from '../models/runtime/threads.js';
import { openModel, type ModelPackage } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { emittersFor, headEmitterFor, weightStrategy } from '../models/weights/registry.js';
import { localMemory } from '../planner/cost.js';
import { measureCompute } from '../planner/measure.js';
import { buildProblem, formatBudget } from '../planner/problem.js';
import { accuracyProfile, profileBits } from '../planner/profiles.js';
import { exhaustive } from '../planner/strategies/index.js';
import type { AccuracyProfile, ComputeProfile, RankedPlan } from '../planner/types.js';
import type { CalibrationContexts } from '../quantization/activations/calibration.js';
import type { Plan } from '../shared/plan.js';
import { BIN, cleanEnv, FIXTURES, fmt, minMedMax } from './common.js';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'default,stories260K' },
    budgets: { type: 'string', default: '25,40,60' },
    links: { type: 'string', default: '256kbit/30ms,1mbit/40ms,10mbit/20ms' },
    'max-ppl-increase': { type: 'string', default: '3' },
    'prompt-tokens': { type: 'string', default: '64' },
    tokens: { type: 'string', default: '64' },
    runs: { type: 'string', default: '3' },
    'eval-windows': { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write(
    'usage: node dist/bench/paper.js [--models default,stories260K] [--budgets 25,40,60] [--links 256kbit/30ms,1mbit/40ms,10mbit/20ms]\n' +
      '         [--max-ppl-increase 3] [--prompt-tokens 64] [--tokens 64] [--runs 3] [--eval-windows N] [--json]\n' +
      '  budgets: edge memory in % of the model\'s float16 weight bytes; --max-ppl-increase in %; --runs: timed runs per row (median kept)\n' +
      'example: node dist/bench/paper.js --models stories260K --budgets 40 --links 1mbit/40ms\n',
  );
  process.exit(0);
}

const log = (s: string) => process.stderr.write(s + '\n');
const positive = (name: string, s: string): number => {
  const n = Number(s);
  if (!Number.isFinite(n) || n <= 0) {
    log(`bench/paper: --${name} ${s} is not a positive number`);
    process.exit(2);
  }
  return n;
};
const budgetsPct = values.budgets.split(',').map((s) => positive('budgets', s));
const links = values.links.split(',').map((s) => {
  const [bw, rtt] = s.split('/');
  if (!bw || !rtt) {
    log(`bench/paper: --links ${s}: give BANDWIDTH/RTT, e.g. 256kbit/30ms`);
    process.exit(2);
  }
  return { label: s, bytesPerSec: parseBandwidth(bw), rttMs: parseDuration(rtt) };
});
const MODELS = ['default', 'stories260K'];
const modelNames = values.models.split(',');
for (const n of modelNames) {
  if (!MODELS.includes(n)) {
    log(`bench/paper: --models ${n} is not one of ${MODELS.join(', ')}`);
    process.exit(2);
  }
}
const maxPpl = positive('max-ppl-increase', values['max-ppl-increase']) / 100;
const promptTokens = Math.round(positive('prompt-tokens', values['prompt-tokens']));
const genTokens = Math.round(positive('tokens', values.tokens));
const runs = Math.round(positive('runs', values.runs));
const evalLimit = values['eval-windows'] === undefined ? undefined : Math.round(positive('eval-windows', values['eval-windows']));
const positions = promptTokens + genTokens;
/** perplexity runs are not timed: they take every usable core */
const PPL_THREADS = usableCores();
const load0 = loadavg();
const started = performance.now();

interface Row {
  method: string;
  feasible: boolean;
  /** why not, when infeasible */
  why?: string;
  /** the configuration that ran (or would have) */
  config?: string;
  memoryBytes?: number;
  pplIncrease?: number;
  ttftMs?: number;
  msPerToken?: number;
  totalMs?: number;
  bytesUp?: number;
  /** min / max over the runs of the total */
  totalRange?: [number, number];
  predicted?: { msPerToken: number; ttftMs: number; pplIncrease: number; memoryBytes: number };
  /** a split run's decode step, where the time went (ms per step: the front on the edge, link and framing, the cloud) */
  step?: { edgeMs: number; networkMs: number; cloudMs: number };
}
interface Setting {
  model: string;
  edgeMemoryBytes: number;
  budgetPercent: number;
  bandwidth: number;
  rttMs: number;
  rows: Row[];
  speedupVsBestBaseline: number | null;
  bestBaseline: string | null;
  /**
   * How many times slower than this machine an edge would have to be (the cloud as it is) for splitllm's
   * decode step to take as long as the fastest whole-model quantized run within the ppl budget, memory
   * aside: (network + cloud ms) ÷ (local ms per token − splitllm's edge ms per step), `edgeSlowdown` null
   * when splitllm's edge step alone takes longer than the whole local model (no slowdown makes it win);
   * absent where no local run is within the ppl budget or splitllm did not run
   */
  breakEven?: { edgeSlowdown: number | null; localMsPerToken: number; edgeMs: number; networkMs: number; cloudMs: number };
}
interface Timed {
  ttftMs: number;
  msPerToken: number;
  totalMs: number;
  bytesUp: number;
  totalRange: [number, number];
  step?: Row['step'];
}

/** TTFT, the mean gap after the first token, and the total they make, from token timestamps since the start. */
function timing(stamps: number[]): { ttftMs: number; msPerToken: number; totalMs: number } {
  const ttftMs = stamps[0]!;
  const msPerToken = stamps.length > 1 ? (stamps[stamps.length - 1]! - ttftMs) / (stamps.length - 1) : 0;
  return { ttftMs, msPerToken, totalMs: ttftMs + msPerToken * (stamps.length - 1) };
}

/** The median run (by total) of `runs`, with the range of totals. */
async function repeat(one: () => Promise<Omit<Timed, 'totalRange'>>): Promise<Timed> {
  const all: Omit<Timed, 'totalRange'>[] = [];
  for (let i = 0; i < runs; i++) all.push(await one());
  const m = minMedMax(all.map((r) => r.totalMs));
  const median = all.find((r) => r.totalMs === m.median)!;
  return { ...median, totalRange: [m.min, m.max] };
}

interface ModelSetup {
  name: string;
  pkg: ModelPackage;
  evalWindows: number[][];
  calibWindows: number[][];
  prompt: number[];
  accuracy: AccuracyProfile;
  contexts: CalibrationContexts;
  compute: ComputeProfile;
  fp16Bytes: number;
  basePpl: number;
}

/** The default model (its shipped profile and calibration, held-out tail as evaluation) or stories260K (profiled here on calibration text). */
async function setUp(name: string): Promise<ModelSetup> {
  const corpus = resolve(FIXTURES, 'corpus');
  let pkg: ModelPackage;
  let evalText: string;
  let calibText: string;
  let accuracy: AccuracyProfile;
  let contexts: CalibrationContexts;
  if (name === 'default') {
    pkg = await openModel(DEFAULT_MODEL_DIR);
    const text = readFileSync(join(corpus, 'tinyshakespeare.txt'), 'utf8');
    const trainChars = pkg.manifest.source?.['trainChars'];
    if (typeof trainChars !== 'number') throw new Error('models/default/manifest.json has no source.trainChars: the held-out part is unknown');
    calibText = text.slice(0, trainChars);
    evalText = text.slice(trainChars);
    const accPath = join(DEFAULT_MODEL_DIR, 'accuracy-profile.json');
    accuracy = accuracyProfile(readJsonFile(accPath, 'accuracy profile'), accPath, pkg.hash);
    contexts = calibrationContexts({}, pkg);
  } else if (name === 'stories260K') {
    const bin = resolve(FIXTURES, 'stories260K', 'stories260K.bin');
    pkg = await openModel(bin);
    const calibPath = join(corpus, 'tinystories_calib.txt');
    calibText = readFileSync(calibPath, 'utf8');
    evalText = readFileSync(join(corpus, 'tinystories_eval.txt'), 'utf8');
    // its codec calibration and accuracy profile, made here as a user would, on calibration text only
    const dir = mkdtempSync(join(tmpdir(), 'splitllm-paper-'));
    const cal = join(dir, 'calibration.json');
    const acc = join(dir, 'accuracy-profile.json');
    let t = performance.now();
    execFileSync(process.execPath, [BIN, 'calibrate', '--model', bin, '--text', calibPath, '--out', cal, '--windows', '200'], { env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    log(`  stories260K: splitllm calibrate (200 windows of tinystories_calib.txt) in ${fmt((performance.now() - t) / 1000)} s`);
    t = performance.now();
    execFileSync(process.execPath, [BIN, 'profile', 'accuracy', '--model', bin, '--text', calibPath, '--calibration', cal, '--out', acc, '--windows', '60'], { env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    log(`  stories260K: splitllm profile accuracy (60 windows) in ${fmt((performance.now() - t) / 1000)} s`);
    accuracy = accuracyProfile(readJsonFile(acc, 'accuracy profile'), acc, pkg.hash);
    contexts = calibrationContexts({ calibration: cal }, pkg);
  } else {
    throw new Error(`--models: ${name} is not one of default, stories260K`);
  }
  const tok = pkg.tokenizer();
  let evalWindows = pplWindows(tok, evalText);
  if (evalLimit !== undefined) evalWindows = evalWindows.slice(0, evalLimit);
  const prompt = pplWindows(tok, evalText).find((w) => w.length >= promptTokens)?.slice(0, promptTokens);
  if (!prompt) throw new Error(`${name}: no paragraph of the evaluation text has ${promptTokens} tokens`);
  const t = performance.now();
  const compute = await measureCompute(pkg, profileBits(accuracy), { steps: 30 });
  compute.baselineBytes = 0; // the budget is the model's share of the device, as in `splitllm demo`
  log(`  ${name}: splitllm's device profile (${profileBits(accuracy).join(', ')}-bit layers, one thread) in ${fmt((performance.now() - t) / 1000)} s`);
  const basePpl = (await configPerplexity(pkg, evalWindows, { threads: PPL_THREADS })).ppl;
  return { name, pkg, evalWindows, calibWindows: pplWindows(tok, calibText), prompt, accuracy, contexts, compute, fp16Bytes: 2 * parameterCount(pkg.config), basePpl };
}

const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
const settings: Setting[] = [];
const results: string[] = [];

for (const name of modelNames) {
  log(`bench/paper: ${name}`);
  const m = await setUp(name);
  const { pkg } = m;
  const c = pkg.config;
  log(`  float32 ppl on the evaluation text ${m.basePpl.toFixed(4)} (${m.evalWindows.length} windows); float16 weights ${mb(m.fp16Bytes)}`);
  const ppl = new Map<string, number>();
  /** measured ppl change of a configuration on the evaluation text, once per configuration */
  const pplOf = async (key: string, score: () => Promise<number>): Promise<number> => {
    let v = ppl.get(key);
    if (v === undefined) {
      const t = performance.now();
      v = (await score()) / m.basePpl - 1;
      ppl.set(key, v);
      log(`  ppl ${key}: ${v >= 0 ? '+' : ''}${(100 * v).toFixed(2)}% (${fmt((performance.now() - t) / 1000)} s)`);
    }
    return v;
  };
  let captured: CapturedInputs | undefined;
  const capturedInputs = async () => (captured ??= await captureLinearInputs(pkg, m.calibWindows.slice(0, 64), 512));

  // ---- quantization only: the whole model on the device, per strategy at the best precision that fits
  const local = new Map<string, Row & { pplIncrease: number }>();
  const localRow = async (strategyName: string, budget: number): Promise<Row> => {
    const s = weightStrategy(strategyName);
    const method = `quant-only ${strategyName}`;
    const bitsList = strategyName === 'smoothquant' ? [8] : [4, 3, 2];
    // settings from the most accurate down: the first that fits is chosen
    const tried = bitsList.flatMap((bits) => [8, 4].map((eb) => ({ bits, eb, memory: localMemory(c, { bits, maxSeq: positions, baselineBytes: 0, quantized: s.linearBytes, embedBits: eb, headBits: eb }) })));
    const chosen = tried.find((t) => t.memory <= budget);
    const smallest = Math.min(...tried.map((t) => t.memory));
    // where nothing fits, the strategy's most accurate setting still runs, marked: the speed it would have
    const fits = chosen !== undefined;
    const at = chosen ?? tried[0]!;
    const key = `${strategyName} ${at.bits}-bit, emb/head ${at.eb}-bit`;
    const cached = local.get(key);
    const row = cached ? { ...cached } : await timeLocal(method, strategyName, at, key);
    row.feasible = fits && row.pplIncrease <= maxPpl;
    delete row.why;
    if (!fits) row.why = `needs ${mb(smallest)} at ${bitsList[bitsList.length - 1]} bits (budget ${mb(budget)}); ${bitsList[0]}-bit timed for reference, needs ${mb(at.memory)}`;
    else if (!row.feasible) row.why = `ppl +${(100 * row.pplIncrease).toFixed(2)}% measured, over the ${(100 * maxPpl).toFixed(0)}% budget`;
    return row;
  };
  const timeLocal = async (method: string, strategyName: string, at: { bits: number; eb: number; memory: number }, key: string): Promise<Row & { pplIncrease: number }> => {
    const s = weightStrategy(strategyName);
    const plan = { split: 0, frontBits: at.bits, backBits: at.bits, blockSize: 32, strategy: strategyName, headBits: at.eb };
    const linearFor = await emittersFor(pkg, plan, s.needsCalibration ? await capturedInputs() : undefined);
    const rt = { linearFor, headLinear: headEmitterFor(plan), embedBits: at.eb };
    const inc = await pplOf(key, async () => (await configPerplexity(pkg, m.evalWindows, { ...rt, threads: PPL_THREADS })).ppl);
    const row = { method, feasible: false, config: key, memoryBytes: at.memory, pplIncrease: inc };
    // timed whatever the budgets say: what the speed would have been
    const p = await Pipeline.create(pkg, [], rt);
    await generate(p, m.prompt, { maxTokens: 2, temperature: 0, stopIds: [] }); // warm
    const timed = await repeat(async () => {
      const stamps: number[] = [];
      const t0 = performance.now();
      await generate(p, m.prompt, { maxTokens: genTokens, temperature: 0, stopIds: [], onToken: () => stamps.push(performance.now() - t0) });
      return { ...timing(stamps), bytesUp: 0 };
    });
    await p.release();
    const done = { ...row, ...timed };
    local.set(key, done);
    return done;
  };

  // ---- the split methods: one cloud for the model; a link per setting
  const cloud = await startCloud(pkg, { port: 0, host: '127.0.0.1', calibration: m.contexts, threads: 1 });
  try {
    for (const pct of budgetsPct) {
      const budget = (pct / 100) * m.fp16Bytes;
      for (const l of links) {
        const link = await emulateLink({ host: '127.0.0.1', port: Number(new URL(cloud.url).port) }, { rttMs: l.rttMs, bytesPerSec: l.bytesPerSec });
        const url = `ws://127.0.0.1:${link.port}/v1/session`;
        log(`  setting: edge memory ${mb(budget)} (${pct}% of float16), ${l.label}`);
        const rows: Row[] = [];
        try {
          for (const s of ['smoothquant', 'awq', 'rtn']) rows.push({ ...(await localRow(s, budget)) });
          const methods: { method: string; opts: { codecs?: string[]; sameBits?: boolean } }[] = [
            { method: 'naive split', opts: { codecs: ['fp16'], sameBits: true } },
            { method: 'OPSC only', opts: { codecs: ['fp16'] } },
            { method: 'splitllm', opts: {} },
          ];
          for (const { method, opts } of methods) {
            const problem = buildProblem(
              { ...pkg.memoryShape, hash: pkg.hash },
              { edge: m.compute, cloud: m.compute, link: l, accuracy: m.accuracy },
              { edgeMemory: budget, latencyMs: Infinity, maxPplIncrease: maxPpl, minSeq: positions, promptTokens },
              { speculate: false, ...opts },
            );
            const r = exhaustive.solve(problem, 1);
            const best: RankedPlan | undefined = r.plans[0];
            if (!best) {
              const inf = r.infeasible!;
              rows.push({ method, feasible: false, why: `no plan fits: the ${inf.binding} budget binds (needs ${formatBudget(inf.binding, inf.relaxation.to, 2)})` });
              continue;
            }
            rows.push(await splitRow(m, method, best, url));
          }
        } finally {
          await link.close();
        }
        const split = rows.find((r) => r.method === 'splitllm');
        const baselines = rows.filter((r) => r.method !== 'splitllm' && r.feasible && r.totalMs !== undefined);
        baselines.sort((a, b) => (a.totalMs ?? Infinity) - (b.totalMs ?? Infinity));
        const fastest = baselines[0];
        const speedup = split?.feasible && split.totalMs !== undefined && fastest ? fastest.totalMs! / split.totalMs : null;
        const localOk = rows.filter((r) => r.method.startsWith('quant-only') && r.msPerToken !== undefined && (r.pplIncrease ?? Infinity) <= maxPpl);
        localOk.sort((a, b) => (a.msPerToken ?? Infinity) - (b.msPerToken ?? Infinity));
        const fastestLocal = localOk[0]?.msPerToken;
        const step = split?.step;
        const breakEven =
          step && fastestLocal !== undefined
            ? { edgeSlowdown: fastestLocal > step.edgeMs ? (step.networkMs + step.cloudMs) / (fastestLocal - step.edgeMs) : null, localMsPerToken: fastestLocal, ...step }
            : undefined;
        settings.push({ model: name, edgeMemoryBytes: budget, budgetPercent: pct, bandwidth: 8 * l.bytesPerSec, rttMs: l.rttMs, rows, speedupVsBestBaseline: speedup, bestBaseline: fastest?.method ?? null, ...(breakEven ? { breakEven } : {}) });
        if (!values.json) results.push(table(settings[settings.length - 1]!, m));
      }
    }
  } finally {
    await cloud.close();
  }

  /** A plan run end to end over the link: ppl measured on the evaluation text, timed runs after one untimed token. */
  async function splitRow(ms: ModelSetup, method: string, best: RankedPlan, url: string): Promise<Row> {
    const plan: Plan = best.plan;
    const session = await planEdgeSession(ms.pkg, plan, ms.contexts);
    const config = describe(plan, ms.pkg.config.nLayers);
    const key = `split ${plan.split} ${plan.frontBits}/${plan.backBits}-bit head ${plan.headBits ?? 32} embedding ${plan.embedBits ?? 32} ${plan.codec}`;
    const inc = await pplOf(key, async () => (await configPerplexity(ms.pkg, ms.evalWindows, { split: plan.split, linearFor: session.linearFor, headLinear: headEmitterFor({ headBits: plan.headBits, blockSize: plan.blockSize ?? 32 }), embedBits: plan.embedBits, codec: plan.codec, contexts: ms.contexts, threads: PPL_THREADS })).ppl);
    const predicted = { msPerToken: best.predicted.latency, ttftMs: best.predicted.firstTokenMs, pplIncrease: best.predicted.accuracy, memoryBytes: best.predicted.memory };
    const row: Row = { method, feasible: inc <= maxPpl, config, memoryBytes: best.predicted.memory, pplIncrease: inc, predicted };
    if (!row.feasible) row.why = `ppl +${(100 * inc).toFixed(2)}% measured, over the ${(100 * maxPpl).toFixed(0)}% budget (${(100 * best.predicted.accuracy).toFixed(2)}% predicted)`;
    const common = { ...session, url, prompt: '', promptIds: ms.prompt, sampling: { temperature: 0 }, stopIds: [], threads: 1 };
    await runEdge(ms.pkg, { ...common, maxTokens: 1 }); // the cloud builds this back segment on its first session
    const timed = await repeat(async () => {
      const stamps: number[] = [];
      let t0 = 0;
      const r = await runEdge(ms.pkg, {
        ...common,
        maxTokens: genTokens,
        onToken: () => stamps.push(performance.now()),
      });
      // runEdge counts from the hello; the stamps give the gaps between tokens
      t0 = stamps[0]! - r.stats.prefill.firstTokenMs;
      const d = r.stats.decode;
      return { ...timing(stamps.map((s) => s - t0)), bytesUp: r.stats.bytesUp, step: { edgeMs: d.edgeMs, networkMs: d.networkMs, cloudMs: d.cloudMs } };
    });
    return Object.assign(row, timed);
  }
}

function describe(plan: Plan, L: number): string {
  const extra = [...(plan.headBits ? [`head ${plan.headBits}`] : []), ...(plan.embedBits ? [`emb ${plan.embedBits}`] : [])];
  return `split ${plan.split}/${L}, ${plan.frontBits}/${plan.backBits}-bit${extra.length ? ` (${extra.join(', ')})` : ''}, ${plan.codec}`;
}

function table(s: Setting, m: ModelSetup): string {
  const head = `${s.model} · edge memory ${mb(s.edgeMemoryBytes)} (${s.budgetPercent}% of ${mb(m.fp16Bytes)} float16) · ${s.bandwidth >= 1e6 ? `${s.bandwidth / 1e6} Mbit/s` : `${s.bandwidth / 1e3} kbit/s`}, ${s.rttMs} ms RTT · ppl budget +${(100 * maxPpl).toFixed(0)}%`;
  const lines = [head, `  ${'method'.padEnd(24)} ${'configuration'.padEnd(46)} ${'ppl Δ'.padStart(7)} ${'TTFT ms'.padStart(8)} ${'ms/tok'.padStart(7)} ${'total ms'.padStart(9)} ${'bytes up'.padStart(9)}  notes`];
  for (const r of s.rows) {
    const num = (v: number | undefined, d = 1, w = 7) => (v === undefined ? '-' : v.toFixed(d)).padStart(w);
    const notes = [r.feasible ? 'feasible' : `infeasible: ${r.why}`, ...(r.predicted ? [`predicted ${r.predicted.msPerToken.toFixed(1)} ms/tok, TTFT ${r.predicted.ttftMs.toFixed(0)} ms, ppl +${(100 * r.predicted.pplIncrease).toFixed(2)}%`] : [])];
    const pplText = r.pplIncrease === undefined ? '-' : `${r.pplIncrease >= 0 ? '+' : ''}${(100 * r.pplIncrease).toFixed(2)}%`;
    lines.push(`  ${r.method.padEnd(24)} ${(r.config ?? '-').padEnd(46)} ${pplText.padStart(7)} ${num(r.ttftMs, 1, 8)} ${num(r.msPerToken, 2)} ${num(r.totalMs, 0, 9)} ${num(r.bytesUp, 0, 9)}  ${notes.join('; ')}`);
  }
  const b = s.breakEven;
  if (b) {
    const parts = `splitllm's step: edge ${b.edgeMs.toFixed(2)} + link ${b.networkMs.toFixed(1)} + cloud ${b.cloudMs.toFixed(2)} ms; the fastest on-device run within the ppl budget (memory aside): ${b.localMsPerToken.toFixed(2)} ms per token`;
    lines.push(
      b.edgeSlowdown === null
        ? `  break-even: never — ${parts}, less than splitllm's edge part alone`
        : `  break-even: an edge ${b.edgeSlowdown.toFixed(0)}× slower than this machine (cloud unchanged) — ${parts}`,
    );
  }
  const ours = s.rows.find((r) => r.method === 'splitllm');
  const none = !s.rows.some((r) => r.feasible) ? 'no method is feasible in this setting' : !ours?.feasible ? 'splitllm is infeasible' : 'no baseline is feasible';
  lines.push(s.speedupVsBestBaseline === null ? `  speed-up: none (${none})` : `  splitllm speed-up over the fastest feasible baseline (${s.bestBaseline}): ${s.speedupVsBestBaseline.toFixed(2)}× in total time`);
  return lines.join('\n');
}

/** One line per setting: the fastest feasible baseline against splitllm (total time, TTFT, bytes up). */
function summary(all: Setting[]): string {
  const lines = [
    `summary: a ${promptTokens}-token prompt and ${genTokens} tokens; ratios are splitllm ÷ the fastest feasible baseline (speed-up: its inverse in total time)`,
    `  ${'model'.padEnd(12)} ${'budget'.padEnd(16)} ${'link'.padEnd(14)} ${'fastest feasible baseline'.padEnd(28)} ${'splitllm'.padStart(9)} ${'speed-up'.padStart(8)} ${'TTFT'.padStart(6)} ${'bytes up'.padStart(8)}  splitllm's plan`,
  ];
  for (const s of all) {
    const link = `${s.bandwidth >= 1e6 ? `${s.bandwidth / 1e6}mbit` : `${s.bandwidth / 1e3}kbit`}/${s.rttMs}ms`;
    const ours = s.rows.find((r) => r.method === 'splitllm');
    const base = s.rows.find((r) => r.method === s.bestBaseline);
    const cell = (r: Row | undefined) => (r?.feasible && r.totalMs !== undefined ? `${r.method} ${r.totalMs.toFixed(0)} ms` : s.rows.some((x) => x.feasible) ? 'none feasible' : 'no method feasible');
    const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}×` : '-');
    const budget = `${(s.edgeMemoryBytes / 1e6).toFixed(2)} MB (${s.budgetPercent}%)`;
    lines.push(
      `  ${s.model.padEnd(12)} ${budget.padEnd(16)} ${link.padEnd(14)} ${cell(base).padEnd(28)} ${(ours?.feasible && ours.totalMs !== undefined ? `${ours.totalMs.toFixed(0)} ms` : 'infeasible').padStart(9)} ${(s.speedupVsBestBaseline === null ? '-' : `${s.speedupVsBestBaseline.toFixed(2)}×`).padStart(8)} ${(base && ours?.feasible ? ratio(ours.ttftMs, base.ttftMs) : '-').padStart(6)} ${(base && ours?.feasible ? ratio(ours.bytesUp, base.bytesUp) : '-').padStart(8)}  ${[ours?.config, ours?.feasible ? undefined : ours?.why].filter((x) => x !== undefined).join(' — ')}`,
    );
  }
  return lines.join('\n');
}

const load1 = loadavg();
const minutes = (performance.now() - started) / 60000;
if (values.json) {
  process.stdout.write(JSON.stringify({ settings, maxPplIncrease: maxPpl, promptTokens, tokens: genTokens, runs, minutes, load: [load0[0], load1[0]] }) + '\n');
} else {
  process.stdout.write(results.join('\n\n') + '\n\n' + summary(settings) + '\n');
  process.stdout.write(`\n${settings.length} settings in ${minutes.toFixed(1)} min; load ${load0[0]!.toFixed(2)} → ${load1[0]!.toFixed(2)}; one onnxruntime thread per session\n`);
}
process.exit(0);

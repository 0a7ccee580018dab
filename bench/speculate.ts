/**
 * bench/speculate: speculative decoding across the split over the project's link emulator (256 kbit/s,
 * 30 ms RTT by default), default model, split 3, the split's calibrated ts-tabq (or --codec), greedy, 200 tokens, in the same run:
 * tokens/s with `--speculate ngram`, `early-exit` and `model:models/draft` ÷ without, on a prompt the model continues verbatim in part (a passage
 * of the play given twice) and on one without repetition; tokens per round trip and acceptance.
 * Decode tokens/s counts from the first token (the prompt's transfer is the same with or without).
 * min/median/max over the runs; the machine's load beside them.
 *
 *   node dist/bench/speculate.js [--runs 3] [--tokens 200] [--rtt 30] [--bandwidth 32000] [--split 3] [--draft 4] [--codec ts-tabq]
 *     [--proposers ngram,early-exit,model:models/draft] [--json]
 */
import { loadavg } from 'node:os';
import { relative } from 'node:path';
import { parseArgs } from 'node:util';
import { calibrationContexts } from '../cli/calibration-io.js';
import { emulateLink } from '../cli/link-emulator.js';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { proposerFor } from '../edge/draft/registry.js';
import { DEFAULT_DRAFT_DIR, DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { openModel } from '../models/package.js';
import { fmt, minMedMax } from './common.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    tokens: { type: 'string', default: '200' },
    rtt: { type: 'string', default: '30' },
    bandwidth: { type: 'string', default: '32000' },
    split: { type: 'string', default: '3' },
    draft: { type: 'string', default: '4' },
    codec: { type: 'string', default: 'ts-tabq' },
    proposers: { type: 'string', default: `ngram,early-exit,model:${relative(process.cwd(), DEFAULT_DRAFT_DIR) || '.'}` },
    'repetition-prompt': { type: 'string' },
    'plain-prompt': { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/speculate.js [--runs N] [--tokens N] [--rtt MS] [--bandwidth BYTES_PER_S] [--split K] [--draft K] [--codec SPEC] [--proposers LIST] [--json]\n');
  process.exit(0);
}
const runs = Number(values.runs);
const maxTokens = Number(values.tokens);
const split = Number(values.split);
const maxDraft = Number(values.draft);
const pkg = await openModel(DEFAULT_MODEL_DIR);
const codecEnv = calibrationContexts({}, pkg);
const cloud = await startCloud(pkg, { calibration: codecEnv });
const codec = values.codec!;
const link = await emulateLink({ host: '127.0.0.1', port: Number(new URL(cloud.url).port) }, { rttMs: Number(values.rtt), bytesPerSec: Number(values.bandwidth) });
const url = `ws://127.0.0.1:${link.port}/v1/session`;
// the default model holds 256 positions: prompts of ≤ 56 tokens leave room for 200
const prompts = {
  // a passage of the play given twice, the second time cut short: the model goes on copying it
  repetition: values['repetition-prompt'] ?? 'ROMEO:\nO, she doth teach the torches to burn bright!\nROMEO:\nO, she doth',
  none: values['plain-prompt'] ?? 'ROMEO:\nBut soft, what light through yonder window breaks?\n',
};
const proposers = await Promise.all(values.proposers!.split(',').map(async (spec) => (await proposerFor(spec, { pkg }))!));

interface Row {
  prompt: string;
  proposer: string;
  baseTokensPerSec: { min: number; median: number; max: number };
  specTokensPerSec: { min: number; median: number; max: number };
  ratio: { min: number; median: number; max: number };
  tokensPerRound: number;
  acceptance: number;
  sameTokens: boolean;
}
const rows: Row[] = [];
for (const proposer of proposers) {
  for (const [name, prompt] of Object.entries(prompts)) {
    const base: number[] = [];
    const spec: number[] = [];
    const ratios: number[] = [];
    let perRound = 0;
    let acceptance = 0;
    let same = true;
    for (let r = 0; r < runs; r++) {
      const decodeRate = (s: { tokens: number; seconds: number; prefill: { firstTokenMs: number } }) => (s.tokens - 1) / (s.seconds - s.prefill.firstTokenMs / 1000);
      const a = await runEdge(pkg, { url, split, codec, codecEnv, prompt, maxTokens, stopIds: [] });
      const b = await runEdge(pkg, { url, split, codec, codecEnv, prompt, maxTokens, stopIds: [], speculate: { proposer, maxDraft } });
      same &&= a.tokens.join(',') === b.tokens.join(',');
      base.push(decodeRate(a.stats));
      spec.push(decodeRate(b.stats));
      ratios.push(spec[spec.length - 1]! / base[base.length - 1]!);
      perRound = b.stats.speculation!.tokensPerRound;
      acceptance = b.stats.speculation!.acceptance;
    }
    rows.push({ prompt: name, proposer: proposer.name, baseTokensPerSec: minMedMax(base), specTokensPerSec: minMedMax(spec), ratio: minMedMax(ratios), tokensPerRound: perRound, acceptance, sameTokens: same });
  }
}
for (const p of proposers) await p.release?.();
await link.close();
await cloud.close();
const load = loadavg()[0]!;
if (values.json) process.stdout.write(JSON.stringify({ rows, load, runs, maxTokens, split, maxDraft }) + '\n');
else {
  process.stdout.write(`speculative decoding (≤ ${maxDraft} drafts, adaptive length), ${maxTokens} tokens, split ${split}, codec ${codec}, ${values.bandwidth} B/s, ${values.rtt} ms RTT, ${runs} runs (load ${fmt(load, 2)})\n`);
  for (const r of rows) {
    const m = (x: { min: number; median: number; max: number }, d = 1) => `${fmt(x.min, d)} / ${fmt(x.median, d)} / ${fmt(x.max, d)}`;
    process.stdout.write(
      `  ${r.proposer.padEnd(18)} ${r.prompt.padEnd(10)} without ${m(r.baseTokensPerSec)} tokens/s, with ${m(r.specTokensPerSec)}: ratio ${m(r.ratio, 2)}; ${fmt(r.tokensPerRound, 2)} tokens per round trip, ${fmt(r.acceptance * 100, 0)}% of drafts accepted; same tokens: ${r.sameTokens}\n`,
    );
  }
}

import { cpus } from 'node:os';
import { readFileSync, writeFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { isPlainMap } from '../../shared/fields.js';
import { measureBaseline, measureCompute } from '../../planner/measure.js';
import { measureLink } from '../../edge/measure-link.js';
import { calibrationOption } from '../calibration-io.js';
import { accuracyOnText, ESTIMATE_WINDOWS, MIN_PREDICTED } from '../accuracy.js';
import { pplWindows } from '../../models/eval/ppl.js';
import { DEFAULT_PROFILE_CODECS } from '../../planner/measure-accuracy.js';
import { caOf, cloudOptions, modelOptions, modelPath, openModelOption, readJsonFile, sessionUrl, tokenOf } from '../common.js';
import { DraftModel } from '../../edge/draft/model.js';
import { measureSpeculation, type MeasuredDraftModel } from '../../planner/measure-speculation.js';
import { accuracyProfile } from '../../planner/profiles.js';
import { DEFAULT_BLOCK_SIZE } from '../../shared/precision.js';
import { commandGroup, defineCommand, items, opt } from '../options.js';

const machine = () => ({ cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version, date: new Date().toISOString() });

const bitsOption = (def: number[]) => opt.list({ item: items.int(2, 32), default: def, description: 'weight precisions to measure' });
/** The blocks a profile measures by default: the planner chooses among them (longer: faster MatMulNBits, larger ppl cost). */
const DEFAULT_PROFILE_BLOCKS = [32, 64, 128];
const blocksOption = opt.list({
  item: items.blockSize,
  default: DEFAULT_PROFILE_BLOCKS,
  description: `quantization blocks to measure the blockwise (below 16-bit) precisions at; 'splitllm plan' chooses among those the edge, cloud and accuracy profiles all have (${DEFAULT_BLOCK_SIZE} is always measured)`,
  valueName: 'N,N,…',
});

const deviceCommand = defineCommand({
  name: 'device',
  summary:
    "Measures this machine: per-layer decode and prefill latency at each weight precision, the embedding's and the LM head's, and the runtime's baseline memory (the resident size of a running edge process less the model memory the planner accounts for). Run it on the edge device (and on the cloud machine for --cloud-profile).",
  usage: 'splitllm profile device --model M --out F [--bits 2,3,4,8,16,32] [--block-sizes 32,64,128] [--steps 20] [--json]',
  examples: ['splitllm profile device --out edge.json', 'SPLITLLM_THREADS=1 taskset -c 0 splitllm profile device --bits 4,32 --block-sizes 32 --steps 10 --out edge.json'],
  options: {
    ...modelOptions,
    out: opt.string({ short: 'o', required: true, description: 'profile file to write', valueName: 'F' }),
    bits: bitsOption([2, 3, 4, 8, 16, 32]),
    'block-sizes': blocksOption,
    steps: opt.int({ min: 1, default: 20, description: 'timed decode steps per measurement' }),
    json: opt.flag({ description: 'print the profile as JSON' }),
  },
  async run(v) {
    const out = v.out;
    const pkg = await openModelOption(v);
    const bits = v.bits;
    const baselineBytes = await measureBaseline(pkg, bits); // first: RSS only grows once segments were loaded
    const data = await measureCompute(pkg, bits, { steps: v.steps, blockSizes: v['block-sizes'], onProgress: (m) => process.stderr.write(m + '\n') });
    data.baselineBytes = baselineBytes;
    const file = { format: 'splitllm-profile', kind: 'compute', data, machine: machine() };
    writeFileSync(out, JSON.stringify(file, null, 2) + '\n');
    if (v.json) process.stdout.write(JSON.stringify(file) + '\n');
    else process.stdout.write(`wrote ${out}: embedding ${data.embedMs.toFixed(3)} ms, head ${data.headMs.toFixed(3)} ms, baseline ${(baselineBytes / 1e6).toFixed(1)} MB\n`);
  },
});

const linkCommand = defineCommand({
  name: 'link',
  summary: 'Measures the link to a running cloud server: round trip (median of small probes) and throughput (a large probe each way).',
  usage: 'splitllm profile link --cloud ws://HOST:PORT --out F [--token SECRET] [--json]',
  examples: ['splitllm profile link --cloud ws://cloud.example:8080 --token "$SECRET" --out link.json', 'splitllm profile link --cloud ws://127.0.0.1:8080 --bytes 1MB --json --out link.json'],
  options: {
    ...cloudOptions,
    out: opt.string({ short: 'o', required: true, description: 'profile file to write', valueName: 'F' }),
    bytes: opt.bytes({ bare: 'b', default: 4 << 20, defaultText: '4MiB', description: 'size of the throughput probes (at most 8MiB)' }),
    json: opt.flag({ description: 'print the profile as JSON' }),
  },
  async run(v) {
    const url = sessionUrl(v.cloud);
    const out = v.out;
    if (v.bytes < 1024 || v.bytes > 8 << 20) throw new SplitLLMError('E_USAGE', `--bytes ${v.bytes} is outside 1KiB..8MiB`);
    const data = await measureLink(url, tokenOf(v), { bytes: v.bytes, ca: caOf(v) });
    const file = { format: 'splitllm-profile', kind: 'link', data, machine: machine() };
    writeFileSync(out, JSON.stringify(file, null, 2) + '\n');
    if (v.json) process.stdout.write(JSON.stringify(file) + '\n');
    else process.stdout.write(`wrote ${out}: rtt ${data.rttMs.toFixed(2)} ms, up ${(data.upBytesPerSec * 8 / 1e6).toFixed(1)} Mbit/s, down ${(data.downBytesPerSec * 8 / 1e6).toFixed(1)} Mbit/s\n`);
  },
});

const accuracyCommand = defineCommand({
  name: 'accuracy',
  summary:
    'Measures the ppl change of each configuration on calibration text: weights (rtn) per split × front bits × back bits, hidden-state codecs per split (float weights), and the LM head at each lower precision and the token embedding at 8 and 4 bits; the quantized weight configurations and heads again at each other quantization block. It runs a layer at a time (one layer\'s segments held, each built once per precision for every configuration). --estimate measures a few splits and adds the front\'s and the back\'s changes for the rest (what `plan` does without a profile: minutes at 1B). Never run it on the evaluation text.',
  usage: 'splitllm profile accuracy --model M --text CALIB.txt --out F [--bits 4,8,32] [--block-sizes 32,64,128] [--splits K,K,…] [--estimate] [--codecs fp32,fp16,int8,uniform:4,ts-tabq:eps=0.1,ts-tabq] [--calibration FILE] [--windows 60] [--json]',
  examples: [
    'splitllm profile accuracy --text train.txt --out acc.json',
    'splitllm profile accuracy --model models/stories260K --text tinystories_calib.txt --bits 4,32 --codecs fp16,ts-tabq --windows 20 --out acc.json',
    'splitllm profile accuracy --model models/llama-1b --text calib.txt --estimate --out acc.json',
    'splitllm profile accuracy --model models/llama-1b --text calib.txt --splits 4,8 --block-sizes 32 --windows 8 --out acc.json',
  ],
  options: {
    ...modelOptions,
    text: opt.file({ required: true, description: 'calibration text' }),
    out: opt.string({ short: 'o', required: true, description: 'profile file to write', valueName: 'F' }),
    bits: bitsOption([4, 8, 32]),
    'block-sizes': blocksOption,
    splits: opt.list({ item: items.int(), description: 'splits to measure (with --estimate: the splits it samples, 0 and L among them)', valueName: 'K,K,…', defaultText: 'every split 0..L (with --estimate: every one up to 8 layers, else 5 spread over 0..L)' }),
    estimate: opt.flag({ description: "measure a few splits and estimate the rest (the front's change plus the back's; default block only): what 'splitllm plan' does for a model without a profile" }),
    codecs: opt.list({ item: items.string, default: DEFAULT_PROFILE_CODECS, description: "codec settings; bare 'ts-tabq' is the calibrated default of each split" }),
    ...calibrationOption,
    windows: opt.int({ min: 1, description: 'perplexity windows of the text to use', defaultText: `60 (with --estimate: ${ESTIMATE_WINDOWS}, or as many as predict ${MIN_PREDICTED} tokens)` }),
    json: opt.flag({ description: 'print the profile as JSON' }),
  },
  async run(v) {
    const pkg = await openModelOption(v);
    const out = v.out;
    if (v.estimate && v['block-sizes'].some((b) => b !== DEFAULT_BLOCK_SIZE) && JSON.stringify(v['block-sizes']) !== JSON.stringify(DEFAULT_PROFILE_BLOCKS)) {
      throw new SplitLLMError('E_USAGE', `--estimate measures block ${DEFAULT_BLOCK_SIZE} only: leave --block-sizes out, or drop --estimate to measure other blocks`);
    }
    const data = await accuracyOnText(pkg, v.text, {
      estimate: v.estimate,
      bits: v.bits,
      codecs: v.codecs,
      calibration: v.calibration,
      windows: v.windows,
      ...(v.splits ? { splits: v.splits } : {}),
      ...(v.estimate ? {} : { blockSizes: v['block-sizes'] }),
      quiet: v.json,
    });
    const file = { format: 'splitllm-profile', kind: 'accuracy', data, machine: machine() };
    writeFileSync(out, JSON.stringify(file, null, 2) + '\n');
    if (v.json) process.stdout.write(JSON.stringify(file) + '\n');
    else {
      const atBlocks = Object.entries(data.blocks ?? {}).map(([b, t]) => `${Object.keys(t.weights).length} at block ${b}`);
      const how = data.estimate ? `estimated from splits ${data.estimate.splits.join(',')} in ${data.estimate.seconds.toFixed(0)} s` : 'measured';
      process.stdout.write(`wrote ${out}: ${Object.keys(data.weights).length} weight${atBlocks.length ? ` (and ${atBlocks.join(', ')})` : ''} and ${Object.keys(data.codecs).length} codec configurations, ${how}, over ${data.windows} windows (float32 ppl ${data.baselinePpl.toFixed(4)})\n`);
    }
  },
});

const speculationCommand = defineCommand({
  name: 'speculation',
  summary:
    "Measures how often each draft proposer's next token is the model's greedy one (teacher-forced on calibration text; the model's own output drafts better, so this is a floor), and a draft model's decode time, and adds it to an accuracy profile: 'splitllm plan' then predicts speculative decoding and may choose it. A draft model's path is recorded relative to the model's package.",
  usage: 'splitllm profile speculation --model M --text CALIB.txt --profile ACCURACY.json [--speculate ngram,early-exit,model:PATH] [--windows 60] [--json]',
  examples: [
    'splitllm profile speculation --text train.txt --profile models/default/accuracy-profile.json --speculate ngram,early-exit,model:models/draft',
    'splitllm profile speculation --model models/stories260K --text tinystories_calib.txt --profile acc.json --speculate ngram,early-exit',
  ],
  options: {
    ...modelOptions,
    text: opt.file({ required: true, description: 'calibration text' }),
    profile: opt.string({ required: true, description: "accuracy profile to add the measurement to ('splitllm profile accuracy'); rewritten in place", valueName: 'F' }),
    speculate: opt.list({ item: items.string, default: ['ngram', 'early-exit'], description: 'proposers to measure: ngram, early-exit, model:PATH' }),
    windows: opt.int({ min: 1, default: 60, description: 'windows of the text to use' }),
    json: opt.flag({ description: 'print the measured entries as JSON' }),
  },
  async run(v) {
    const pkg = await openModelOption(v);
    const raw = readJsonFile(v.profile, 'accuracy profile', "make one with 'splitllm profile accuracy'");
    accuracyProfile(raw, v.profile, pkg.hash); // the boundary: a profile of this model
    if (/eval/i.test(v.text)) process.stderr.write(`warning: ${v.text} looks like an evaluation text; profile on calibration data only\n`);
    const drafts: MeasuredDraftModel[] = [];
    let ngram = false;
    let earlyExit = false;
    for (const spec of v.speculate) {
      if (spec === 'ngram') ngram = true;
      else if (spec === 'early-exit') earlyExit = true;
      else if (spec.startsWith('model:')) {
        const path = spec.slice('model:'.length);
        const draft = await DraftModel.create(path, pkg); // the same checks as --speculate
        await draft.release();
        drafts.push({ proposer: `model:${relative(resolve(modelPath(v)), resolve(path))}`, pkg: draft.pkg });
      } else throw new SplitLLMError('E_USAGE', `--speculate ${spec}: measure ngram, early-exit or model:PATH`);
    }
    const maxSeq = Math.min(pkg.config.maxSeq, ...drafts.map((d) => d.pkg.config.maxSeq));
    const windows = pplWindows(pkg.tokenizer(), readFileSync(v.text, 'utf8'))
      .slice(0, v.windows)
      .map((w) => w.slice(0, maxSeq));
    const entries = await measureSpeculation(pkg, windows, { ngram, earlyExit, drafts, onProgress: (m) => process.stderr.write(m + '\n') });
    const data = isPlainMap(raw) ? raw['data'] : undefined;
    if (!isPlainMap(raw) || !isPlainMap(data)) throw new SplitLLMError('E_BAD_CONFIG', `${v.profile}: not an accuracy profile`);
    writeFileSync(v.profile, JSON.stringify({ ...raw, data: { ...data, speculation: entries } }, null, 2) + '\n');
    if (v.json) process.stdout.write(JSON.stringify(entries) + '\n');
    else {
      for (const e of entries) {
        process.stdout.write(`${(e.proposer + (e.split !== undefined ? ` (split ${e.split})` : '')).padEnd(28)} acceptance ${(100 * e.acceptance).toFixed(1)}%, coverage ${(100 * e.coverage).toFixed(1)}%${e.draftMsPerToken ? `, ${e.draftMsPerToken.toFixed(2)} ms per drafted token` : ''}\n`);
      }
      process.stdout.write(`added to ${v.profile} (${windows.length} windows)\n`);
    }
  },
});

export const profileCommand = commandGroup({
  name: 'profile',
  summary: 'Measures what the planner needs. Subcommands: device (compute and memory of this machine), link (round trip and throughput to a cloud), accuracy (ppl change per configuration), speculation (how often draft proposers are right).',
  subcommands: [deviceCommand, linkCommand, accuracyCommand, speculationCommand],
});

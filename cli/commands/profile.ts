import { cpus } from 'node:os';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';
import { measureBaseline, measureCompute } from '../../planner/measure.js';
import { measureLink } from '../../edge/measure-link.js';
import { pipelinePerplexity, pplWindows } from '../../models/eval/ppl.js';
import { linearFor } from '../../models/onnx/linear.js';
import { Pipeline } from '../../models/runtime/pipeline.js';
import { WireMeter } from '../../quantization/activations/meter.js';
import { codecAtSplit } from '../../quantization/activations/registry.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { intOption, modelOptions, requireString, runCommand, sessionUrl, type Command, openModelOption } from '../common.js';

const machine = () => ({ cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version, date: new Date().toISOString() });

const deviceCommand: Command = {
  name: 'profile device',
  summary:
    "Measures this machine: per-layer decode and prefill latency at each weight precision, the embedding's and the LM head's, and the runtime's baseline memory (the resident size of a running edge process less the model memory the planner accounts for). Run it on the edge device (and on the cloud machine for --cloud-profile).",
  usage: 'splitllm profile device --model M --out F [--bits 2,3,4,8,16,32] [--steps 20] [--json]',
  options: {
    ...modelOptions,
    out: { type: 'string', short: 'o', description: 'profile file to write', valueName: 'F' },
    bits: { type: 'string', description: 'weight precisions to measure', default: '2,3,4,8,16,32' },
    steps: { type: 'string', description: 'timed decode steps per measurement', default: '20' },
    json: { type: 'boolean', description: 'print the profile as JSON' },
  },
  async run(values) {
    const out = requireString(values, 'out', 'profile device');
    const pkg = await openModelOption(values);
    const bits = String(values['bits']).split(',').map(Number);
    const baselineBytes = await measureBaseline(pkg, bits); // first: RSS only grows once segments were loaded
    const data = await measureCompute(pkg, bits, { steps: intOption(values, 'steps', 20, 1), onProgress: (m) => process.stderr.write(m + '\n') });
    data.baselineBytes = baselineBytes;
    const file = { format: 'splitllm-profile', kind: 'compute', data, machine: machine() };
    writeFileSync(out, JSON.stringify(file, null, 2) + '\n');
    if (values['json']) process.stdout.write(JSON.stringify(file) + '\n');
    else process.stdout.write(`wrote ${out}: embedding ${data.embedMs.toFixed(3)} ms, head ${data.headMs.toFixed(3)} ms, baseline ${(baselineBytes / 1e6).toFixed(1)} MB\n`);
  },
};

const linkCommand: Command = {
  name: 'profile link',
  summary: 'Measures the link to a running cloud server: round trip (median of small probes) and throughput (a large probe each way).',
  usage: 'splitllm profile link --cloud ws://HOST:PORT --out F [--token SECRET] [--json]',
  options: {
    cloud: { type: 'string', description: 'the cloud server', valueName: 'URL' },
    out: { type: 'string', short: 'o', description: 'profile file to write', valueName: 'F' },
    token: { type: 'string', description: 'bearer token the cloud requires', valueName: 'SECRET' },
    bytes: { type: 'string', description: 'size of the throughput probes', default: '4194304' },
    json: { type: 'boolean', description: 'print the profile as JSON' },
  },
  async run(values) {
    const url = sessionUrl(values, 'profile link');
    const out = requireString(values, 'out', 'profile link');
    const data = await measureLink(url, values['token'] as string | undefined, { bytes: intOption(values, 'bytes', 4 << 20, 1024) });
    const file = { format: 'splitllm-profile', kind: 'link', data, machine: machine() };
    writeFileSync(out, JSON.stringify(file, null, 2) + '\n');
    if (values['json']) process.stdout.write(JSON.stringify(file) + '\n');
    else process.stdout.write(`wrote ${out}: rtt ${data.rttMs.toFixed(2)} ms, up ${(data.upBytesPerSec * 8 / 1e6).toFixed(1)} Mbit/s, down ${(data.downBytesPerSec * 8 / 1e6).toFixed(1)} Mbit/s\n`);
  },
};

const accuracyCommand: Command = {
  name: 'profile accuracy',
  summary:
    'Measures the ppl change of each configuration on calibration text: weights (rtn) per split × front bits × back bits, and hidden-state codecs per split (float weights). Never run it on the evaluation text.',
  usage: 'splitllm profile accuracy --model M --text CALIB.txt --out F [--bits 4,8,32] [--codecs fp32,fp16,int8,uniform:4,ts-tabq:eps=0.1,ts-tabq] [--calibration FILE] [--windows 60] [--json]',
  options: {
    ...modelOptions,
    text: { type: 'string', description: 'calibration text', valueName: 'FILE' },
    out: { type: 'string', short: 'o', description: 'profile file to write', valueName: 'F' },
    bits: { type: 'string', description: 'weight precisions', default: '4,8,32' },
    codecs: { type: 'string', description: "codec settings; bare 'ts-tabq' is the calibrated default of each split", default: 'fp32,fp16,int8,uniform:4,ts-tabq:eps=0.1,ts-tabq' },
    ...calibrationOption,
    windows: { type: 'string', description: 'perplexity windows of the text to use', default: '60' },
    json: { type: 'boolean', description: 'print the profile as JSON' },
  },
  async run(values) {
    const pkg = await openModelOption(values);
    const textPath = requireString(values, 'text', 'profile accuracy');
    const out = requireString(values, 'out', 'profile accuracy');
    if (!existsSync(textPath)) throw new SplitLLMError('E_FILE_NOT_FOUND', `text file ${textPath} does not exist: check the path`);
    if (/eval/i.test(textPath)) process.stderr.write(`warning: ${textPath} looks like an evaluation text; profile on calibration data only\n`);
    const windows = pplWindows(pkg.tokenizer(), readFileSync(textPath, 'utf8')).slice(0, intOption(values, 'windows', 60, 1));
    const bits = String(values['bits']).split(',').map(Number);
    const codecs = String(values['codecs']).split(',');
    const contexts = calibrationContexts(values, pkg);
    // the codec a spec means at split k: bare 'ts-tabq' is the calibrated default there, when there is one
    const codecAt = (spec: string, k: number) => codecAtSplit(spec, k, contexts);
    for (const c of codecs) codecAt(c, 1); // fail early on a bad spec
    const L = pkg.config.nLayers;
    const score = async (p: Pipeline) => (await pipelinePerplexity(p, windows)).ppl;
    const base = await score(await Pipeline.create(pkg));
    const weights: Record<string, number> = {};
    const codecTable: Record<string, { pplIncrease: number; bitsPerValue: number }> = {};
    const emitters = new Map(bits.map((b) => [b, linearFor(b, 32)]));
    for (let k = 0; k <= L; k++) {
      for (const f of bits) {
        for (const b of bits) {
          const p = await Pipeline.create(pkg, [k], { linearFor: (l) => emitters.get(l < k ? f : b)! });
          weights[`${k}/${f}/${b}`] = (await score(p)) / base - 1;
          await p.release();
        }
      }
      for (const spec of codecs) {
        const p = await Pipeline.create(pkg, [k]);
        const meter = new WireMeter(codecAt(spec, k), { contexts: contexts.contexts });
        p.between = (h, tokens) => meter.roundTrip(h, tokens, pkg.config.dim);
        codecTable[`${k}/${spec}`] = { pplIncrease: (await score(p)) / base - 1, bitsPerValue: meter.bitsPerValue };
        await p.release();
      }
      process.stderr.write(`profile accuracy: split ${k}/${L} done\n`);
    }
    const data = { model: pkg.hash, baselinePpl: base, windows: windows.length, weights, codecs: codecTable };
    const file = { format: 'splitllm-profile', kind: 'accuracy', data, machine: machine() };
    writeFileSync(out, JSON.stringify(file, null, 2) + '\n');
    if (values['json']) process.stdout.write(JSON.stringify(file) + '\n');
    else process.stdout.write(`wrote ${out}: ${Object.keys(weights).length} weight and ${Object.keys(codecTable).length} codec configurations over ${windows.length} windows (float32 ppl ${base.toFixed(4)})\n`);
  },
};

export const profileCommand: Command = {
  name: 'profile',
  summary: 'Measures what the planner needs. Subcommands: device (compute and memory of this machine), link (round trip and throughput to a cloud), accuracy (ppl change per configuration).',
  usage: 'splitllm profile device|link|accuracy [options]   (splitllm profile device --help)',
  options: {},
  positionals: true,
  async run(_values, positionals) {
    throw new SplitLLMError('E_USAGE', `unknown profile subcommand "${positionals[0] ?? ''}": use 'splitllm profile device' or 'splitllm profile link'`);
  },
};

export async function runProfile(argv: string[]): Promise<number> {
  if (argv[0] === 'device') return runCommand(deviceCommand, argv.slice(1));
  if (argv[0] === 'link') return runCommand(linkCommand, argv.slice(1));
  if (argv[0] === 'accuracy') return runCommand(accuracyCommand, argv.slice(1));
  return runCommand(profileCommand, argv);
}

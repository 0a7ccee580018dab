/**
 * bench/privacy: how much of a prompt a cloud operator recovers from what the cloud receives (issue 36).
 * Per split and codec, on held-out text: the white-box sequential inversion (audit/privacy.ts: the edge's
 * own front layers and codec, candidates in the linear map's order, stopping at one that explains the
 * received state within the codec's own error), the nearest embedding row, and a linear map fitted on other
 * paragraphs of public text. Prints the token recovery rates (BOS included), candidates tried and ms per
 * token; `--front-bits 4` attacks a 4-bit front (RTN, block 32) as the demo's plan runs it.
 *
 *   node dist/bench/privacy.js [--model DIR] [--splits 1,2,3,4,5] [--codecs fp32,ts-tabq] [--front-bits 32,4]
 *                              [--prompts 48] [--tokens 40] [--fit 400] [--text FILE] [--json]
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { auditSplit, auditTexts, type SplitAudit } from '../audit/privacy.js';
import { calibrationContexts } from '../models/calibration-file.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { linearFor } from '../models/onnx/linear.js';
import { openModel } from '../models/package.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { codecAtSplit } from '../quantization/activations/registry.js';
import { TENSORS } from '../shared/decoder.js';
import { fmt, FIXTURES } from './common.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: DEFAULT_MODEL_DIR },
    splits: { type: 'string' },
    codecs: { type: 'string', default: 'fp32,ts-tabq' },
    'front-bits': { type: 'string', default: '32' },
    prompts: { type: 'string', default: '48' },
    tokens: { type: 'string', default: '40' },
    fit: { type: 'string', default: '400' },
    text: { type: 'string', default: join(FIXTURES, 'corpus', 'tinyshakespeare.txt') },
    'max-candidates': { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write(
    'usage: node dist/bench/privacy.js [--model DIR] [--splits K,…] [--codecs fp32,ts-tabq] [--front-bits 32,4] [--prompts N] [--tokens T] [--fit PARAGRAPHS] [--text FILE] [--max-candidates N] [--json]\n' +
      'The linear map is fitted on the first --fit paragraphs of --text; the prompts are the next paragraphs of at least --tokens tokens (held out).\n',
  );
  process.exit(0);
}
const pkg = await openModel(values.model!);
const c = pkg.config;
const text = readFileSync(values.text!, 'utf8');
const tok = pkg.tokenizer();
const encode = (s: string) => tok.encode(s, true);
const fitCount = Number(values.fit);
// the fit: the first `fit` paragraphs (whole, up to the model's context); the prompts: paragraphs after them
const { fit: fitIds, prompts } = auditTexts(text, encode, { fit: fitCount, count: Number(values.prompts), tokens: Number(values.tokens), maxSeq: c.maxSeq, where: values.text! });
const splits = values.splits ? values.splits.split(',').map(Number) : Array.from({ length: c.nLayers - 1 }, (_, i) => i + 1);
const embedding = pkg.weights.get(TENSORS.embed);
const contexts = calibrationContexts({}, pkg);
const results: (SplitAudit & { frontBits: number })[] = [];
const t0 = performance.now();
for (const bits of values['front-bits']!.split(',').map(Number)) {
  for (const split of splits) {
    for (const spec of values.codecs!.split(',')) {
      const codec = codecAtSplit(spec, split, contexts);
      const r = await auditSplit({
        split,
        codec,
        front: () => SegmentRuntime.create(pkg, 0, split, { embed: true, head: false, threads: 1, ...(bits < 32 ? { linearFor: () => linearFor(bits, 32) } : {}) }),
        prompts,
        fit: fitIds,
        embedding,
        vocab: c.vocabSize,
        dim: c.dim,
        maxCandidates: values['max-candidates'] ? Number(values['max-candidates']) : undefined,
      });
      results.push({ ...r, frontBits: bits });
      if (!values.json) {
        process.stdout.write(
          `front ${bits === 32 ? 'fp32' : `${bits}-bit`} split ${split} ${r.codec.padEnd(28)} white-box ${fmt(r.whiteBox.rate * 100, 1).padStart(5)}% (${fmt(r.whiteBox.triedPerToken, 1)} candidates, ${fmt(r.whiteBox.msPerToken, 1)} ms a token)  linear map ${fmt(r.linear.rate * 100, 1).padStart(5)}%  nearest embedding ${fmt(r.embedding.rate * 100, 1).padStart(5)}%\n`,
        );
      }
    }
  }
}
const summary = { model: pkg.manifest.name, vocab: c.vocabSize, prompts: prompts.length, tokensPerPrompt: Number(values.tokens), fitParagraphs: fitIds.length, seconds: (performance.now() - t0) / 1000, load: loadavg(), results };
if (values.json) process.stdout.write(JSON.stringify(summary) + '\n');
else process.stdout.write(`bench/privacy: ${pkg.manifest.name}, ${prompts.length} held-out prompts of ${values.tokens} tokens (BOS included), linear map fitted on ${fitIds.length} other paragraphs; ${fmt(summary.seconds, 0)} s; load ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);

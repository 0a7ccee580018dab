import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { parameterCount } from '../models/manifest.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { cli } from './helpers/cli.js';
import { CORPUS, describeWithFixtures } from './helpers/fixtures.js';
import { defaultModel } from './helpers/models.js';

/** Greedy continuation of "ROMEO:" by models/default (40 tokens), recorded when the model was trained:
 * "\nIt is my sword,\nWhich is the Duke of Norfolk, Warwick,\nWith all the Duke of Norfolk," */
const ROMEO_GREEDY = [12, 75, 118, 328, 309, 262, 121, 349, 46, 12, 89, 453, 328, 268, 34, 70, 119, 332, 298, 34, 80, 272, 104, 490, 109, 46, 34, 89, 285, 121, 107, 376, 46, 12, 89, 320, 399, 268, 34, 70];

describe('the default model (models/default)', () => {
  it('is a Llama-architecture package (≥ 6 layers, GQA, RoPE, SwiGLU) of at most 20 MB', async () => {
    const pkg = await defaultModel();
    const c = pkg.config;
    expect(c.architecture).toBe('llama');
    expect(c.nLayers).toBeGreaterThanOrEqual(6);
    expect(c.nKvHeads).toBeLessThan(c.nHeads);
    expect(c.ropeStyle).toBe('half');
    expect(parameterCount(c)).toBeGreaterThan(2e6);
    let bytes = 0;
    for (const f of ['manifest.json', 'model.safetensors', 'tokenizer.json', 'accuracy-profile.json']) bytes += statSync(join(DEFAULT_MODEL_DIR, f)).size;
    expect(bytes).toBeLessThanOrEqual(20 * 1024 * 1024);
    const manifest = JSON.parse(readFileSync(join(DEFAULT_MODEL_DIR, 'manifest.json'), 'utf8')) as { source: { trainer: string } };
    expect(manifest.source.trainer).toBe('scripts/train-default-model.py');
  });

  it('its byte-level tokenizer round-trips any text, and merges common words', async () => {
    const tok = (await defaultModel()).tokenizer();
    for (const s of ['ROMEO:\nBut, soft! what light through yonder window breaks?', 'naïve café — 東京 🙂 \t tabs\n\n\nand  spaces ', '\u0000\u00ff', 'x'.repeat(300)]) {
      const ids = tok.encode(s);
      expect(ids[0]).toBe(0); // BOS
      expect(Math.max(...ids)).toBeLessThan(512);
      expect(tok.decode(ids)).toBe(s);
    }
    const ids = tok.encode('the king and the queen', false);
    expect(ids.length).toBeLessThan('the king and the queen'.length / 2);
  });

  it('greedy generation from "ROMEO:" gives the recorded tokens, whole and split 3 with a 4-bit front', async () => {
    const pkg = await defaultModel();
    const prompt = pkg.tokenizer().encode('ROMEO:');
    const whole = await generate(await Pipeline.create(pkg), prompt, { maxTokens: 40 });
    expect(whole).toEqual(ROMEO_GREEDY);
    const split = await generate(await Pipeline.create(pkg, [3]), prompt, { maxTokens: 40 });
    expect(split).toEqual(ROMEO_GREEDY);
    expect(pkg.tokenizer().decode([...prompt, ...whole])).toMatch(/^ROMEO:\n[A-Z]/);
  });

  it('splitllm demo plans (here with the split fixed), streams through an emulated link and reports (--json)', () => {
    // plain steps: one decode step per token (the plan may otherwise speculate)
    const r = cli(['demo', '--max-tokens', '24', '--json', '--split', '2', '--speculate', 'off'], { timeoutMs: 180_000 });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as {
      plan: { split: number; frontBits: number; codec: string };
      predicted: { memory: number; accuracy: number };
      budgets: { edgeMemory: number; maxPplIncrease: number };
      tokens: number[];
      text: string;
      stats: { tokens: number; decode: { steps: number; payloadBytes: number; wireBytes: number; networkMs: number } };
      fp16BytesPerToken: number;
    };
    expect(out.tokens.length).toBeGreaterThan(0);
    expect(out.tokens.length).toBeLessThanOrEqual(24);
    expect(out.text.length).toBeGreaterThan(out.tokens.length); // decoded text, a byte or more per token
    expect(out.plan.split).toBe(2);
    expect(out.predicted.memory).toBeLessThanOrEqual(out.budgets.edgeMemory);
    expect(out.predicted.accuracy).toBeLessThanOrEqual(out.budgets.maxPplIncrease);
    expect(out.stats.decode.steps).toBe(out.stats.tokens - 1);
    // the codec the planner chose sends fewer bytes than a float16 hidden state would
    expect(out.stats.decode.wireBytes).toBeLessThan(out.fp16BytesPerToken);
    // the emulated link's 30 ms round trip is in every step's network time
    expect(out.stats.decode.networkMs).toBeGreaterThanOrEqual(30);
    expect(r.stderr).toMatch(/plan: split \d of 6/);
  });

  it('splitllm demo says which budget binds when nothing fits (exit 3)', () => {
    const r = cli(['demo', '--edge-memory', '100KB']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/no plan fits: the memory budget binds; raise it from 0\.10 MB to [\d.]+ MB/);
  });
});

describeWithFixtures('the default model against its training record', () => {
  it("eval ppl on the held-out tail of tinyshakespeare equals the trainer's own figure", () => {
    const text = readFileSync(join(CORPUS, 'tinyshakespeare.txt'), 'utf8');
    const cut = text.indexOf('\n\n', Math.floor(text.length * 0.9)); // the trainer's --holdout 0.1 (ASCII text)
    const path = join(mkdtempSync(join(tmpdir(), 'splitllm-heldout-')), 'heldout.txt');
    writeFileSync(path, text.slice(cut));
    const r = cli(['eval', 'ppl', '--text', path, '--json'], { timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout) as { ppl: number; tokens: number };
    const source = (JSON.parse(readFileSync(join(DEFAULT_MODEL_DIR, 'manifest.json'), 'utf8')) as { source: { heldOutPpl: number; heldOutTokens: number } }).source;
    expect(got.tokens).toBe(source.heldOutTokens); // PyTorch's tokenizer and @huggingface/transformers agree
    expect(Math.abs(got.ppl / source.heldOutPpl - 1)).toBeLessThan(1e-4); // and so do PyTorch and onnxruntime
  });
});

import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { cli } from './helpers/cli.js';
import { CORPUS, describeWithFixtures, REFERENCE_TEXT, STORIES_BIN, STORIES_TOK } from './helpers/fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A user error: non-zero exit, one line on stderr naming the code, no stack trace. */
function expectUserError(r: { code: number; stderr: string; stdout: string }, code: string, text: RegExp): void {
  expect(r.code, r.stderr).not.toBe(0);
  const lines = r.stderr.trim().split('\n');
  expect(lines.length, r.stderr).toBe(1);
  expect(lines[0]).toContain(`[${code}]`);
  expect(lines[0]).toMatch(text);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

it('--help works for the tool and each command', () => {
  const top = cli(['--help']);
  expect(top.code).toBe(0);
  expect(top.stdout).toMatch(/generate/);
  for (const c of [['generate'], ['import'], ['eval', 'ppl']]) {
    const r = cli([...c, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: splitllm/);
  }
});

it('unknown options and commands are usage errors (exit 2)', () => {
  expectUserError(cli(['generate', '--model', 'x', '--bogus']), 'E_USAGE', /bogus/);
  const r = cli(['frobnicate']);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/unknown command/);
});

it('missing model file is a one-line error', () => {
  expectUserError(cli(['generate', '--model', join(tmp, 'nope.bin')]), 'E_FILE_NOT_FOUND', /does not exist/);
});

it('without --model, commands use the bundled default model', () => {
  const r = cli(['generate', '--prompt', 'KING:', '--max-tokens', '8', '--json', '--temperature', '0']);
  expect(r.code, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout) as { tokens: number[]; text: string };
  expect(out.tokens.length).toBeGreaterThan(0);
  expect(out.tokens.length).toBeLessThanOrEqual(8);
  expect(out.text.length).toBeGreaterThan(0);
});

it('unknown architecture (Hugging Face config and package manifest)', () => {
  const hf = join(tmp, 'gpt2');
  mkdirSync(hf, { recursive: true });
  writeFileSync(join(hf, 'config.json'), JSON.stringify({ model_type: 'gpt2', n_embd: 768 }));
  expectUserError(cli(['generate', '--model', hf]), 'E_UNKNOWN_ARCHITECTURE', /gpt2/);
  const pkg = join(tmp, 'pkg-bad-arch');
  mkdirSync(pkg, { recursive: true });
  writeFileSync(join(pkg, 'manifest.json'), JSON.stringify({ format: 'splitllm-model', version: 1, config: { architecture: 'falcon' } }));
  expectUserError(cli(['eval', 'ppl', '--model', pkg, '--text', join(tmp, 'x.txt')]), 'E_FILE_NOT_FOUND', /x\.txt/);
  writeFileSync(join(tmp, 'x.txt'), 'hello there\n');
  expectUserError(cli(['eval', 'ppl', '--model', pkg, '--text', join(tmp, 'x.txt')]), 'E_UNKNOWN_ARCHITECTURE', /falcon/);
});

it('import --synthetic writes a package that loads and generates; unknown presets are errors', () => {
  const out = join(tmp, 'synthetic-tiny');
  const r = cli(['import', '--synthetic', 'tiny', '--out', out, '--json']);
  expect(r.code, r.stderr).toBe(0);
  expect((JSON.parse(r.stdout) as { config: { nLayers: number } }).config.nLayers).toBe(4);
  const g = cli(['generate', '--model', out, '--max-tokens', '8', '--json', '--split', '2']);
  expect(g.code, g.stderr).toBe(0);
  expect((JSON.parse(g.stdout) as { tokens: number[] }).tokens.length).toBe(8);
  expectUserError(cli(['import', '--synthetic', 'gpt5', '--out', out]), 'E_BAD_ARGUMENT', /unknown synthetic preset/);
});

describeWithFixtures('CLI on stories260K', () => {
  it('generate --json reproduces the reference text, with and without --split', () => {
    const a = cli(['generate', '--model', STORIES_BIN, '--tokenizer', STORIES_TOK, '--max-tokens', '100', '--json']);
    expect(a.code, a.stderr).toBe(0);
    const ja = JSON.parse(a.stdout) as { tokens: number[]; text: string };
    expect(ja.text.startsWith(REFERENCE_TEXT)).toBe(true);
    expect(ja.tokens.length).toBe(100);
    const b = cli(['generate', '--model', STORIES_BIN, '--max-tokens', '100', '--json', '--split', '3']);
    expect(b.code, b.stderr).toBe(0);
    expect(JSON.parse(b.stdout)).toEqual(ja);
  });

  it('eval ppl gives the reference perplexity on both texts within 0.1%', () => {
    for (const [file, ppl, tokens] of [
      ['tinystories_calib.txt', 5.4416, 49119],
      ['tinystories_eval.txt', 6.0136, 48118],
    ] as const) {
      const r = cli(['eval', 'ppl', '--model', STORIES_BIN, '--text', join(CORPUS, file), '--json']);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout) as { ppl: number; tokens: number };
      expect(Object.keys(j).sort()).toEqual(['ppl', 'tokens']);
      expect(j.tokens).toBe(tokens);
      expect(Math.abs(j.ppl / ppl - 1)).toBeLessThan(0.001);
    }
  });

  it('split out of range', () => {
    expectUserError(cli(['generate', '--model', STORIES_BIN, '--split', '6']), 'E_SPLIT_RANGE', /out of range/);
  });

  it('truncated and corrupt checkpoints', () => {
    const full = readFileSync(STORIES_BIN);
    const trunc = join(tmp, 'trunc', 'stories260K.bin');
    mkdirSync(join(tmp, 'trunc'), { recursive: true });
    writeFileSync(trunc, full.subarray(0, Math.floor(full.length / 2)));
    expectUserError(cli(['generate', '--model', trunc, '--tokenizer', STORIES_TOK]), 'E_CHECKPOINT_TRUNCATED', /truncated/);
    const tiny = join(tmp, 'trunc', 'header.bin');
    writeFileSync(tiny, full.subarray(0, 10));
    expectUserError(cli(['generate', '--model', tiny, '--tokenizer', STORIES_TOK]), 'E_CHECKPOINT_TRUNCATED', /truncated/);
    const bad = Buffer.from(full);
    bad.writeInt32LE(-7, 8); // n_layers
    const corrupt = join(tmp, 'trunc', 'corrupt.bin');
    writeFileSync(corrupt, bad);
    expectUserError(cli(['generate', '--model', corrupt, '--tokenizer', STORIES_TOK]), 'E_CHECKPOINT_CORRUPT', /impossible llama2\.c header/);
    const nan = Buffer.from(full);
    nan.writeFloatLE(NaN, 28 + 4 * 1000);
    writeFileSync(corrupt, nan);
    expectUserError(cli(['generate', '--model', corrupt, '--tokenizer', STORIES_TOK]), 'E_CHECKPOINT_CORRUPT', /non-finite/);
  });

  it('tokenizer / model vocabulary mismatch', () => {
    // a tokenizer with 40 more pieces than the model's 512
    const extra = Buffer.concat(
      Array.from({ length: 40 }, (_, i) => {
        const piece = Buffer.from(`zz${i}`);
        const head = Buffer.alloc(8);
        head.writeFloatLE(-1000 - i, 0);
        head.writeInt32LE(piece.length, 4);
        return Buffer.concat([head, piece]);
      }),
    );
    const tok = join(tmp, 'tok552.bin');
    writeFileSync(tok, Buffer.concat([readFileSync(STORIES_TOK), extra]));
    expectUserError(cli(['generate', '--model', STORIES_BIN, '--tokenizer', tok]), 'E_VOCAB_MISMATCH', /552 pieces .* 512/);
    // a package whose tokenizer.json is larger than the model's vocabulary
    const pkg = join(tmp, 'pkg');
    const imp = cli(['import', STORIES_BIN, '--out', pkg]);
    expect(imp.code, imp.stderr).toBe(0);
    const tj = JSON.parse(readFileSync(join(pkg, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
    for (let i = 0; i < 10; i++) tj.model.vocab[`extra${i}`] = 512 + i;
    writeFileSync(join(pkg, 'tokenizer.json'), JSON.stringify(tj));
    expectUserError(cli(['generate', '--model', pkg]), 'E_VOCAB_MISMATCH', /522 tokens .* 512/);
  });

  it('import writes a package that generates the same text; a .bin without a tokenizer nearby is a usage error', () => {
    const pkg = join(tmp, 'pkg2');
    const imp = cli(['import', STORIES_BIN, '--out', pkg, '--json']);
    expect(imp.code, imp.stderr).toBe(0);
    const manifest = JSON.parse(imp.stdout) as { config: { nLayers: number }; weightsSha256: string };
    expect(manifest.config.nLayers).toBe(5);
    expect(manifest.weightsSha256).toMatch(/^[0-9a-f]{64}$/);
    const r = cli(['generate', '--model', pkg, '--max-tokens', '100', '--json']);
    expect((JSON.parse(r.stdout) as { text: string }).text.startsWith(REFERENCE_TEXT)).toBe(true);
    const lone = join(tmp, 'lone');
    mkdirSync(lone, { recursive: true });
    copyFileSync(STORIES_BIN, join(lone, 'm.bin'));
    expectUserError(cli(['generate', '--model', join(lone, 'm.bin')]), 'E_USAGE', /--tokenizer/);
  });
});

describeWithFixtures('codecs through the CLI on stories260K', () => {
  const ev = (args: string[]) => cli(['eval', 'ppl', '--model', STORIES_BIN, '--text', join(CORPUS, 'tinystories_calib.txt'), '--limit', '20', '--json', ...args]);

  it('eval ppl --codec fp32 equals the plain split and counts bits with headers', () => {
    const plain = JSON.parse(ev(['--split', '2']).stdout) as { ppl: number };
    const r = ev(['--split', '2', '--codec', 'fp32']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { ppl: number; bitsPerValue: number; tokens: number };
    expect(j.ppl).toBe(plain.ppl);
    expect(j.bitsPerValue).toBeGreaterThan(32);
    expect(j.bitsPerValue).toBeLessThan(32.2);
    const u = JSON.parse(ev(['--split', '2', '--codec', 'uniform:4']).stdout) as { ppl: number; bitsPerValue: number };
    expect(u.bitsPerValue).toBeGreaterThan(4);
    expect(u.bitsPerValue).toBeLessThan(4.7);
    expect(u.ppl).toBeGreaterThan(plain.ppl);
    expectUserError(ev(['--codec', 'uniform:4']), 'E_USAGE', /--codec needs --split/);
    expectUserError(ev(['--split', '2', '--codec', 'zip:9']), 'E_CODEC_SPEC', /unknown codec "zip"/);
  });

  it('calibrate writes per-split statistics, the codec context and a codec choice that eval ppl then uses by default', () => {
    const out = join(tmp, 'cal.json');
    const r = cli(['calibrate', '--model', STORIES_BIN, '--text', join(CORPUS, 'tinystories_calib.txt'), '--windows', '40', '--splits', '2', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const cal = JSON.parse(readFileSync(out, 'utf8')) as {
      splits: Record<string, { stats: { absQuantiles: Record<string, number> }; context: { dim: number; center: number[]; sink?: number[] }; fit: { a: number }; tried: unknown[]; choice: { codec: string; pplIncrease: number; bitsPerValue: number } }>;
    };
    const s2 = cal.splits['2']!;
    expect(s2.stats.absQuantiles['0.999']).toBeGreaterThan(s2.stats.absQuantiles['0.5']!);
    expect(s2.context.dim).toBe(64);
    expect(s2.context.center).toHaveLength(64);
    expect(s2.context.sink).toHaveLength(64); // BOS at position 0 starts every paragraph window
    expect(s2.tried).toHaveLength(5);
    expect(s2.fit.a).toBeGreaterThan(0);
    expect(s2.choice.codec).toMatch(/^ts-tabq:cal=2,step=[\d.]+,tau=6$/);
    const e = ev(['--split', '2', '--codec', 'ts-tabq', '--calibration', out, '--limit', '60']);
    expect(e.code, e.stderr).toBe(0);
    expect(e.stderr).toMatch(/calibrated default/);
    const j = JSON.parse(e.stdout) as { codec: string; bitsPerValue: number };
    expect(j.codec).toBe(s2.choice.codec);
    expect(j.bitsPerValue).toBeLessThan(4.6);
    // a calibrated codec without its calibration is a one-line typed error
    expectUserError(ev(['--split', '2', '--codec', s2.choice.codec, '--limit', '2']), 'E_CODEC_CONTEXT', /needs the calibration of split 2/);
  });
});

describeWithFixtures('OPSC weights through the CLI on stories260K', () => {
  const ev = (args: string[]) => cli(['eval', 'ppl', '--model', STORIES_BIN, '--text', join(CORPUS, 'tinystories_eval.txt'), '--json', ...args]);
  const calib = join(CORPUS, 'tinystories_calib.txt');

  it('every linear layer at 8 bits stays within 0.5% of float32', () => {
    const r = ev(['--weight-bits', '8']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { ppl: number; tokens: number };
    expect(j.tokens).toBe(48118);
    expect(j.ppl / 6.0136 - 1).toBeLessThan(0.005);
  });

  it('awq is no worse than rtn at 3 and 4 bits; OPSC front 4 bits / back float32 runs at a split', () => {
    for (const bits of ['3', '4']) {
      const rtn = JSON.parse(ev(['--weight-bits', bits, '--limit', '150']).stdout) as { ppl: number };
      const a = ev(['--weight-bits', bits, '--weight-strategy', 'awq', '--calib-text', calib, '--limit', '150']);
      expect(a.code, a.stderr).toBe(0);
      expect((JSON.parse(a.stdout) as { ppl: number }).ppl, `${bits} bits`).toBeLessThanOrEqual(rtn.ppl);
    }
    const opsc = ev(['--split', '2', '--front-bits', '4', '--back-bits', '32', '--limit', '150']);
    expect(opsc.code, opsc.stderr).toBe(0);
    const all4 = JSON.parse(ev(['--weight-bits', '4', '--limit', '150']).stdout) as { ppl: number };
    const f32 = JSON.parse(ev(['--limit', '150']).stdout) as { ppl: number };
    const p = (JSON.parse(opsc.stdout) as { ppl: number }).ppl;
    expect(p).toBeGreaterThan(f32.ppl);
    expect(p).toBeLessThan(all4.ppl);
  });

  it('weight options are checked', () => {
    expectUserError(ev(['--front-bits', '4']), 'E_USAGE', /need --split/);
    expectUserError(ev(['--weight-bits', '5']), 'E_BAD_ARGUMENT', /weight bits 5/);
    expectUserError(ev(['--weight-bits', '4', '--block-size', '48']), 'E_BAD_ARGUMENT', /block size 48/);
    expectUserError(ev(['--weight-bits', '4', '--weight-strategy', 'awq']), 'E_USAGE', /--calib-text/);
    expectUserError(ev(['--weight-bits', '4', '--weight-strategy', 'smoothquant', '--calib-text', calib]), 'E_BAD_ARGUMENT', /W8A8/);
    expectUserError(ev(['--weight-bits', '4', '--weight-strategy', 'gptq']), 'E_BAD_ARGUMENT', /strategy "gptq"/);
  });
});

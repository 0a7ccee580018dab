import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { cli } from './helpers/cli.js';
import { CORPUS, describeWithFixtures, STORIES_BIN, STORIES_TOK } from './helpers/fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-codec-acc-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const model = ['--model', STORIES_BIN, '--tokenizer', STORIES_TOK];
const evalPpl = (args: string[]) => {
  const r = cli(['eval', 'ppl', ...model, '--text', join(CORPUS, 'tinystories_eval.txt'), '--json', ...args], { timeoutMs: 300_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { ppl: number; tokens: number; bitsPerValue: number; codec: string };
};

describeWithFixtures('ts-tabq on stories260K at its calibrated default', () => {
  it(
    'uses ≤ 4.0 bits per value within 1% of float32 at every split, and beats uniform (no TS) that spends more bits',
    () => {
      const cal = join(tmp, 'calibration.json');
      // the calibration exactly as a user runs it: defaults, calibration text only
      const c = cli(['calibrate', ...model, '--text', join(CORPUS, 'tinystories_calib.txt'), '--out', cal], { timeoutMs: 900_000 });
      expect(c.code, c.stderr).toBe(0);
      const calibration = JSON.parse(readFileSync(cal, 'utf8')) as { splits: Record<string, { choice: { codec: string } }> };
      const base = evalPpl([]);
      expect(base.tokens).toBe(48118);
      for (const k of [1, 2, 3, 4]) {
        const ts = evalPpl(['--split', String(k), '--codec', 'ts-tabq', '--calibration', cal]);
        expect(ts.codec).toBe(calibration.splits[String(k)]!.choice.codec);
        expect(ts.tokens).toBe(48118);
        expect(ts.bitsPerValue, `split ${k}`).toBeLessThanOrEqual(4.0);
        expect(ts.ppl / base.ppl - 1, `split ${k}`).toBeLessThanOrEqual(0.01);
        const uni = evalPpl(['--split', String(k), '--codec', 'uniform:4']);
        expect(uni.bitsPerValue).toBeGreaterThan(ts.bitsPerValue);
        expect(uni.ppl, `split ${k}: uniform:4 at ${uni.bitsPerValue.toFixed(2)} bits`).toBeGreaterThan(ts.ppl);
      }
    },
    1_800_000,
  );
});

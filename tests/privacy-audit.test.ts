/**
 * `splitllm audit privacy` (audit/privacy.ts) on models/default: a cloud operator holding the weights
 * recovers the prompt from what the cloud receives. Asserted on a small prompt set of held-out
 * Shakespeare (the fixtures' text): the white-box search recovers at least 99% at split 2 with fp32 and
 * with the calibrated ts-tabq, the linear map most, the nearest embedding row some.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli } from './helpers/cli.js';
import { FIXTURES } from './helpers/fixtures.js';

const TEXT = join(FIXTURES, 'corpus', 'tinyshakespeare.txt');
if (!existsSync(TEXT)) process.stderr.write(`[splitllm tests] SKIPPED audit privacy: ${TEXT} not found (set SPLITLLM_FIXTURES)\n`);

interface Audit {
  prompts: number;
  results: { split: number; codec: string; tokens: number; whiteBox: { rate: number; triedPerToken: number }; linear: { rate: number }; embedding: { rate: number } }[];
  verdict: string;
}

describe.skipIf(!existsSync(TEXT))('splitllm audit privacy', () => {
  it('recovers at least 99% of 6 held-out prompts at split 2 with fp32 and with ts-tabq, and says so in its verdict', () => {
    for (const codec of ['fp32', 'ts-tabq']) {
      const r = cli(['audit', 'privacy', '--split', '2', '--codec', codec, '--text', TEXT, '--prompts', '6', '--tokens', '24', '--fit', '150', '--json'], { timeoutMs: 300_000 });
      expect(r.code, r.stderr).toBe(0);
      const a = JSON.parse(r.stdout) as Audit;
      expect(a.prompts).toBe(6);
      const s = a.results[0]!;
      expect(s.split).toBe(2);
      expect(s.tokens).toBe(6 * 24);
      expect(s.codec).toMatch(codec === 'fp32' ? /^fp32$/ : /^ts-tabq:cal=2,/);
      expect(s.whiteBox.rate).toBeGreaterThanOrEqual(0.99);
      // the search is guided: far fewer candidates than the 512-token vocabulary per position
      expect(s.whiteBox.triedPerToken).toBeLessThan(64);
      expect(s.linear.rate).toBeGreaterThan(0.5);
      expect(s.embedding.rate).toBeGreaterThan(0);
      expect(s.embedding.rate).toBeLessThan(s.whiteBox.rate);
      expect(a.verdict).toMatch(/^a cloud operator holding these weights recovers (99|100)% of prompt tokens from what the cloud receives: do not rely on the split/);
    }
  });

  it('refuses a split that sends no hidden state, and a text too short for its fit, with one line each', () => {
    const zero = cli(['audit', 'privacy', '--split', '0', '--text', TEXT]);
    expect(zero.code).toBe(2);
    expect(zero.stderr.trim()).toBe('splitllm: error [E_USAGE]: split 0 sends token embeddings: audit a split in 1..5');
    const short = cli(['audit', 'privacy', '--split', '2', '--text', join(FIXTURES, 'corpus', 'tinystories_calib.txt'), '--fit', '100000']);
    expect(short.code).toBe(2);
    expect(short.stderr).toMatch(/^splitllm: error \[E_USAGE\]: --text .* has \d+ paragraphs: it needs more than --fit 100000/);
  });
});

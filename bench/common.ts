/** Shared bench helpers: baselines measured in the same run, and fixture lookup. */
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURES = process.env['SPLITLLM_FIXTURES'] ?? resolve(REPO, '..', 'shared', 'fixtures');
export const haveFixtures = existsSync(resolve(FIXTURES, 'stories260K', 'stories260K.bin'));

/**
 * Memory bandwidth as a large copy sustains it (bytes read + bytes written per second), best of `reps`.
 * This is the roofline for decode, which streams every weight once per token.
 */
export function memoryBandwidth(bytes = 256 * 1024 * 1024, reps = 5): number {
  const src = new Float64Array(bytes / 8);
  const dst = new Float64Array(bytes / 8);
  for (let i = 0; i < src.length; i += 4096) src[i] = i;
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    dst.set(src);
    best = Math.min(best, performance.now() - t0);
  }
  if (dst[4096] !== 4096) throw new Error('copy failed');
  return (2 * bytes) / (best / 1000);
}

export function fmt(n: number, digits = 1): string {
  return n.toFixed(digits);
}

/** Min, median and max of several runs (the figures every bench reports). */
export function minMedMax(xs: number[]): { min: number; median: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0]!, median: s[Math.floor(s.length / 2)]!, max: s[s.length - 1]! };
}

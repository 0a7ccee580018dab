/**
 * Quantities with units, as the CLI reads them: sizes (`512MB`, `1.5GiB`), durations (`40ms`, `2s`,
 * `1m`), bandwidths (`10mbit`, `2MB/s`) and fractions (`1%`). A bare number is refused unless the
 * option names its unit (`--idle-ms 60000`, `--max-frame-bytes 4096`), so `--edge-memory 160` is never
 * silently 160 bytes and `--max-ppl-increase 2` never silently 200%.
 */
import { SplitLLMError } from '../shared/errors.js';

function usage(flag: string, why: string): SplitLLMError {
  return new SplitLLMError('E_USAGE', `${flag} ${why}`);
}

const SIZE: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };
const TIME: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 };
const BITS: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 };
const BYTES: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9 };

function split(s: string): { n: number; unit: string } | undefined {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z/%]*)\s*$/i.exec(s);
  return m ? { n: Number(m[1]), unit: m[2]!.toLowerCase() } : undefined;
}

/** Bytes. `bare`: the unit of a number without one ('b' for a flag named …-bytes), else a unit is required. */
export function parseBytes(s: string, flag = 'size', bare?: 'b'): number {
  const q = split(s);
  const unit = q?.unit || bare;
  if (!q || !unit || !(unit in SIZE)) {
    if (q && !q.unit) throw usage(flag, `${s} needs a unit: ${s}MB, ${s}KB or ${s}B`);
    throw usage(flag, `"${s}" is not a size: use e.g. 512MB, 64KiB or 800B`);
  }
  return Math.floor(q.n * SIZE[unit]!);
}

/** Milliseconds. `bare`: 'ms' for a flag named …-ms; otherwise a unit is required. */
export function parseDuration(s: string, flag = 'duration', bare?: 'ms'): number {
  const q = split(s);
  const unit = q?.unit || bare;
  if (!q || !unit || !(unit in TIME)) {
    if (q && !q.unit) throw usage(flag, `${s} needs a unit: ${s}ms or ${s}s`);
    throw usage(flag, `"${s}" is not a duration: use e.g. 40ms, 2s or 1m`);
  }
  return q.n * TIME[unit]!;
}

/** Bytes per second from "10mbit", "100kbit/s", "2MB/s". */
export function parseBandwidth(s: string, flag = 'bandwidth'): number {
  const q = split(s);
  const unit = q?.unit.replace(/(\/s|ps)$/, '');
  if (!q || !unit || !(unit in BITS || unit in BYTES)) {
    if (q && !q.unit) throw usage(flag, `${s} needs a unit: ${s}mbit, ${s}kbit or ${s}MB/s`);
    throw usage(flag, `"${s}" is not a bandwidth: use e.g. 10mbit, 256kbit or 2MB/s`);
  }
  return unit in BITS ? (q.n * BITS[unit]!) / 8 : q.n * BYTES[unit]!;
}

/** A fraction from a percentage, "1%" or "0.5 %": a bare number is refused (2 would read as 200%). */
export function parsePercent(s: string, flag = 'percentage'): number {
  const q = split(s);
  if (!q || q.unit !== '%') {
    if (q && !q.unit) throw usage(flag, `${s} needs a %: write ${s}% (or ${+(q.n * 100).toPrecision(6)}% for the fraction ${s})`);
    throw usage(flag, `"${s}" is not a percentage: use e.g. 1% or 0.5%`);
  }
  return q.n / 100;
}

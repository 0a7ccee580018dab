/**
 * A byte-wise rANS entropy coder (32-bit state, 12-bit frequencies), the lossless stage that can follow
 * TAB-Q. Symbols are coded with one static frequency table per alphabet, sent with the message.
 * Layout of a stream: 4-byte little-endian final state, then the renormalization bytes in decode order.
 */
import { corrupt, type Reader, type Writer } from './format.js';

export const SCALE_BITS = 12;
export const M = 1 << SCALE_BITS;
const L = 1 << 23;

/** Normalizes counts to frequencies summing to M; every symbol that occurs gets at least 1. */
export function normalize(counts: Uint32Array): Uint16Array {
  const n = counts.length;
  let total = 0;
  for (let i = 0; i < n; i++) total += counts[i]!;
  const f = new Uint16Array(n);
  if (total === 0) return f;
  let sum = 0;
  let maxI = 0;
  for (let i = 0; i < n; i++) {
    if (counts[i]! === 0) continue;
    f[i] = Math.max(1, Math.floor((counts[i]! * M) / total));
    sum += f[i]!;
    if (counts[i]! > counts[maxI]!) maxI = i;
  }
  // settle the rounding on the most frequent symbols, never below 1
  while (sum !== M) {
    let best = -1;
    for (let i = 0; i < n; i++) {
      if (f[i]! === 0) continue;
      if (sum > M && f[i]! <= 1) continue;
      if (best < 0 || f[i]! > f[best]!) best = i;
    }
    if (best < 0) best = maxI;
    const step = sum > M ? -Math.min(sum - M, f[best]! - 1) : M - sum;
    f[best] = f[best]! + step;
    sum += step;
  }
  return f;
}

export function writeTable(w: Writer, f: Uint16Array): void {
  for (let i = 0; i < f.length; i++) w.varint(f[i]!);
}

export function readTable(r: Reader, n: number): { freq: Uint16Array; cum: Uint32Array; slot: Uint8Array } {
  const freq = new Uint16Array(n);
  const cum = new Uint32Array(n + 1);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = r.varint();
    if (v > M) throw corrupt(`frequency ${v} exceeds ${M}`);
    freq[i] = v;
    cum[i] = sum;
    sum += v;
  }
  cum[n] = sum;
  if (sum !== M) throw corrupt(`frequencies sum to ${sum}, not ${M}`);
  const slot = new Uint8Array(M);
  for (let i = 0; i < n; i++) slot.fill(i, cum[i]!, cum[i]! + freq[i]!);
  return { freq, cum, slot };
}

/**
 * Encodes symbols[i] with table tables[alpha[i]] (alpha per symbol run: `runs` gives [alphabet, count]
 * pairs in order). Returns the stream bytes.
 */
export function ransEncode(symbols: Uint8Array, runs: Int32Array, freqs: Uint16Array[], cums: Uint32Array[]): Uint8Array {
  let out = new Uint8Array(Math.max(64, symbols.length));
  let p = out.length; // written backwards
  let x = L;
  let end = symbols.length;
  for (let r = runs.length - 2; r >= 0; r -= 2) {
    const f = freqs[runs[r]!]!;
    const c = cums[runs[r]!]!;
    const start = end - runs[r + 1]!;
    for (let i = end - 1; i >= start; i--) {
      const s = symbols[i]!;
      const fs = f[s]!;
      const xmax = ((L >>> SCALE_BITS) << 8) * fs;
      while (x >= xmax) {
        if (p === 0) {
          const grown = new Uint8Array(out.length * 2);
          grown.set(out, out.length);
          p = out.length;
          out = grown;
        }
        out[--p] = x & 255;
        x >>>= 8;
      }
      x = Math.floor(x / fs) * M + (x % fs) + c[s]!;
    }
    end = start;
  }
  const res = new Uint8Array(4 + out.length - p);
  res[0] = x & 255;
  res[1] = (x >>> 8) & 255;
  res[2] = (x >>> 16) & 255;
  res[3] = x >>> 24;
  res.set(out.subarray(p), 4);
  return res;
}

/** Decodes `count` symbols of one alphabet into out[o..o+count), continuing a stream state. */
export class RansDecoder {
  private x: number;
  private p = 4;
  constructor(private readonly s: Uint8Array) {
    if (s.length < 4) throw corrupt('entropy stream shorter than its state');
    this.x = (s[0]! | (s[1]! << 8) | (s[2]! << 16) | (s[3]! << 24)) >>> 0;
    if (this.x < L) throw corrupt('entropy stream state is out of range');
  }
  decode(out: Uint8Array, o: number, count: number, t: { freq: Uint16Array; cum: Uint32Array; slot: Uint8Array }): void {
    const { freq, cum, slot } = t;
    const s = this.s;
    let x = this.x;
    let p = this.p;
    for (let i = 0; i < count; i++) {
      const sl = x & (M - 1);
      const sym = slot[sl]!;
      out[o + i] = sym;
      x = freq[sym]! * (x >>> SCALE_BITS) + sl - cum[sym]!;
      while (x < L) {
        if (p >= s.length) throw corrupt('entropy stream ends early');
        x = ((x << 8) | s[p++]!) >>> 0;
      }
    }
    this.x = x;
    this.p = p;
  }
  /** A clean stream ends exactly at its last byte in the initial state. */
  finish(): void {
    if (this.p !== this.s.length || this.x !== L) throw corrupt('entropy stream has trailing data or a wrong final state');
  }
}

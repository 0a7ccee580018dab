/**
 * A calibrated codec context: what ts-tabq's entropy-coded form (`ts-tabq:cal=K`) shares between the edge
 * and the cloud for one split layer, so that no message has to carry it.
 *
 *  - center c and scale s per channel: the quantizer works on y = (x − c) / s. c is the channels' mean on
 *    calibration tokens (hidden states carry a large per-channel mean that per-token ranges waste bits on),
 *    s their standard deviation;
 *  - a histogram of y on calibration tokens, from which both sides derive, deterministically, one static
 *    prefix code per quantization step (`rung`): canonical Huffman, lengths limited to 12 bits.
 *
 * The context's id (FNV-1a over dim, center, scale and histogram) travels in every message, so a decoder
 * with another calibration refuses it (E_CODEC_CONTEXT) instead of decoding garbage. Pure TypeScript.
 */
import { SplitLLMError } from '../../shared/errors.js';

/** Rung r quantizes y with step 2^((r − RUNG_ZERO) / 8): eighth-octave steps from 2^-8 to 2^7.875. */
export const RUNGS = 128;
export const RUNG_ZERO = 64;
/** Longest prefix code; the decode table has 2^MAX_CODE_BITS entries. */
export const MAX_CODE_BITS = 12;
/** Largest |q| a table codes; values past it (or past τ) travel exactly, as TS outliers. */
export const MAX_LEVEL = 127;

const EIGHTH = [1, 1.0905077326652577, 1.189207115002721, 1.2968395546510096, 1.4142135623730951, 1.5422108254079407, 1.681792830507429, 1.8340080864093424];

/** The step of rung r, exact and the same on every platform (no Math.pow). */
export function rungStep(r: number): number {
  const e = Math.floor((r - RUNG_ZERO) / 8);
  const frac = EIGHTH[r - RUNG_ZERO - 8 * e]!;
  return e >= 0 ? frac * (1 << e) : frac / (1 << -e);
}

/** The rung whose step is closest below `step` (clamped to the ladder). */
export function rungBelow(step: number): number {
  for (let r = RUNGS - 1; r >= 0; r--) if (rungStep(r) <= step * (1 + 1e-12)) return r;
  return 0;
}

/** The rung whose step is nearest to `step` on a log scale (clamped to the ladder). */
export function rungNearest(step: number): number {
  const r = rungBelow(step);
  return r + 1 < RUNGS && rungStep(r + 1) / step < step / rungStep(r) ? r + 1 : r;
}

/** JSON form stored in calibration.json, per split. */
export interface CodecContextData {
  dim: number;
  center: number[];
  scale: number[];
  /** histogram of y = (x − center) / scale: counts of bins [lo + i·width, lo + (i + 1)·width) */
  hist: { lo: number; width: number; counts: number[] };
  /**
   * The state of the first token of a sequence (BOS at position 0, the attention sink), when calibration
   * found it the same in every window: a message whose first token matches it sends a flag instead.
   */
  sink?: number[];
}

/** One rung's prefix code. */
export interface RungTable {
  rung: number;
  step: number;
  /** largest |q| coded; |q| above it is an outlier */
  maxLevel: number;
  /** per symbol q + maxLevel: bit-reversed code (LSB-first stream) and length */
  code: Uint16Array;
  len: Uint8Array;
  /** 2^MAX_CODE_BITS entries: (symbol << 4) | length, indexed by the next MAX_CODE_BITS stream bits */
  lookup: Uint16Array;
}

export class CodecContext {
  readonly id: number;
  readonly dim: number;
  readonly center: Float32Array;
  readonly scale: Float32Array;
  readonly invScale: Float32Array;
  readonly sink?: Float32Array;
  /** Σ scale²: what one unit of step costs in squared error, for the eps-mode first guess */
  readonly scale2: number;
  private readonly tables = new Map<number, RungTable>();

  constructor(readonly data: CodecContextData) {
    const d = data.dim;
    const bad = (why: string) => new SplitLLMError('E_CODEC_CONTEXT', `codec context is invalid: ${why}: run 'splitllm calibrate' again`);
    if (!Number.isInteger(d) || d <= 0) throw bad(`dim ${d}`);
    if (!Array.isArray(data.center) || data.center.length !== d || !Array.isArray(data.scale) || data.scale.length !== d) throw bad(`center/scale are not ${d} values`);
    const h = data.hist;
    if (!h || !Array.isArray(h.counts) || h.counts.length < 2 || h.counts.length > 1 << 16 || !(h.width > 0) || !Number.isFinite(h.lo)) throw bad('histogram');
    for (const c of h.counts) if (!Number.isInteger(c) || c < 0) throw bad('histogram counts');
    this.dim = d;
    this.center = Float32Array.from(data.center);
    this.scale = Float32Array.from(data.scale);
    this.invScale = new Float32Array(d);
    let s2 = 0;
    for (let i = 0; i < d; i++) {
      s2 += this.scale[i]! * this.scale[i]!;
      if (!Number.isFinite(this.center[i]!) || !(this.scale[i]! > 0) || !Number.isFinite(this.scale[i]!)) throw bad(`channel ${i}`);
      this.invScale[i] = 1 / this.scale[i]!;
    }
    this.scale2 = s2;
    if (data.sink !== undefined) {
      if (!Array.isArray(data.sink) || data.sink.length !== d || !data.sink.every(Number.isFinite)) throw bad('sink state');
      this.sink = Float32Array.from(data.sink);
    }
    this.id = fingerprint(this);
  }

  /** The prefix code of rung r for outlier threshold tau (in units of y), built once and cached. */
  table(r: number, tau: number): RungTable {
    const maxLevel = Math.max(1, Math.min(MAX_LEVEL, Math.floor(tau / rungStep(r) + 0.5)));
    const key = r * 256 + maxLevel;
    let t = this.tables.get(key);
    if (!t) this.tables.set(key, (t = buildTable(this.data.hist, r, maxLevel)));
    return t;
  }
}

/** FNV-1a (32 bits) over the context's defining numbers, as float32 bits. */
function fingerprint(c: CodecContext): number {
  let h = 0x811c9dc5;
  const mix = (v: number) => {
    h ^= v & 0xff;
    h = Math.imul(h, 0x01000193);
    h ^= (v >>> 8) & 0xff;
    h = Math.imul(h, 0x01000193);
    h ^= (v >>> 16) & 0xff;
    h = Math.imul(h, 0x01000193);
    h ^= v >>> 24;
    h = Math.imul(h, 0x01000193);
  };
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const f32 = (v: number) => {
    f[0] = v;
    mix(u[0]!);
  };
  mix(c.dim);
  for (const v of c.center) f32(v);
  for (const v of c.scale) f32(v);
  f32(c.data.hist.lo);
  f32(c.data.hist.width);
  for (const v of c.data.hist.counts) mix(v);
  if (c.sink) for (const v of c.sink) f32(v);
  return h >>> 0;
}

/**
 * Symbol weights of rung r: each histogram bin's count goes to the level its center rounds to, plus one
 * so that every level has a code. Integer arithmetic on counts: the same table on every machine.
 */
function buildTable(hist: CodecContextData['hist'], r: number, maxLevel: number): RungTable {
  const step = rungStep(r);
  const n = 2 * maxLevel + 1;
  const w = new Float64Array(n).fill(1);
  for (let i = 0; i < hist.counts.length; i++) {
    const q = Math.floor((hist.lo + (i + 0.5) * hist.width) / step + 0.5);
    if (q >= -maxLevel && q <= maxLevel) w[q + maxLevel]! += hist.counts[i]!;
  }
  const len = limitedHuffman(w, MAX_CODE_BITS);
  const { code, lookup } = canonical(len, MAX_CODE_BITS);
  return { rung: r, step, maxLevel, code, len, lookup };
}

/** Huffman code lengths, at most `maxBits`: small weights are raised until the code fits. */
export function limitedHuffman(weights: Float64Array, maxBits: number): Uint8Array {
  const n = weights.length;
  if (n > 1 << maxBits) throw new SplitLLMError('E_CODEC_CONTEXT', `${n} symbols do not fit ${maxBits}-bit codes`);
  if (n === 1) return Uint8Array.of(1);
  let w = Float64Array.from(weights);
  for (let round = 0; ; round++) {
    const len = huffmanLengths(w);
    let max = 0;
    for (const l of len) max = Math.max(max, l);
    if (max <= maxBits) return len;
    let total = 0;
    for (const v of w) total += v;
    const floor = total / 2 ** (maxBits - 1 - Math.min(round, maxBits - 2));
    w = w.map((v) => Math.max(v, floor));
  }
}

/** Plain Huffman code lengths; ties broken by symbol order, so every machine builds the same code. */
function huffmanLengths(w: Float64Array): Uint8Array {
  const n = w.length;
  // nodes 0..n-1 leaves, n.. internal; a simple O(n^2) merge is plenty for ≤ 255 symbols
  const weight: number[] = Array.from(w);
  const parent = new Int32Array(2 * n).fill(-1);
  const alive: number[] = Array.from({ length: n }, (_, i) => i);
  while (alive.length > 1) {
    let a = -1;
    let b = -1;
    for (const i of alive) {
      if (a < 0 || weight[i]! < weight[a]!) {
        b = a;
        a = i;
      } else if (b < 0 || weight[i]! < weight[b]!) b = i;
    }
    const p = weight.length;
    weight.push(weight[a]! + weight[b]!);
    parent[a] = p;
    parent[b] = p;
    alive.splice(alive.indexOf(a), 1);
    alive.splice(alive.indexOf(b), 1);
    alive.push(p);
  }
  const len = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let d = 0;
    for (let j = i; parent[j]! >= 0; j = parent[j]!) d++;
    len[i] = d;
  }
  return len;
}

/** Canonical codes (by length, then symbol), bit-reversed for an LSB-first stream, and the decode table. */
function canonical(len: Uint8Array, maxBits: number): { code: Uint16Array; lookup: Uint16Array } {
  const n = len.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => len[a]! - len[b]! || a - b);
  const code = new Uint16Array(n);
  const lookup = new Uint16Array(1 << maxBits);
  let c = 0;
  let prevLen = len[order[0]!]!;
  for (let k = 0; k < n; k++) {
    const s = order[k]!;
    const l = len[s]!;
    c <<= l - prevLen;
    prevLen = l;
    let rev = 0;
    for (let b = 0; b < l; b++) rev |= ((c >> b) & 1) << (l - 1 - b);
    code[s] = rev;
    for (let fill = rev; fill < 1 << maxBits; fill += 1 << l) lookup[fill] = (s << 4) | l;
    c++;
  }
  return { code, lookup };
}

/** Contexts a decoder knows, by id. */
export type ContextSet = ReadonlyMap<number, CodecContext>;

export function contextMissing(id: number): SplitLLMError {
  return new SplitLLMError(
    'E_CODEC_CONTEXT',
    `hidden-state message needs calibration context ${id.toString(16).padStart(8, '0')}, which this side does not have: give the edge and the cloud the same calibration.json`,
  );
}

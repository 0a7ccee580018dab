/**
 * TS + TAB-Q: threshold splitting, then token-wise adaptive bit quantization.
 *
 * TS: every value with |x| > τ is taken out and sent exactly (float32, or float16 with outliers=f16) as
 * a sparse list of delta + LEB128-varint coded flat positions. τ comes from calibration (stored in the
 * plan), or `tau=auto` takes the q-quantile of |x| over a strided sample of the message, or `tau=none`.
 *
 * TAB-Q: each token of what remains is quantized asymmetrically, x̂ = min + q·scale with q in
 * [0, 2^b − 1], one (min, scale) pair per group of channels (whole token by default; tokens wider than
 * 4096 channels always split into groups of at most 4096), at a bit width b per token:
 *  - eps mode: the smallest b in {2,3,4,5,6,8} whose measured ‖x − x̂‖ / ‖x‖ ≤ ε (outliers count as
 *    exact); a constant token takes 0 bits; a token even 8 bits cannot fit is sent raw (float32), so the
 *    bound always holds;
 *  - budget mode: widths allocated across the tokens of the message to meet an average bits/value target
 *    (all but the 12-byte message header counted) at the least total estimated relative error, greedily
 *    by error reduction per bit;
 *  - fixed mode (`uniform:b`): every token at b bits, no threshold splitting.
 * min is rounded down and scale up to float16, so every value lands inside the grid.
 * The byte layout is in docs/FORMATS.md.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { f16BitsToF32, f16Down, f16Up, f32ToF16Bits } from '../../shared/tensor.js';
import type { Codec, CodecDefinition, Decoded, DecodeOptions } from './codec.js';
import { choiceParam, numParam, onlyParams, positionalParam, specError, type ParsedSpec } from './spec.js';
import { checkShape, corrupt, nonFinite, HEADER_BYTES, putVarint, Reader, readHeader, Writer, writeHeader } from './format.js';

/** this codec's wire id (header byte 3) */
export const TABQ_ID = 4;
import { normalize, RansDecoder, ransEncode, readTable, writeTable } from './rans.js';
import { wasmKernels, type WasmKernels } from './wasm/kernels.js';

export const WIDTHS = [0, 2, 3, 4, 5, 6, 8, 32] as const; // indexed by the 4-bit width code
const RUNGS = [2, 3, 4, 5, 6, 8];
const CODE_OF: Record<number, number> = { 0: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 8: 6, 32: 7 };
export const MAX_GROUP = 4096;
/** Largest threshold TS uses: min and (max − min)/3 of the rest then fit float16 (max 65504). */
export const F16_SAFE = 30000;

export type TabqMode = 'eps' | 'budget' | 'fixed';
const MODE_CODE: Record<TabqMode, number> = { eps: 0, budget: 1, fixed: 2 };

export interface TabqParams {
  mode: TabqMode;
  /** eps mode: per-token relative error bound */
  eps: number;
  /** budget mode: average bits per value; fixed mode: the width */
  bits: number;
  /** absolute threshold; Infinity = no threshold splitting; NaN = auto */
  tau: number;
  /** quantile for tau=auto */
  q: number;
  /** channels per (min, scale) group; 0 = whole token (capped at 4096) */
  group: number;
  outliers: 'f32' | 'f16';
  /** lossless rANS stage over the quantized values: off, on, or auto (when it makes the message smaller) */
  entropy: 'off' | 'on' | 'auto';
}

export const DEFAULT_TABQ: TabqParams = { mode: 'eps', eps: 0.05, bits: 4, tau: NaN, q: 0.999, group: 0, outliers: 'f32', entropy: 'off' };

function groupSize(group: number, dim: number): number {
  const g = group > 0 ? group : dim;
  return Math.min(g, MAX_GROUP, dim);
}

/** q-quantile of |x| over a strided sample of at most 4096 values. */
export function autoTau(x: Float32Array, q: number): number {
  const n = Math.min(x.length, 4096);
  const step = x.length / n;
  const s = new Float32Array(n);
  for (let i = 0; i < n; i++) s[i] = Math.abs(x[Math.floor(i * step)]!);
  s.sort();
  return s[Math.min(n - 1, Math.floor(q * n))]!;
}

export class TabqCodec implements Codec {
  readonly id = TABQ_ID;
  readonly lossless = false;
  readonly spec: string;

  constructor(
    readonly params: TabqParams,
    spec?: string,
  ) {
    this.spec = spec ?? tabqSpec(params);
  }

  encode(x: Float32Array, tokens: number, dim: number): Uint8Array {
    checkShape(x, tokens, dim);
    const p = this.params;
    // values past F16_SAFE always split off: group parameters must fit float16
    const tau = p.mode === 'fixed' ? Infinity : Math.min(F16_SAFE, Number.isNaN(p.tau) ? autoTau(x, p.q) : p.tau);
    const gs = groupSize(p.group, dim);
    const G = Math.ceil(dim / gs);

    // pass 1: outliers, per-group ranges of the rest, token norms (a non-finite norm flags NaN/Inf)
    const be: EncodeBackend = wasmKernels() ? new WasmEncode(wasmKernels()!, x, tokens, dim, G) : new JsEncode(x, tokens, dim, G);
    const { gmin, gmax, norm2, outl } = be.stats(tau, gs);
    for (let t = 0; t < tokens; t++) if (!Number.isFinite(norm2[t]!)) checkFinite(x.subarray(t * dim, (t + 1) * dim), dim, t);
    const nOut = outl.n;
    let outBytes = p.outliers === 'f16' ? 2 : 4;
    for (let i = 0; i < nOut && outBytes === 2; i++) if (Math.abs(outl.val[i]!) > 65504) outBytes = 4; // past the half range: this message sends float32

    const widths = new Uint8Array(tokens);
    if (p.mode === 'fixed') widths.fill(p.bits);
    else if (p.mode === 'budget') this.allocate(widths, gmin, gmax, norm2, tokens, dim, G, gs, nOut, outBytes, outl.pos);

    // pass 2: per token, quantize (choosing the width in eps mode) and pack into 32-bit words
    const hdr = new Uint16Array(tokens * G * 2); // (min, scale) float16 bits per group
    const wantEntropy = p.entropy !== 'off' && p.mode !== 'fixed';
    const symbols = wantEntropy ? new Uint8Array(tokens * dim) : undefined;
    let nSym = 0;
    let anyRaw = false;
    const target = (t: number) => p.eps * p.eps * norm2[t]!;
    for (let t = 0; t < tokens; t++) {
      let width = widths[t]!;
      if (p.mode === 'eps') {
        width = 32;
        let k = startRung(gmin, gmax, t, G, gs, dim, target(t));
        for (; k < RUNGS.length; k++) {
          if (quantizeToken(be, t, dim, G, gs, gmin, gmax, RUNGS[k]!, tau, hdr) <= target(t)) {
            width = RUNGS[k]!;
            break;
          }
        }
        widths[t] = width;
      } else if (quantizeToken(be, t, dim, G, gs, gmin, gmax, width, tau, hdr) === Infinity) {
        width = 32; // the range does not fit float16 parameters: send the token raw
        widths[t] = 32;
      }
      if (width === 32) {
        hdr.fill(0, t * G * 2, (t + 1) * G * 2);
        be.appendRaw(t);
        anyRaw = true;
      } else if (width > 0) {
        be.pack(width);
        if (symbols) {
          symbols.set(be.q(), nSym);
          nSym += dim;
        }
      }
    }
    const dense = be.dense();
    const nWords = dense.length;

    // assemble: header | params | widths | group headers | outliers | pad to 4 | dense words
    let prev = -1;
    let posBytes = 0;
    for (let i = 0; i < nOut; i++) {
      posBytes += varintLength(outl.pos[i]! - prev - 1);
      prev = outl.pos[i]!;
    }
    const groupField = p.group === 0 ? 0 : gs;
    const paramBytes = 1 + varintLength(groupField) + varintLength(nOut);
    const headBytes = HEADER_BYTES + paramBytes + Math.ceil(tokens / 2) + tokens * G * 4 + posBytes + nOut * outBytes;
    let denseAt = (headBytes + 3) & ~3;
    let entropyPart: Uint8Array | undefined;
    if (symbols && !anyRaw && nSym > 0) {
      const e = entropySection(symbols.subarray(0, nSym), widths, dim);
      if (p.entropy === 'on' || headBytes + e.length < denseAt + nWords * 4) {
        entropyPart = e;
        denseAt = headBytes;
      }
    }
    const out = new Uint8Array(entropyPart ? headBytes + entropyPart.length : denseAt + nWords * 4);
    writeHeader(out, this.id, tokens, dim);
    const v = new DataView(out.buffer);
    let o = HEADER_BYTES;
    out[o++] = MODE_CODE[p.mode] | (outBytes === 2 ? 4 : 0) | (entropyPart ? 8 : 0);
    o = putVarint(out, o, groupField);
    o = putVarint(out, o, nOut);
    for (let t = 0; t < tokens; t++) out[o + (t >> 1)] = out[o + (t >> 1)]! | CODE_OF[widths[t]!]! << (t & 1 ? 4 : 0);
    o += Math.ceil(tokens / 2);
    for (let i = 0; i < hdr.length; i++, o += 2) v.setUint16(o, hdr[i]!, true);
    prev = -1;
    for (let i = 0; i < nOut; i++) {
      o = putVarint(out, o, outl.pos[i]! - prev - 1);
      prev = outl.pos[i]!;
    }
    for (let i = 0; i < nOut; i++, o += outBytes) {
      if (outBytes === 4) v.setFloat32(o, outl.val[i]!, true);
      else v.setUint16(o, f32ToF16Bits(outl.val[i]!), true);
    }
    if (entropyPart) out.set(entropyPart, headBytes);
    else new Uint32Array(out.buffer, denseAt, nWords).set(dense.subarray(0, nWords));
    return out;
  }

  /**
   * Budget mode: greedy allocation of widths by estimated reduction of relative error (‖x − x̂‖² / ‖x‖²,
   * what the next layer's RMSNorm sees) per bit.
   */
  private allocate(
    widths: Uint8Array, gmin: Float32Array, gmax: Float32Array, norm2: Float64Array, tokens: number, dim: number, G: number, gs: number,
    nOut: number, outBytes: number, outPos: Int32Array,
  ): void {
    let posBytes = 0;
    let prev = -1;
    for (let i = 0; i < nOut; i++) {
      posBytes += varintLength(outPos[i]! - prev - 1);
      prev = outPos[i]!;
    }
    const fixedBits = 8 * (1 + varintLength(this.params.group) + varintLength(nOut) + 3 + Math.ceil(tokens / 2) + tokens * G * 4 + nOut * outBytes + posBytes);
    const wordsBits = (w: number) => 32 * Math.ceil((w * dim) / 32);
    let payload = this.params.bits * tokens * dim - fixedBits;
    const spread = new Float64Array(tokens);
    for (let t = 0; t < tokens; t++) spread[t] = norm2[t]! > 0 ? spreadOf(gmin, gmax, t, G, gs, dim) / norm2[t]! : 0;
    const level = new Uint8Array(tokens); // index into RUNGS
    widths.fill(RUNGS[0]!);
    payload -= wordsBits(RUNGS[0]!) * tokens;
    const errAt = (t: number, k: number) => spread[t]! / ((1 << RUNGS[k]!) - 1) ** 2;
    const heap = new MaxHeap();
    const push = (t: number) => {
      const k = level[t]!;
      if (k + 1 >= RUNGS.length || spread[t] === 0) return;
      heap.push((errAt(t, k) - errAt(t, k + 1)) / (wordsBits(RUNGS[k + 1]!) - wordsBits(RUNGS[k]!)), t);
    };
    for (let t = 0; t < tokens; t++) push(t);
    while (heap.size > 0) {
      const t = heap.pop();
      const k = level[t]!;
      const cost = wordsBits(RUNGS[k + 1]!) - wordsBits(RUNGS[k]!);
      if (cost > payload) continue; // does not fit; a cheaper step of another token may
      payload -= cost;
      level[t] = k + 1;
      widths[t] = RUNGS[k + 1]!;
      push(t);
    }
  }

  decode(bytes: Uint8Array, opts?: DecodeOptions): Decoded {
    const h = readHeader(bytes, opts?.maxValues);
    if (h.codec !== this.id) throw corrupt(`codec id ${h.codec} where tabq (${this.id}) was expected`);
    return decodeTabq(bytes, h.tokens, h.dim);
  }
}

/**
 * The entropy-coded form of the quantized values: u8 mask of the width codes present, per present width
 * 2^w varint frequencies (sum 4096), u32 stream length, the rANS stream over all tokens in order.
 */
function entropySection(symbols: Uint8Array, widths: Uint8Array, dim: number): Uint8Array {
  const counts = new Map<number, Uint32Array>();
  const runs: number[] = [];
  let o = 0;
  for (let t = 0; t < widths.length; t++) {
    const w = widths[t]!;
    if (w === 0) continue;
    let c = counts.get(w);
    if (!c) counts.set(w, (c = new Uint32Array(1 << w)));
    for (let i = 0; i < dim; i++) c[symbols[o + i]!]!++;
    o += dim;
    if (runs.length && runs[runs.length - 2] === w) runs[runs.length - 1]! += dim;
    else runs.push(w, dim);
  }
  const freqs: Uint16Array[] = [];
  const cums: Uint32Array[] = [];
  let mask = 0;
  const wr = new Writer(256);
  wr.u8(0);
  for (const w of [...counts.keys()].sort((a, b) => a - b)) {
    mask |= 1 << CODE_OF[w]!;
    const f = normalize(counts.get(w)!);
    writeTable(wr, f);
    const cum = new Uint32Array(f.length + 1);
    for (let i = 0; i < f.length; i++) cum[i + 1] = cum[i]! + f[i]!;
    freqs[w] = f;
    cums[w] = cum;
  }
  wr.buf[0] = mask;
  const stream = ransEncode(symbols, Int32Array.from(runs), freqs, cums);
  wr.u32(stream.length);
  wr.bytes(stream);
  return wr.finish();
}

function varintLength(d: number): number {
  return d < 0x80 ? 1 : d < 0x4000 ? 2 : d < 0x200000 ? 3 : d < 0x10000000 ? 4 : 5;
}

/** Throws E_CODEC_INPUT at the first NaN/Inf of x (token offset `t0` for the message). */
function checkFinite(x: Float32Array, dim: number, t0 = 0): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v - v !== 0) {
      throw new SplitLLMError('E_CODEC_INPUT', `hidden state holds ${Number.isNaN(v) ? 'NaN' : 'Inf'} at token ${t0 + Math.floor(i / dim)}, channel ${i % dim}: the model diverged; nothing was encoded`);
    }
  }
}

interface Outliers {
  pos: Int32Array;
  val: Float32Array;
  n: number;
}

/** Range of the non-outliers of one group into gmin/gmax[slot]; collects outliers; returns Σ x². */
function groupStats(x: Float32Array, c0: number, n: number, tau: number, gmin: Float32Array, gmax: Float32Array, slot: number, outl: Outliers): number {
  let mn = Infinity;
  let mx = -Infinity;
  let nrm = 0;
  const c1 = c0 + n;
  for (let c = c0; c < c1; c++) {
    const v = x[c]!;
    nrm += v * v;
    if (v > tau || v < -tau) {
      if (outl.n === outl.pos.length) {
        const np = new Int32Array(outl.n * 2);
        np.set(outl.pos);
        outl.pos = np;
        const nv = new Float32Array(outl.n * 2);
        nv.set(outl.val);
        outl.val = nv;
      }
      outl.pos[outl.n] = c;
      outl.val[outl.n++] = v;
    } else {
      if (v < mn) mn = v;
      if (v > mx) mx = v;
    }
  }
  if (mn === Infinity) mn = mx = 0; // the whole group is outliers
  gmin[slot] = mn;
  gmax[slot] = mx;
  return nrm;
}

/** Σ_g n_g · range_g²: the uniform-noise model puts the squared error at spread / (12 (2^b − 1)²). */
function spreadOf(gmin: Float32Array, gmax: Float32Array, t: number, G: number, gs: number, dim: number): number {
  let s = 0;
  for (let g = 0; g < G; g++) {
    const r = gmax[t * G + g]! - gmin[t * G + g]!;
    s += Math.min(gs, dim - g * gs) * r * r;
  }
  return s;
}

/** First rung to try in eps mode: the smallest whose modelled error is within 80% of the target. */
function startRung(gmin: Float32Array, gmax: Float32Array, t: number, G: number, gs: number, dim: number, target: number): number {
  const spread = spreadOf(gmin, gmax, t, G, gs, dim);
  let k = 0;
  while (k < RUNGS.length - 1 && spread / (12 * ((1 << RUNGS[k]!) - 1) ** 2) > 0.8 * target) k++;
  return k;
}

/**
 * Quantizes token t at `width` (0 = constant) into q, writing each group's (min, scale) float16 bits to
 * hdr; outlier slots get q = 0. Returns the squared error over the non-outliers (Infinity when the
 * group parameters do not fit float16 or width 0 cannot represent the group).
 */
function quantizeToken(
  be: EncodeBackend, t: number, dim: number, G: number, gs: number, gmin: Float32Array, gmax: Float32Array,
  width: number, tau: number, hdr: Uint16Array,
): number {
  const levels = width === 0 ? 0 : (1 << width) - 1;
  let err = 0;
  for (let g = 0; g < G; g++) {
    const lo = gmin[t * G + g]!;
    const hi = gmax[t * G + g]!;
    const mb = f16Down(lo);
    const mn = f16BitsToF32(mb);
    const sb = levels > 0 ? f16Up((hi - mn) / levels) : 0;
    const sc = f16BitsToF32(sb);
    hdr[(t * G + g) * 2] = mb;
    hdr[(t * G + g) * 2 + 1] = sb;
    if (!Number.isFinite(mn) || !Number.isFinite(sc) || (levels === 0 && hi > lo)) return Infinity;
    const c0 = g * gs;
    err += be.quantize(t, c0, Math.min(gs, dim - c0), mn, sc, levels, tau);
  }
  return err;
}

/** The hot loops of one encode: TypeScript, or the WebAssembly kernels. */
interface EncodeBackend {
  stats(tau: number, gs: number): { gmin: Float32Array; gmax: Float32Array; norm2: Float64Array; outl: Outliers };
  /** quantizes channels [c0, c0+n) of token t into the token scratch; returns the squared error */
  quantize(t: number, c0: number, n: number, mn: number, sc: number, levels: number, tau: number): number;
  /** the token scratch (q values of the last quantized token) */
  q(): Uint8Array;
  pack(width: number): void;
  appendRaw(t: number): void;
  dense(): Uint32Array;
}

class JsEncode implements EncodeBackend {
  private readonly qbuf: Uint8Array;
  private words: Uint32Array;
  private n = 0;
  constructor(
    private readonly x: Float32Array,
    private readonly tokens: number,
    private readonly dim: number,
    private readonly G: number,
  ) {
    this.qbuf = new Uint8Array(dim);
    this.words = new Uint32Array(Math.max(16, Math.ceil((tokens * dim * 5) / 32) + tokens));
  }
  stats(tau: number, gs: number) {
    const { x, tokens, dim, G } = this;
    const gmin = new Float32Array(tokens * G);
    const gmax = new Float32Array(tokens * G);
    const norm2 = new Float64Array(tokens);
    const outl = { pos: new Int32Array(256), val: new Float32Array(256), n: 0 };
    for (let t = 0; t < tokens; t++) {
      let nrm = 0;
      for (let g = 0; g < G; g++) nrm += groupStats(x, t * dim + g * gs, Math.min(gs, dim - g * gs), tau, gmin, gmax, t * G + g, outl);
      norm2[t] = nrm;
    }
    return { gmin, gmax, norm2, outl };
  }
  quantize(t: number, c0: number, n: number, mn: number, sc: number, levels: number, tau: number): number {
    return quantizeRun(this.x, t * this.dim + c0, this.qbuf, c0, n, mn, sc, levels, tau);
  }
  q(): Uint8Array {
    return this.qbuf;
  }
  private reserve(words: number): number {
    if (this.n + words > this.words.length) {
      const nd = new Uint32Array(Math.max(this.words.length * 2, this.n + words));
      nd.set(this.words.subarray(0, this.n));
      this.words = nd;
    }
    const at = this.n;
    this.n += words;
    return at;
  }
  pack(width: number): void {
    const at = this.reserve(Math.ceil((width * this.dim) / 32));
    pack(this.qbuf, this.dim, width, this.words, at);
  }
  appendRaw(t: number): void {
    const at = this.reserve(this.dim);
    this.words.set(new Uint32Array(this.x.buffer, this.x.byteOffset + t * this.dim * 4, this.dim), at);
  }
  dense(): Uint32Array {
    return this.words.subarray(0, this.n);
  }
}

class WasmEncode implements EncodeBackend {
  private readonly xp: number;
  private readonly qp: number;
  private readonly dp: number;
  private n = 0;
  constructor(
    private readonly k: WasmKernels,
    x: Float32Array,
    private readonly tokens: number,
    private readonly dim: number,
    private readonly G: number,
  ) {
    k.reset();
    const N = tokens * dim;
    this.xp = k.alloc(N * 4);
    this.qp = k.alloc(dim);
    this.dp = k.alloc((N + 2 * tokens) * 4);
    k.f32(this.xp, N).set(x);
  }
  stats(tau: number, gs: number) {
    const { k, tokens, dim, G } = this;
    const N = tokens * dim;
    const gminP = k.alloc(tokens * G * 4);
    const gmaxP = k.alloc(tokens * G * 4);
    const normP = k.alloc(tokens * 8);
    const posP = k.alloc(N * 4);
    const valP = k.alloc(N * 4);
    const n = k.fn.stats(this.xp, tokens, dim, gs, tau, gminP, gmaxP, normP, posP, valP);
    return {
      gmin: k.f32(gminP, tokens * G).slice(),
      gmax: k.f32(gmaxP, tokens * G).slice(),
      norm2: k.f64(normP, tokens).slice(),
      outl: { pos: k.i32(posP, n).slice(), val: k.f32(valP, n).slice(), n },
    };
  }
  quantize(t: number, c0: number, n: number, mn: number, sc: number, levels: number, tau: number): number {
    return this.k.fn.quantize(this.xp + (t * this.dim + c0) * 4, n, mn, sc, levels, tau, this.qp + c0);
  }
  q(): Uint8Array {
    return new Uint8Array(this.k.buffer, this.qp, this.dim);
  }
  pack(width: number): void {
    this.n += this.k.fn.pack(this.qp, this.dim, width, this.dp + this.n * 4);
  }
  appendRaw(t: number): void {
    this.k.u32(this.dp + this.n * 4, this.dim).set(new Uint32Array(this.k.buffer, this.xp + t * this.dim * 4, this.dim));
    this.n += this.dim;
  }
  dense(): Uint32Array {
    return this.k.u32(this.dp, this.n);
  }
}

function quantizeRun(x: Float32Array, xo: number, q: Uint8Array, qo: number, n: number, mn: number, sc: number, levels: number, tau: number): number {
  const inv = sc > 0 ? 1 / sc : 0;
  let err = 0;
  for (let c = 0; c < n; c++) {
    const v = x[xo + c]!;
    if (v > tau || v < -tau) {
      q[qo + c] = 0;
      continue;
    }
    let qi = ((v - mn) * inv + 0.5) | 0;
    if (qi > levels) qi = levels;
    q[qo + c] = qi;
    const d = v - (mn + qi * sc);
    err += d * d;
  }
  return err;
}

/** Packs n values of `w` bits (w ≤ 8) little-endian into words starting at out[wo]; the last word is zero-padded. */
function pack(q: Uint8Array, n: number, w: number, out: Uint32Array, wo: number): void {
  if (w === 4) {
    let c = 0;
    for (; c + 8 <= n; c += 8) {
      out[wo++] = (q[c]! | (q[c + 1]! << 4) | (q[c + 2]! << 8) | (q[c + 3]! << 12) | (q[c + 4]! << 16) | (q[c + 5]! << 20) | (q[c + 6]! << 24) | (q[c + 7]! << 28)) >>> 0;
    }
    if (c < n) {
      let word = 0;
      for (let k = 0; c < n; c++, k += 4) word |= q[c]! << k;
      out[wo] = word >>> 0;
    }
    return;
  }
  if (w === 8) {
    let c = 0;
    for (; c + 4 <= n; c += 4) out[wo++] = (q[c]! | (q[c + 1]! << 8) | (q[c + 2]! << 16) | (q[c + 3]! << 24)) >>> 0;
    if (c < n) {
      let word = 0;
      for (let k = 0; c < n; c++, k += 8) word |= q[c]! << k;
      out[wo] = word >>> 0;
    }
    return;
  }
  let cur = 0;
  let s = 0;
  for (let c = 0; c < n; c++) {
    const v = q[c]!;
    cur |= v << s;
    s += w;
    if (s >= 32) {
      out[wo++] = cur >>> 0;
      s -= 32;
      cur = s > 0 ? v >>> (w - s) : 0;
    }
  }
  if (s > 0) out[wo] = cur >>> 0;
}

/** Dequantizes n values of `w` bits from words starting at bit `bit0` of in[wo]: x = mn + q·sc. */
function unpackRun(inp: Uint32Array, wo: number, bit0: number, n: number, w: number, mn: number, sc: number, x: Float32Array, xo: number): void {
  let c = 0;
  if (w === 4 && bit0 === 0) {
    for (; c + 8 <= n; c += 8) {
      const v = inp[wo++]!;
      x[xo + c] = mn + (v & 15) * sc;
      x[xo + c + 1] = mn + ((v >>> 4) & 15) * sc;
      x[xo + c + 2] = mn + ((v >>> 8) & 15) * sc;
      x[xo + c + 3] = mn + ((v >>> 12) & 15) * sc;
      x[xo + c + 4] = mn + ((v >>> 16) & 15) * sc;
      x[xo + c + 5] = mn + ((v >>> 20) & 15) * sc;
      x[xo + c + 6] = mn + ((v >>> 24) & 15) * sc;
      x[xo + c + 7] = mn + (v >>> 28) * sc;
    }
    bit0 = 0;
  } else if (w === 8 && bit0 === 0) {
    for (; c + 4 <= n; c += 4) {
      const v = inp[wo++]!;
      x[xo + c] = mn + (v & 255) * sc;
      x[xo + c + 1] = mn + ((v >>> 8) & 255) * sc;
      x[xo + c + 2] = mn + ((v >>> 16) & 255) * sc;
      x[xo + c + 3] = mn + (v >>> 24) * sc;
    }
  } else if (w === 2 && bit0 === 0) {
    for (; c + 16 <= n; c += 16) {
      let v = inp[wo++]!;
      for (let k = 0; k < 16; k++, v >>>= 2) x[xo + c + k] = mn + (v & 3) * sc;
    }
  }
  if (c === n) return;
  const mask = (1 << w) - 1;
  let s = bit0;
  let cur = inp[wo]!;
  for (; c < n; c++) {
    let v = cur >>> s;
    s += w;
    if (s >= 32) {
      s -= 32;
      cur = wo + 1 < inp.length ? inp[++wo]! : 0;
      if (s > 0) v |= cur << (w - s);
    }
    x[xo + c] = mn + (v & mask) * sc;
  }
}

class MaxHeap {
  private keys: number[] = [];
  private vals: number[] = [];
  get size(): number {
    return this.keys.length;
  }
  push(key: number, val: number): void {
    const k = this.keys;
    const v = this.vals;
    k.push(key);
    v.push(val);
    let i = k.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (k[p]! >= k[i]!) break;
      [k[p], k[i]] = [k[i]!, k[p]!];
      [v[p], v[i]] = [v[i]!, v[p]!];
      i = p;
    }
  }
  pop(): number {
    const k = this.keys;
    const v = this.vals;
    const top = v[0]!;
    const lk = k.pop()!;
    const lv = v.pop()!;
    if (k.length > 0) {
      k[0] = lk;
      v[0] = lv;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < k.length && k[l]! > k[m]!) m = l;
        if (r < k.length && k[r]! > k[m]!) m = r;
        if (m === i) break;
        [k[m], k[i]] = [k[i]!, k[m]!];
        [v[m], v[i]] = [v[i]!, v[m]!];
        i = m;
      }
    }
    return top;
  }
}

export function decodeTabq(bytes: Uint8Array, tokens: number, dim: number): Decoded {
  const r = new Reader(bytes, HEADER_BYTES);
  const head = r.u8();
  if ((head & 3) > 2 || head > 15) throw corrupt(`tabq mode byte ${head} is unknown`);
  const flags = head >> 2; // bit 0: half outliers, bit 1: entropy-coded values
  const group = r.varint();
  if (group > dim) throw corrupt(`group size ${group} exceeds the dim ${dim}`);
  const gs = groupSize(group, dim);
  const G = Math.ceil(dim / gs);
  const N = tokens * dim;
  const nOut = r.varint();
  const outBytes = flags & 1 ? 2 : 4;
  if (nOut > N || nOut * (1 + outBytes) > r.remaining) throw corrupt(`${nOut} outliers cannot fit in ${r.remaining} bytes`);
  const wbytes = r.take(Math.ceil(tokens / 2), 'token widths');
  const widths = new Uint8Array(tokens);
  let nWords = 0;
  for (let t = 0; t < tokens; t++) {
    const code = (wbytes[t >> 1]! >> (t & 1 ? 4 : 0)) & 15;
    if (code >= WIDTHS.length) throw corrupt(`token ${t} has width code ${code}`);
    widths[t] = WIDTHS[code]!;
    nWords += Math.ceil((widths[t]! * dim) / 32);
  }
  const hdr = r.take(tokens * G * 4, 'group headers');
  const hv = new DataView(hdr.buffer, hdr.byteOffset, hdr.byteLength);
  const pos = new Int32Array(nOut);
  let prev = -1;
  for (let i = 0; i < nOut; i++) {
    const p = prev + 1 + r.varint();
    if (p >= N) throw corrupt(`outlier position ${p} is past the ${N} values`);
    pos[i] = p;
    prev = p;
  }
  const vals = r.take(nOut * outBytes, 'outlier values');
  const vv = new DataView(vals.buffer, vals.byteOffset, vals.byteLength);
  if (flags & 2) {
    const x = decodeEntropy(r, widths, tokens, dim, G, gs, hv);
    for (let i = 0; i < nOut; i++) {
      const v = outBytes === 4 ? vv.getFloat32(i * 4, true) : f16BitsToF32(vv.getUint16(i * 2, true));
      if (v - v !== 0) throw nonFinite(`outlier ${i} is not finite`);
      x[pos[i]!] = v;
    }
    return { x, tokens, dim };
  }
  const pad = r.take((4 - (r.pos & 3)) & 3, 'alignment');
  if (pad.some((b) => b !== 0)) throw corrupt('alignment padding is not zero');
  const denseBytes = r.take(nWords * 4, 'quantized values');
  r.end();
  const dense =
    (denseBytes.byteOffset & 3) === 0
      ? new Uint32Array(denseBytes.buffer, denseBytes.byteOffset, nWords)
      : new Uint32Array(Uint8Array.from(denseBytes).buffer);

  const k = wasmKernels();
  const x = k ? unpackWasm(k, dense, widths, tokens, dim, G, gs, hv) : new Float32Array(N);
  let wo = 0;
  for (let t = 0; t < tokens && !k; t++) {
    const width = widths[t]!;
    const base = t * dim;
    if (width === 32) {
      x.set(new Float32Array(dense.buffer, dense.byteOffset + wo * 4, dim), base);
      for (let c = 0; c < dim; c++) if (x[base + c]! - x[base + c]! !== 0) throw nonFinite(`raw value at token ${t} is not finite`);
    } else {
      for (let g = 0; g < G; g++) {
        const mn = f16BitsToF32(hv.getUint16((t * G + g) * 4, true));
        const sc = f16BitsToF32(hv.getUint16((t * G + g) * 4 + 2, true));
        if (!Number.isFinite(mn) || !Number.isFinite(sc)) throw nonFinite(`token ${t} group ${g} has min ${mn}, scale ${sc}`);
        if (sc < 0) throw corrupt(`token ${t} group ${g} has a negative scale ${sc}`);
        const c0 = g * gs;
        const n = Math.min(gs, dim - c0);
        if (width === 0) x.fill(mn, base + c0, base + c0 + n);
        else {
          const bit = c0 * width;
          unpackRun(dense, wo + (bit >>> 5), bit & 31, n, width, mn, sc, x, base + c0);
        }
      }
    }
    wo += Math.ceil((width * dim) / 32);
  }
  for (let i = 0; i < nOut; i++) {
    const v = outBytes === 4 ? vv.getFloat32(i * 4, true) : f16BitsToF32(vv.getUint16(i * 2, true));
    if (v - v !== 0) throw nonFinite(`outlier ${i} is not finite`);
    x[pos[i]!] = v;
  }
  return { x, tokens, dim };
}

/** The packed form's values through the WebAssembly kernels (raw tokens copied and checked in TypeScript). */
function unpackWasm(k: WasmKernels, dense: Uint32Array, widths: Uint8Array, tokens: number, dim: number, G: number, gs: number, hv: DataView): Float32Array {
  k.reset();
  const N = tokens * dim;
  const dp = k.alloc(dense.length * 4);
  const xp = k.alloc(N * 4);
  k.u32(dp, dense.length).set(dense);
  let wo = 0;
  for (let t = 0; t < tokens; t++) {
    const width = widths[t]!;
    const base = t * dim;
    if (width === 32) {
      const raw = k.f32(dp + wo * 4, dim);
      for (let c = 0; c < dim; c++) if (raw[c]! - raw[c]! !== 0) throw nonFinite(`raw value at token ${t} is not finite`);
      k.f32(xp + base * 4, dim).set(raw);
    } else {
      for (let g = 0; g < G; g++) {
        const [mn, sc] = groupParams(hv, t, g, G);
        const c0 = g * gs;
        const n = Math.min(gs, dim - c0);
        if (width === 0) k.f32(xp + (base + c0) * 4, n).fill(mn);
        else k.fn.unpack(dp + wo * 4, c0 * width, n, width, mn, sc, xp + (base + c0) * 4);
      }
    }
    wo += Math.ceil((width * dim) / 32);
  }
  return k.f32(xp, N).slice();
}

function groupParams(hv: DataView, t: number, g: number, G: number): [number, number] {
  const mn = f16BitsToF32(hv.getUint16((t * G + g) * 4, true));
  const sc = f16BitsToF32(hv.getUint16((t * G + g) * 4 + 2, true));
  if (!Number.isFinite(mn) || !Number.isFinite(sc)) throw nonFinite(`token ${t} group ${g} has min ${mn}, scale ${sc}`);
  if (sc < 0) throw corrupt(`token ${t} group ${g} has a negative scale ${sc}`);
  return [mn, sc];
}

function decodeEntropy(r: Reader, widths: Uint8Array, tokens: number, dim: number, G: number, gs: number, hv: DataView): Float32Array {
  const mask = r.u8();
  const tables = new Map<number, ReturnType<typeof readTable>>();
  for (let code = 1; code < WIDTHS.length - 1; code++) if (mask & (1 << code)) tables.set(WIDTHS[code]!, readTable(r, 1 << WIDTHS[code]!));
  if (mask & ~0x7e) throw corrupt(`entropy table mask ${mask} names unknown widths`);
  const len = r.u32();
  const dec = new RansDecoder(r.take(len, 'entropy stream'));
  r.end();
  const x = new Float32Array(tokens * dim);
  const q = new Uint8Array(dim);
  for (let t = 0; t < tokens; t++) {
    const w = widths[t]!;
    const base = t * dim;
    if (w === 32) throw corrupt('raw tokens cannot be entropy coded');
    if (w > 0) {
      const table = tables.get(w);
      if (!table) throw corrupt(`no entropy table for width ${w}`);
      dec.decode(q, 0, dim, table);
    }
    for (let g = 0; g < G; g++) {
      const [mn, sc] = groupParams(hv, t, g, G);
      const c0 = g * gs;
      const c1 = Math.min(dim, c0 + gs);
      if (w === 0) x.fill(mn, base + c0, base + c1);
      else for (let c = c0; c < c1; c++) x[base + c] = mn + q[c]! * sc;
    }
  }
  dec.finish();
  return x;
}

export function tabqSpec(p: TabqParams): string {
  if (p.mode === 'fixed') return `uniform:${p.bits}`;
  const parts = [p.mode === 'eps' ? `eps=${p.eps}` : `budget=${p.bits}`];
  parts.push(`tau=${Number.isNaN(p.tau) ? 'auto' : p.tau === Infinity ? 'none' : p.tau}`);
  if (Number.isNaN(p.tau) && p.q !== DEFAULT_TABQ.q) parts.push(`q=${p.q}`);
  if (p.group) parts.push(`group=${p.group}`);
  if (p.outliers !== 'f32') parts.push(`outliers=${p.outliers}`);
  if (p.entropy !== 'off') parts.push(`entropy=${p.entropy}`);
  return `ts-tabq:${parts.join(',')}`;
}

export function validateTabq(p: TabqParams, spec: string): TabqParams {
  const bad = (why: string): never => {
    throw new SplitLLMError('E_CODEC_SPEC', `codec "${spec}": ${why}`);
  };
  if (p.mode === 'eps' && !(p.eps > 0 && p.eps < 1)) bad(`eps must be in (0, 1), got ${p.eps}`);
  if (p.mode === 'budget' && !(p.bits >= 2 && p.bits <= 32)) bad(`budget must be between 2 and 32 bits per value, got ${p.bits}`);
  if (p.mode === 'fixed' && !RUNGS.includes(p.bits)) bad(`bits must be one of ${RUNGS.join(', ')}, got ${p.bits}`);
  if (!Number.isNaN(p.tau) && !(p.tau > 0)) bad(`tau must be positive, "auto" or "none", got ${p.tau}`);
  if (!(p.q > 0 && p.q < 1)) bad(`q must be in (0, 1), got ${p.q}`);
  if (!Number.isInteger(p.group) || p.group < 0) bad(`group must be a non-negative integer, got ${p.group}`);
  if (p.outliers !== 'f32' && p.outliers !== 'f16') bad(`outliers must be f32 or f16, got ${p.outliers}`);
  if (!['off', 'on', 'auto'].includes(p.entropy)) bad(`entropy must be off, on or auto, got ${p.entropy}`);
  return p;
}

/** The parameters of a self-contained `ts-tabq:…` spec. */
export function tabqParamsFrom(p: ParsedSpec): TabqParams {
  onlyParams(p, ['eps', 'budget', 'tau', 'q', 'group', 'outliers', 'entropy']);
  if (p.arg !== undefined) throw specError(p, 'use named parameters, e.g. ts-tabq:eps=0.05');
  if (p.params.has('eps') && p.params.has('budget')) throw specError(p, 'give eps or budget, not both');
  const tauRaw = p.params.get('tau');
  const tau = tauRaw === undefined || tauRaw === 'auto' ? NaN : tauRaw === 'none' ? Infinity : numParam(p, 'tau')!;
  const budget = numParam(p, 'budget');
  return validateTabq(
    {
      mode: budget !== undefined ? 'budget' : 'eps',
      eps: numParam(p, 'eps') ?? DEFAULT_TABQ.eps,
      bits: budget ?? DEFAULT_TABQ.bits,
      tau,
      q: numParam(p, 'q') ?? DEFAULT_TABQ.q,
      group: numParam(p, 'group') ?? 0,
      outliers: choiceParam(p, 'outliers', ['f32', 'f16'], 'f32'),
      entropy: choiceParam(p, 'entropy', ['off', 'on', 'auto'], 'off'),
    },
    p.spec,
  );
}

/** TS + TAB-Q, self-contained (every message carries its own ranges). */
export const tabqDefinition: CodecDefinition = {
  names: ['ts-tabq', 'tstabq'],
  summary: 'ts-tabq:eps=E|budget=B[,tau=T|auto|none] — threshold split (outliers exact) + token-wise adaptive bits',
  decodes: [TABQ_ID],
  create: (p) => new TabqCodec(tabqParamsFrom(p)),
  decode: (bytes, h) => decodeTabq(bytes, h.tokens, h.dim),
  // a bare `ts-tabq` means the split's calibrated codec. A model without any calibration gets an error, not
  // a quiet fall back to the uncalibrated eps mode (which loses far more accuracy on a new model); a split
  // the calibration did not cover (0, L, one left out by `calibrate --splits`) takes the self-contained default
  atSplit: (p, split, env) => {
    if (p.arg !== undefined || p.params.size > 0) return undefined;
    const chosen = env.defaultCodec?.(split);
    if (chosen === undefined && env.calibrated) return undefined;
    if (chosen === undefined) {
      throw new SplitLLMError(
        'E_CODEC_SPEC',
        `a bare ts-tabq means the model's calibrated codec, and no calibration is loaded (asked at split ${split}): run 'splitllm calibrate --model M --text CALIB.txt' (it writes calibration.json into the package), pass --calibration FILE, or give the codec's parameters (ts-tabq:eps=0.05)`,
      );
    }
    return chosen;
  },
};

/** uniform:B — TAB-Q at one fixed width for every token, no threshold split (a baseline). */
export const uniformDefinition: CodecDefinition = {
  names: ['uniform'],
  summary: 'uniform:B quantizes every token at B bits over its own range (no outlier split)',
  decodes: [],
  create: (p) => new TabqCodec(validateTabq({ ...DEFAULT_TABQ, mode: 'fixed', bits: positionalParam(p, 'bits'), tau: Infinity }, p.spec)),
  decode: (bytes, h) => decodeTabq(bytes, h.tokens, h.dim),
};

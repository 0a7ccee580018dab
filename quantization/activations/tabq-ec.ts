/**
 * ts-tabq against a calibrated context (`ts-tabq:cal=K,…`): TS + TAB-Q with the quantized values
 * entropy-coded by static prefix codes that the edge and the cloud both derive from the split's
 * calibration (quantization/activations/context.ts), so a message carries no tables and no per-token
 * ranges.
 *
 * Per channel, y = (x − center) / scale (calibrated). TS: a value whose level |q| would pass the table's
 * largest level (τ in units of y, capped at 127 levels) is taken out and sent exactly, as a sparse list.
 * TAB-Q: each token is quantized uniformly, q = round(y / Δ), at a step Δ from an eighth-octave ladder:
 *  - eps mode: per token, the coarsest step whose ‖x − x̂‖ / ‖x‖ ≤ ε (outliers exact); a token no step
 *    fits (an all-zero token, say) is sent raw as float32, so the bound always holds;
 *  - step mode (`step=Δ`): one step for every token, |x − x̂| ≤ Δ·scale/2 per value. With entropy coding,
 *    equal steps are what minimizes the total squared error for the bits: the bits still adapt per token
 *    (a token far from the calibrated distribution costs more).
 * The byte layout is in docs/FORMATS.md.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { f16BitsToF32, f32ToF16Bits } from '../../shared/tensor.js';
import type { Codec, CodecDefinition, Decoded, DecodeOptions } from './codec.js';
import { choiceParam, numParam, onlyParams, specError, type ParsedSpec } from './spec.js';
import { CodecContext, contextMissing, rungBelow, rungNearest, rungStep, RUNGS, type ContextSet, type RungTable } from './context.js';
import { checkInput, checkShape, corrupt, HEADER_BYTES, nonFinite, putVarint, Reader, readHeader, writeHeader } from './format.js';

/** this codec's wire id (header byte 3) */
export const TABQ_EC_ID = 7;
import { wasmKernels, type WasmKernels } from './wasm/kernels.js';

export type TabqEcMode = 'eps' | 'step';

export interface TabqEcParams {
  /** the split whose calibration this codec uses (spec only: the context itself is given) */
  cal: number;
  mode: TabqEcMode;
  eps: number;
  /** step mode: the step in units of y */
  step: number;
  /** outlier threshold in units of y, a multiple of 1/4 up to 63.5; Infinity = only the 127-level cap */
  tau: number;
  outliers: 'f32' | 'f16';
}

export const DEFAULT_TABQ_EC: Omit<TabqEcParams, 'cal'> = { mode: 'eps', eps: 0.08, step: 0.3, tau: 6, outliers: 'f32' };

const MODE_CODE: Record<TabqEcMode, number> = { eps: 0, step: 1 };
const RAW = 15;
/** token rung codes are offsets 0..14 from the message's base rung */
const SPAN = 14;

/** τ as its u8 code: quarters of a unit of y; 255 = no threshold (the 127-level cap only). */
export function tauCode(tau: number): number {
  return tau === Infinity ? 255 : Math.max(1, Math.min(254, Math.round(tau * 4)));
}
function tauOf(code: number): number {
  return code === 255 ? Infinity : code / 4;
}

/** A token within this relative distance of the calibrated sink state is sent as a reference to it. */
export const SINK_TOLERANCE = 1e-4;

export function tabqEcSpec(p: TabqEcParams): string {
  const parts = [`cal=${p.cal}`, p.mode === 'eps' ? `eps=${p.eps}` : `step=${+rungStep(rungNearest(p.step)).toPrecision(4)}`];
  parts.push(`tau=${p.tau === Infinity ? 'none' : tauOf(tauCode(p.tau))}`);
  if (p.outliers === 'f16') parts.push('outliers=f16');
  return `ts-tabq:${parts.join(',')}`;
}

export class TabqEcCodec implements Codec {
  readonly id = TABQ_EC_ID;
  readonly lossless = false;
  readonly spec: string;
  private readonly contexts: ContextSet;

  constructor(
    readonly params: TabqEcParams,
    readonly context: CodecContext,
  ) {
    if (!(params.eps > 0 && params.eps < 1) && params.mode === 'eps') throw new SplitLLMError('E_CODEC_SPEC', `ts-tabq eps must be in (0, 1), got ${params.eps}`);
    if (!(params.step > 0) && params.mode === 'step') throw new SplitLLMError('E_CODEC_SPEC', `ts-tabq step must be positive, got ${params.step}`);
    if (!(params.tau > 0)) throw new SplitLLMError('E_CODEC_SPEC', `ts-tabq tau must be positive, got ${params.tau}`);
    this.spec = tabqEcSpec(params);
    this.contexts = new Map([[context.id, context]]);
  }

  encode(x: Float32Array, tokens: number, dim: number): Uint8Array {
    // layout: docs/FORMATS.md
    const k = wasmKernels();
    if (k) checkShape(x, tokens, dim); // the kernels check finiteness as they copy x in
    else checkInput(x, tokens, dim);
    const ctx = this.context;
    if (dim !== ctx.dim) throw new SplitLLMError('E_CODEC_INPUT', `hidden state has dim ${dim}, the calibration context of split ${this.params.cal} has ${ctx.dim}: calibrate this model`);
    const sink = isSink(x, dim, ctx);
    const p = this.params;
    const tc = tauCode(p.tau);
    const tau = tauOf(tc);
    const half = p.outliers === 'f16';
    const be: EcEncoder = k ? new WasmEcEncoder(k, x, tokens, dim, ctx) : new JsEcEncoder(x, tokens, dim, ctx);
    // squared error of token t at rung r, outliers counted exact (or at their float16 rounding)
    const errAt = (t: number, r: number): number => {
      const e2 = be.quant(t, ctx.table(r, tau), true);
      if (!half || be.outliers === 0) return e2;
      let extra = 0;
      for (const c of be.outList()) {
        const v = x[t * dim + c]!;
        extra += (v - f16BitsToF32(f32ToF16Bits(v))) ** 2;
      }
      return e2 + extra;
    };
    // pass 1: a rung per token
    const rungs = new Uint8Array(tokens);
    const fixed = p.mode === 'step' ? rungNearest(p.step) : -1;
    let minRung = RUNGS;
    let nRaw = 0;
    for (let t = sink ? 1 : 0; t < tokens; t++) {
      let r = fixed;
      if (r < 0) {
        let n2 = 0;
        for (let c = t * dim, e = c + dim; c < e; c++) n2 += x[c]! * x[c]!;
        r = n2 === 0 ? RAW_RUNG : chooseRung(p.eps * p.eps * n2, ctx.scale2, (rr) => errAt(t, rr));
      }
      rungs[t] = r;
      if (r !== RAW_RUNG && r < minRung) minRung = r;
      if (r === RAW_RUNG) nRaw++;
    }
    const base = minRung === RUNGS ? 0 : minRung;
    be.start(lanesFor((tokens - nRaw - (sink ? 1 : 0)) * dim));
    // pass 2: each token at its rung into the bit stream; outliers aside
    const outPos: number[] = [];
    const outVal: number[] = [];
    const codes = new Uint8Array(tokens);
    for (let t = sink ? 1 : 0; t < tokens; t++) {
      let r = rungs[t]!;
      if (r !== RAW_RUNG && r - base > SPAN) r = base + SPAN; // finer than chosen: the bound still holds
      if (r === RAW_RUNG) {
        codes[t] = RAW;
        continue;
      }
      codes[t] = r - base;
      const tab = ctx.table(r, tau);
      be.quant(t, tab, false);
      if (be.outliers > 0) {
        for (const c of be.outList()) {
          outPos.push(t * dim + c);
          outVal.push(x[t * dim + c]!);
        }
      }
      be.write(tab);
    }
    const streams = be.finish();
    let streamBytes = 0;
    for (const st of streams) streamBytes += st.length;
    // the message
    const uniform = fixed >= 0;
    const out = new Uint8Array(HEADER_BYTES + 40 + Math.ceil(tokens / 2) + outPos.length * 9 + streamBytes + nRaw * dim * 4);
    writeHeader(out, this.id, tokens, dim);
    const view = new DataView(out.buffer);
    let o = HEADER_BYTES;
    view.setUint32(o, ctx.id, true);
    o += 4;
    const halfOut = half && outVal.every((v) => Math.abs(v) <= 65504); // past the half range: this message sends float32
    out[o++] = MODE_CODE[p.mode] | (halfOut ? 4 : 0) | (uniform ? 8 : 0) | (sink ? 16 : 0);
    out[o++] = base;
    out[o++] = tc;
    o = putVarint(out, o, outPos.length);
    if (!uniform) {
      for (let t = 0; t < tokens; t++) out[o + (t >> 1)] = out[o + (t >> 1)]! | (codes[t]! << (t & 1 ? 4 : 0));
      o += Math.ceil(tokens / 2);
    }
    let prev = -1;
    for (const pos of outPos) {
      o = putVarint(out, o, pos - prev - 1);
      prev = pos;
    }
    for (const v of outVal) {
      if (halfOut) {
        view.setUint16(o, f32ToF16Bits(v), true);
        o += 2;
      } else {
        view.setFloat32(o, v, true);
        o += 4;
      }
    }
    for (const st of streams) o = putVarint(out, o, st.length);
    for (const st of streams) {
      out.set(st, o);
      o += st.length;
    }
    if (nRaw > 0) {
      for (let t = 0; t < tokens; t++) {
        if (codes[t] !== RAW) continue;
        for (let c = t * dim, e = c + dim; c < e; c++, o += 4) view.setFloat32(o, x[c]!, true);
      }
    }
    return out.slice(0, o);
  }

  decode(bytes: Uint8Array, opts?: DecodeOptions): Decoded {
    const h = readHeader(bytes, opts?.maxValues);
    if (h.codec !== this.id) throw corrupt(`codec id ${h.codec} where ts-tabq with a calibration context (${this.id}) was expected`);
    return decodeTabqEc(bytes, h.tokens, h.dim, opts?.contexts ?? this.contexts);
  }
}

const OUT = 0x7fffffff;

/** Whether the first token is the calibrated sink state (within SINK_TOLERANCE of its norm). */
function isSink(x: Float32Array, dim: number, ctx: CodecContext): boolean {
  const s = ctx.sink;
  if (!s) return false;
  let d2 = 0;
  let n2 = 0;
  for (let c = 0; c < dim; c++) {
    d2 += (x[c]! - s[c]!) ** 2;
    n2 += x[c]! * x[c]!;
  }
  return d2 <= SINK_TOLERANCE * SINK_TOLERANCE * n2;
}
const RAW_RUNG = 255;

/** eps mode: the coarsest rung whose error fits the target, searched from the uniform-noise estimate. */
function chooseRung(target: number, scale2: number, errAt: (r: number) => number): number {
  const fits = (r: number) => errAt(r) <= target;
  let r = Math.min(RUNGS - 1, rungBelow(Math.sqrt((12 * target) / scale2)));
  if (fits(r)) {
    while (r + 1 < RUNGS && fits(r + 1)) r++;
    return r;
  }
  while (--r >= 0) if (fits(r)) return r;
  return RAW_RUNG;
}

/** Quantizes tokens at a rung and prefix-codes them: TypeScript loops or the WebAssembly kernels. */
interface EcEncoder {
  /** levels of token t at this table; with needErr returns Σ (x − x̂)² over the non-outliers */
  quant(t: number, tab: RungTable, needErr: boolean): number;
  /** outliers of the last quant, and their channels */
  outliers: number;
  outList(): Int32Array;
  /** appends the codes of the last quant (outlier slots as level 0) */
  write(tab: RungTable): void;
  /** before the first write: the number of lanes */
  start(lanes: number): void;
  /** the lanes' streams */
  finish(): Uint8Array[];
}

/** Messages with at least this many coded values split them over 4 interleaved streams (lanes). */
export const LANES_MIN = 1024;
export function lanesFor(coded: number): number {
  return coded >= LANES_MIN ? 4 : 1;
}

class JsEcEncoder implements EcEncoder {
  outliers = 0;
  private readonly qv: Int32Array;
  private readonly out: Int32Array;
  private streams: Uint8Array[] = [];
  private sp: number[] = [];
  private acc: number[] = [];
  private nacc: number[] = [];
  private lanes = 1;
  private phase = 0;
  constructor(
    private readonly x: Float32Array,
    private readonly tokens: number,
    private readonly dim: number,
    private readonly ctx: CodecContext,
  ) {
    this.qv = new Int32Array(dim);
    this.out = new Int32Array(dim);
  }
  start(lanes: number): void {
    this.lanes = lanes;
    const cap = Math.ceil((this.tokens * this.dim * 1.5) / lanes) + 8;
    this.streams = Array.from({ length: lanes }, () => new Uint8Array(cap));
    this.sp = new Array<number>(lanes).fill(0);
    this.acc = new Array<number>(lanes).fill(0);
    this.nacc = new Array<number>(lanes).fill(0);
  }
  quant(t: number, tab: RungTable, needErr: boolean): number {
    const { x, dim, ctx, qv } = this;
    const off = t * dim;
    const inv = 1 / tab.step;
    const M = tab.maxLevel;
    const center = ctx.center;
    const invScale = ctx.invScale;
    const mult = multipliers(ctx, tab);
    let e2 = 0;
    let n = 0;
    for (let c = 0; c < dim; c++) {
      const v = x[off + c]!;
      const lv = Math.floor((v - center[c]!) * invScale[c]! * inv + 0.5);
      if (lv > M || lv < -M) {
        qv[c] = OUT;
        this.out[n++] = c;
        continue;
      }
      qv[c] = lv;
      if (needErr) {
        const d = v - Math.fround(center[c]! + Math.fround(lv * mult[c]!));
        e2 += d * d;
      }
    }
    this.outliers = n;
    return e2;
  }
  outList(): Int32Array {
    return this.out.subarray(0, this.outliers);
  }
  write(tab: RungTable): void {
    const { qv, dim, lanes } = this;
    const M = tab.maxLevel;
    for (let c = 0; c < dim; c++) {
      const lv = qv[c] === OUT ? 0 : qv[c]!;
      const L = this.phase;
      this.phase = (L + 1) % lanes;
      let acc = this.acc[L]! | (tab.code[lv + M]! << this.nacc[L]!);
      let nacc = this.nacc[L]! + tab.len[lv + M]!;
      const st = this.streams[L]!;
      while (nacc >= 8) {
        st[this.sp[L]!++] = acc & 0xff;
        acc >>>= 8;
        nacc -= 8;
      }
      this.acc[L] = acc;
      this.nacc[L] = nacc;
    }
  }
  finish(): Uint8Array[] {
    return this.streams.map((st, L) => {
      if (this.nacc[L]! > 0) st[this.sp[L]!++] = this.acc[L]! & 0xff;
      return st.subarray(0, this.sp[L]!);
    });
  }
}

/** Where a table and its per-channel multipliers sit in the kernels' memory for this message. */
interface WasmTable {
  code: number;
  len: number;
  lookup: number;
  mult: number;
}

function wasmTable(k: WasmKernels, placed: Map<RungTable, WasmTable>, ctx: CodecContext, tab: RungTable, withLookup: boolean): WasmTable {
  let w = placed.get(tab);
  if (w) return w;
  const n = tab.code.length;
  w = { code: k.alloc(2 * n), len: k.alloc(n), lookup: withLookup ? k.alloc(2 * tab.lookup.length) : 0, mult: k.alloc(4 * ctx.dim) };
  new Uint16Array(k.buffer, w.code, n).set(tab.code);
  new Uint8Array(k.buffer, w.len, n).set(tab.len);
  if (withLookup) new Uint16Array(k.buffer, w.lookup, tab.lookup.length).set(tab.lookup);
  k.f32(w.mult, ctx.dim).set(multipliers(ctx, tab));
  placed.set(tab, w);
  return w;
}

class WasmEcEncoder implements EcEncoder {
  outliers = 0;
  private readonly xp: number;
  private readonly qp: number;
  private readonly cp: number;
  private readonly ip: number;
  private readonly op: number;
  private lanePtr: number[] = [];
  private readonly placed = new Map<RungTable, WasmTable>();
  constructor(
    private readonly k: WasmKernels,
    x: Float32Array,
    private readonly tokens: number,
    private readonly dim: number,
    private readonly ctx: CodecContext,
  ) {
    k.reset();
    const N = tokens * dim;
    this.xp = k.alloc(N * 4);
    this.qp = k.alloc(dim * 4);
    this.cp = k.alloc(dim * 4);
    this.ip = k.alloc(dim * 4);
    this.op = k.alloc(dim * 4);
    k.f32(this.xp, N).set(x);
    if (!k.fn.ecFinite(this.xp, N)) checkInput(x, tokens, dim); // throws, naming the first NaN/Inf
    k.f32(this.cp, dim).set(ctx.center);
    k.f32(this.ip, dim).set(ctx.invScale);
  }
  start(lanes: number): void {
    const cap = Math.ceil((this.tokens * this.dim * 1.5) / lanes) + 16;
    this.lanePtr = Array.from({ length: lanes }, () => this.k.alloc(cap));
    const l = this.lanePtr;
    this.k.fn.ecWriteStart(l[0]!, l[1] ?? 0, l[2] ?? 0, l[3] ?? 0, lanes);
  }
  quant(t: number, tab: RungTable, needErr: boolean): number {
    const w = wasmTable(this.k, this.placed, this.ctx, tab, false);
    const e2 = this.k.fn.ecQuant(this.xp + t * this.dim * 4, this.dim, this.cp, this.ip, Math.fround(1 / tab.step), tab.maxLevel, w.mult, this.qp, this.op, needErr ? 1 : 0);
    this.outliers = this.k.fn.ecOutliers();
    return e2;
  }
  outList(): Int32Array {
    return this.k.i32(this.op, this.outliers);
  }
  write(tab: RungTable): void {
    const w = this.placed.get(tab)!;
    this.k.fn.ecWrite(this.qp, this.dim, w.code, w.len, tab.maxLevel);
  }
  finish(): Uint8Array[] {
    return this.lanePtr.map((ptr, L) => new Uint8Array(this.k.buffer, ptr, this.k.fn.ecWriteEnd(L)).slice());
  }
}

const MULT = new WeakMap<RungTable, WeakMap<CodecContext, Float32Array>>();
/** Per channel Δ·scale as float32: the decoder's x̂ = center + q·mult. */
function multipliers(ctx: CodecContext, tab: RungTable): Float32Array {
  let byCtx = MULT.get(tab);
  if (!byCtx) MULT.set(tab, (byCtx = new WeakMap()));
  let m = byCtx.get(ctx);
  if (!m) {
    m = new Float32Array(ctx.dim);
    for (let c = 0; c < ctx.dim; c++) m[c] = tab.step * ctx.scale[c]!;
    byCtx.set(ctx, m);
  }
  return m;
}

export function decodeTabqEc(bytes: Uint8Array, tokens: number, dim: number, contexts: ContextSet | undefined): Decoded {
  const r = new Reader(bytes, HEADER_BYTES);
  const id = r.u32();
  const ctx = contexts?.get(id);
  if (!ctx) throw contextMissing(id);
  if (ctx.dim !== dim) throw corrupt(`dim ${dim} does not match the calibration context's ${ctx.dim}`);
  const flags = r.u8();
  if (flags > 31 || (flags & 3) > 1) throw corrupt(`ts-tabq flags byte ${flags} is unknown`);
  const sink = (flags & 16) !== 0;
  if (sink && !ctx.sink) throw corrupt('message refers to a sink state its calibration context does not have');
  const half = (flags & 4) !== 0;
  const uniform = (flags & 8) !== 0;
  const base = r.u8();
  if (base >= RUNGS) throw corrupt(`base rung ${base} is past the ladder`);
  const tau = tauOf(r.u8());
  if (tau === 0) throw corrupt('threshold code 0');
  const N = tokens * dim;
  const nOut = r.varint();
  const outBytes = half ? 2 : 4;
  if (nOut > N || nOut * (1 + outBytes) > r.remaining) throw corrupt(`${nOut} outliers cannot fit in ${r.remaining} bytes`);
  const codes = new Uint8Array(tokens);
  let nRaw = 0;
  if (!uniform) {
    const cb = r.take(Math.ceil(tokens / 2), 'token rungs');
    for (let t = sink ? 1 : 0; t < tokens; t++) {
      const k = (cb[t >> 1]! >> (t & 1 ? 4 : 0)) & 15;
      if (k !== RAW && base + k >= RUNGS) throw corrupt(`token ${t} rung ${base + k} is past the ladder`);
      codes[t] = k;
      if (k === RAW) nRaw++;
    }
  }
  if (nRaw * dim * 4 > r.remaining) throw corrupt(`${nRaw} raw tokens cannot fit in ${r.remaining} bytes`);
  const pos = new Int32Array(nOut);
  let prev = -1;
  for (let i = 0; i < nOut; i++) {
    const p = prev + 1 + r.varint();
    if (p >= N) throw corrupt(`outlier position ${p} is past the ${N} values`);
    if (codes[Math.floor(p / dim)] === RAW || (sink && p < dim)) throw corrupt(`outlier position ${p} lies in a raw or sink token`);
    pos[i] = p;
    prev = p;
  }
  const ov = r.take(nOut * outBytes, 'outlier values');
  const ovv = new DataView(ov.buffer, ov.byteOffset, ov.byteLength);
  // coded slots: every value of every token but raw and sink ones (outlier slots carry level 0)
  const coded = N - nRaw * dim - (sink ? dim : 0);
  const lanes = lanesFor(coded);
  const lens: number[] = [];
  for (let L = 0; L < lanes; L++) lens.push(r.varint());
  const streams: Uint8Array[] = [];
  for (let L = 0; L < lanes; L++) {
    // lane L holds values L, L + lanes, …: each takes at least one bit
    const count = coded > L ? Math.floor((coded - L - 1) / lanes) + 1 : 0;
    if (lens[L]! > r.remaining || count > 8 * lens[L]!) throw corrupt(`a ${lens[L]}-byte value stream cannot hold ${count} values`);
    streams.push(r.take(lens[L]!, 'value stream'));
  }
  const raw = r.take(nRaw * dim * 4, 'raw tokens');
  r.end();
  const rv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const x = wasmKernels() ? decodeValuesWasm(wasmKernels()!, ctx, streams, codes, base, tau, tokens, dim, sink) : decodeValuesJs(ctx, streams, codes, base, tau, tokens, dim, sink);
  for (let i = 0; i < nOut; i++) x[pos[i]!] = half ? f16BitsToF32(ovv.getUint16(2 * i, true)) : ovv.getFloat32(4 * i, true);
  let ri = 0;
  if (sink) x.set(ctx.sink!);
  if (nRaw > 0) {
    for (let t = 0; t < tokens; t++) {
      if (codes[t] !== RAW || (sink && t === 0)) continue;
      for (let c = t * dim, e = c + dim; c < e; c++, ri += 4) x[c] = rv.getFloat32(ri, true);
    }
  }
  for (let i = 0; i < nOut; i++) {
    const v = x[pos[i]!]!;
    if (v - v !== 0) throw nonFinite(`outlier ${i} is not finite`);
  }
  if (nRaw > 0) for (let i = 0; i < N; i++) if (x[i]! - x[i]! !== 0) throw nonFinite(`value ${i} is not finite`);
  return { x, tokens, dim };
}

/**
 * The coded values of every non-raw token (TypeScript loop): value j of the message from lane j % lanes,
 * through its token's lookup table. Throws unless every lane ends exactly at its last byte.
 */
function decodeValuesJs(ctx: CodecContext, streams: Uint8Array[], codes: Uint8Array, base: number, tau: number, tokens: number, dim: number, sink: boolean): Float32Array {
  const x = new Float32Array(tokens * dim);
  const center = ctx.center;
  const lanes = streams.length;
  const sp = new Array<number>(lanes).fill(0);
  const acc = new Array<number>(lanes).fill(0);
  const nacc = new Array<number>(lanes).fill(0);
  let L = 0;
  for (let t = sink ? 1 : 0; t < tokens; t++) {
    const k = codes[t]!;
    if (k === RAW) continue;
    const o = t * dim;
    const tab = ctx.table(base + k, tau);
    const M = tab.maxLevel;
    const lookup = tab.lookup;
    const mult = multipliers(ctx, tab);
    for (let c = 0; c < dim; c++) {
      const st = streams[L]!;
      let a = acc[L]!;
      let n = nacc[L]!;
      while (n <= 24) {
        a = (a | ((sp[L]! < st.length ? st[sp[L]!]! : 0) << n)) >>> 0;
        sp[L]!++;
        n += 8;
      }
      const e = lookup[a & 0xfff]!;
      const l = e & 15;
      acc[L] = a >>> l;
      nacc[L] = n - l;
      x[o + c] = center[c]! + Math.fround(((e >> 4) - M) * mult[c]!);
      L = L + 1 === lanes ? 0 : L + 1;
    }
    if (t % 64 === 63) for (let i = 0; i < lanes; i++) if (8 * sp[i]! - nacc[i]! > 8 * streams[i]!.length) throw corrupt(`value stream ${i} runs past its ${streams[i]!.length} bytes`);
  }
  for (let i = 0; i < lanes; i++) checkStreamEnd(8 * sp[i]! - nacc[i]!, streams[i]!.length);
  return x;
}

/** The same with the WebAssembly kernels (four lanes decode side by side). */
function decodeValuesWasm(k: WasmKernels, ctx: CodecContext, streams: Uint8Array[], codes: Uint8Array, base: number, tau: number, tokens: number, dim: number, sink: boolean): Float32Array {
  k.reset();
  const N = tokens * dim;
  const lanes = streams.length;
  const xp = k.alloc(N * 4);
  const cp = k.alloc(dim * 4);
  const lvp = k.alloc(dim * 4);
  // zero padding past each stream: a lane reads at most 12 bits per value of a token before the check below
  const pad = Math.ceil((1.5 * dim) / lanes) + 16;
  const sp = streams.map((st) => {
    const at = k.alloc(st.length + pad);
    const v = k.u8(at, st.length + pad);
    v.set(st);
    v.fill(0, st.length);
    return at;
  });
  k.f32(cp, dim).set(ctx.center);
  const placed = new Map<RungTable, WasmTable>();
  k.fn.ecReadStart(sp[0]!, sp[1] ?? 0, sp[2] ?? 0, sp[3] ?? 0, lanes);
  const overrun = () => streams.some((st, i) => k.fn.ecReadUsed(i) > 8 * st.length);
  for (let t = sink ? 1 : 0; t < tokens; t++) {
    const kk = codes[t]!;
    if (kk === RAW) continue;
    const tab = ctx.table(base + kk, tau);
    const w = wasmTable(k, placed, ctx, tab, true);
    k.fn.ecRead(dim, w.lookup, tab.maxLevel, lvp);
    k.fn.ecRecon(lvp, dim, cp, w.mult, xp + 4 * t * dim);
    // a stream that runs past its end is corrupt: check as we go, so hostile input cannot read far
    if (overrun()) break;
  }
  for (let i = 0; i < lanes; i++) checkStreamEnd(k.fn.ecReadUsed(i), streams[i]!.length);
  return k.f32(xp, N).slice();
}

function checkStreamEnd(usedBits: number, streamLen: number): void {
  if (usedBits > 8 * streamLen || Math.ceil(usedBits / 8) !== streamLen) throw corrupt(`value stream holds ${streamLen} bytes, the values used ${Math.ceil(usedBits / 8)}`);
}

function tabqEcParamsFrom(p: ParsedSpec): TabqEcParams {
  onlyParams(p, ['cal', 'eps', 'step', 'tau', 'outliers']);
  if (p.arg !== undefined) throw specError(p, 'use named parameters, e.g. ts-tabq:cal=1,eps=0.08');
  if (p.params.has('eps') && p.params.has('step')) throw specError(p, 'give eps or step, not both');
  const cal = numParam(p, 'cal')!;
  if (!Number.isInteger(cal) || cal < 0) throw specError(p, `cal must be a split layer, got ${cal}`);
  const tauRaw = p.params.get('tau');
  const step = numParam(p, 'step');
  return {
    cal,
    mode: step !== undefined ? 'step' : 'eps',
    eps: numParam(p, 'eps') ?? DEFAULT_TABQ_EC.eps,
    step: step ?? DEFAULT_TABQ_EC.step,
    tau: tauRaw === undefined ? DEFAULT_TABQ_EC.tau : tauRaw === 'none' ? Infinity : numParam(p, 'tau')!,
    outliers: choiceParam(p, 'outliers', ['f32', 'f16'], 'f32'),
  };
}

/** TS + TAB-Q against the calibrated context of split `cal`: `ts-tabq:cal=K,step=Δ` or `…,eps=ε`. */
export const tabqEcDefinition: CodecDefinition = {
  names: ['ts-tabq', 'tstabq'],
  summary: 'ts-tabq:cal=K,step=S|eps=E — TS + TAB-Q against the calibration of split K (per-channel normalization, static prefix codes)',
  decodes: [TABQ_EC_ID],
  accepts: (p) => p.params.has('cal'),
  create(p, env) {
    const params = tabqEcParamsFrom(p);
    const ctx = env.context?.(params.cal);
    if (!ctx) {
      throw new SplitLLMError('E_CODEC_CONTEXT', `codec "${p.spec}" needs the calibration of split ${params.cal}, which is not loaded: run 'splitllm calibrate' for this model (or pass --calibration FILE)`);
    }
    return new TabqEcCodec(params, ctx);
  },
  decode: (bytes, h, opts) => decodeTabqEc(bytes, h.tokens, h.dim, opts.contexts),
  // the codec follows the split to that split's own context, where the calibration has one
  atSplit(p, split, env) {
    const params = tabqEcParamsFrom(p);
    return params.cal !== split && env.context?.(split) ? tabqEcSpec({ ...params, cal: split }) : undefined;
  },
};

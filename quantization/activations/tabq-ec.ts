/**
 * ts-tabq against a calibrated context (`ts-tabq:cal=K,…`): TS + TAB-Q with the quantized values
 * entropy-coded by static prefix codes that the edge and the cloud both derive from the split's
 * calibration (quantization/activations/context.ts), so a message carries no tables and no per-token
 * ranges.
 *
 * Per channel, y = (x − center) / scale (calibrated). TS: a value whose level |q| would pass the table's
 * largest level (τ in units of y, capped at 127 levels) is taken out and sent exactly, as a sparse list.
 * TAB-Q: each token is quantized uniformly, q = round(y / Δ), at a step Δ from a quarter-octave ladder:
 *  - eps mode: per token, the coarsest step whose ‖x − x̂‖ / ‖x‖ ≤ ε (outliers exact); a token no step
 *    fits (an all-zero token, say) is sent raw as float32, so the bound always holds;
 *  - step mode (`step=Δ`): one step for every token, |x − x̂| ≤ Δ·scale/2 per value. With entropy coding,
 *    equal steps are what minimizes the total squared error for the bits: the bits still adapt per token
 *    (a token far from the calibrated distribution costs more).
 * The byte layout is in docs/FORMATS.md.
 */
import { SplitLLMError } from '../../shared/errors.js';
import { f16BitsToF32, f32ToF16Bits } from '../../shared/tensor.js';
import type { Codec, Decoded, DecodeOptions } from './codec.js';
import { CodecContext, contextMissing, rungBelow, rungNearest, rungStep, RUNGS, type ContextSet, type RungTable } from './context.js';
import { checkInput, CodecId, corrupt, HEADER_BYTES, Reader, readHeader, writeHeader } from './format.js';

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
  readonly id = CodecId.tabqEc;
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
    checkInput(x, tokens, dim);
    const ctx = this.context;
    if (dim !== ctx.dim) throw new SplitLLMError('E_CODEC_INPUT', `hidden state has dim ${dim}, the calibration context of split ${this.params.cal} has ${ctx.dim}: calibrate this model`);
    const p = this.params;
    const tc = tauCode(p.tau);
    const tau = tauOf(tc);
    const half = p.outliers === 'f16';
    const q = new Int32Array(dim); // the chosen levels of the token being coded; OUT marks an outlier
    const tryQ = new Int32Array(dim);
    const rungs = new Uint8Array(tokens);
    const norm2 = new Float64Array(tokens);
    // pass 1: a rung per token
    const fixed = p.mode === 'step' ? rungNearest(p.step) : -1;
    let minRung = RUNGS;
    const sink = isSink(x, dim, ctx);
    for (let t = sink ? 1 : 0; t < tokens; t++) {
      let n2 = 0;
      for (let c = t * dim, e = c + dim; c < e; c++) n2 += x[c]! * x[c]!;
      norm2[t] = n2;
      let r = fixed;
      if (r < 0) r = n2 === 0 ? RAW_RUNG : this.chooseRung(x, t * dim, n2, tau, half, tryQ);
      rungs[t] = r;
      if (r !== RAW_RUNG && r < minRung) minRung = r;
    }
    const base = minRung === RUNGS ? 0 : minRung;
    // the message: worst case 12 bits per value, 5 + 4 bytes per outlier, raw tokens 4 bytes per value
    const out = new Uint8Array(HEADER_BYTES + 16 + Math.ceil(tokens / 2) + Math.ceil(tokens * dim * 1.5) + tokens * dim * 9 + 8);
    writeHeader(out, this.id, tokens, dim);
    const view = new DataView(out.buffer);
    let o = HEADER_BYTES;
    view.setUint32(o, ctx.id, true);
    o += 4;
    const uniform = fixed >= 0;
    const flagsAt = o++;
    out[o++] = base;
    out[o++] = tc;
    // pass 2: quantize each token at its rung into the bit stream (written after the outliers: staged here)
    const stream = new Uint8Array(Math.ceil(tokens * dim * 1.5) + 8);
    let sp = 0;
    let acc = 0;
    let nacc = 0;
    const outPos: number[] = [];
    const outVal: number[] = [];
    const codes = new Uint8Array(tokens);
    let nRaw = 0;
    for (let t = sink ? 1 : 0; t < tokens; t++) {
      let r = rungs[t]!;
      if (r !== RAW_RUNG && r - base > SPAN) r = base + SPAN; // finer than chosen: the bound still holds
      if (r === RAW_RUNG) {
        codes[t] = RAW;
        nRaw++;
        continue;
      }
      codes[t] = r - base;
      const tab = ctx.table(r, tau);
      quantizeRow(x, t * dim, dim, ctx, tab, q);
      const M = tab.maxLevel;
      const code = tab.code;
      const len = tab.len;
      for (let c = 0; c < dim; c++) {
        const lv = q[c]!;
        if (lv === OUT) {
          outPos.push(t * dim + c);
          outVal.push(x[t * dim + c]!);
          continue;
        }
        acc |= code[lv + M]! << nacc;
        nacc += len[lv + M]!;
        while (nacc >= 8) {
          stream[sp++] = acc & 0xff;
          acc >>>= 8;
          nacc -= 8;
        }
      }
    }
    if (nacc > 0) stream[sp++] = acc & 0xff;
    const halfOut = half && outVal.every((v) => Math.abs(v) <= 65504); // past the half range: this message sends float32
    out[flagsAt] = MODE_CODE[p.mode] | (halfOut ? 4 : 0) | (uniform ? 8 : 0) | (sink ? 16 : 0);
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
    o = putVarint(out, o, sp);
    out.set(stream.subarray(0, sp), o);
    o += sp;
    if (nRaw > 0) {
      for (let t = 0; t < tokens; t++) {
        if (codes[t] !== RAW) continue;
        for (let c = t * dim, e = c + dim; c < e; c++, o += 4) view.setFloat32(o, x[c]!, true);
      }
    }
    return out.slice(0, o);
  }

  /** eps mode: the coarsest rung whose error fits ε²·‖x‖², searched from the uniform-noise estimate. */
  private chooseRung(x: Float32Array, off: number, n2: number, tau: number, half: boolean, q: Int32Array): number {
    const ctx = this.context;
    const target = this.params.eps * this.params.eps * n2;
    let s2 = 0;
    for (let c = 0; c < ctx.dim; c++) s2 += ctx.scale[c]! * ctx.scale[c]!;
    const fits = (r: number) => quantizeRow(x, off, ctx.dim, ctx, ctx.table(r, tau), q, half) <= target;
    let r = Math.min(RUNGS - 1, rungBelow(Math.sqrt((12 * target) / s2)));
    if (fits(r)) {
      while (r + 1 < RUNGS && fits(r + 1)) r++;
      return r;
    }
    while (--r >= 0) if (fits(r)) return r;
    return RAW_RUNG;
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

/**
 * Levels of one token at a rung into q (OUT for outliers); returns the squared error the decoder's
 * float32 reconstruction will have (outliers exact, or their float16 rounding error).
 */
function quantizeRow(x: Float32Array, off: number, dim: number, ctx: CodecContext, tab: RungTable, q: Int32Array, half = false): number {
  const inv = 1 / tab.step;
  const M = tab.maxLevel;
  const center = ctx.center;
  const invScale = ctx.invScale;
  const mult = multipliers(ctx, tab);
  let e2 = 0;
  for (let c = 0; c < dim; c++) {
    const v = x[off + c]!;
    const lv = Math.floor((v - center[c]!) * invScale[c]! * inv + 0.5);
    if (lv > M || lv < -M) {
      q[c] = OUT;
      if (half) e2 += (v - f16BitsToF32(f32ToF16Bits(v))) ** 2;
      continue;
    }
    q[c] = lv;
    const d = v - Math.fround(center[c]! + lv * mult[c]!);
    e2 += d * d;
  }
  return e2;
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

function putVarint(out: Uint8Array, o: number, d: number): number {
  while (d >= 0x80) {
    out[o++] = (d & 0x7f) | 0x80;
    d = Math.floor(d / 128);
  }
  out[o++] = d;
  return o;
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
  const pos = new Int32Array(nOut + 1);
  let prev = -1;
  for (let i = 0; i < nOut; i++) {
    const p = prev + 1 + r.varint();
    if (p >= N) throw corrupt(`outlier position ${p} is past the ${N} values`);
    if (codes[Math.floor(p / dim)] === RAW || (sink && p < dim)) throw corrupt(`outlier position ${p} lies in a raw or sink token`);
    pos[i] = p;
    prev = p;
  }
  pos[nOut] = N; // sentinel
  const ov = r.take(nOut * outBytes, 'outlier values');
  const ovv = new DataView(ov.buffer, ov.byteOffset, ov.byteLength);
  const streamLen = r.varint();
  // every coded value takes at least one bit
  const coded = N - nRaw * dim - nOut - (sink ? dim : 0);
  if (streamLen > r.remaining || coded < 0 || coded > 8 * streamLen) throw corrupt(`a ${streamLen}-byte value stream cannot hold ${coded} values`);
  const s0 = r.pos;
  const stream = r.take(streamLen, 'value stream');
  const raw = r.take(nRaw * dim * 4, 'raw tokens');
  r.end();
  const x = new Float32Array(N);
  const center = ctx.center;
  let sp = 0;
  let acc = 0;
  let nacc = 0;
  let oi = 0;
  let nextOut = pos[0]!;
  let ri = 0;
  const rv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (sink) x.set(ctx.sink!);
  for (let t = sink ? 1 : 0; t < tokens; t++) {
    const k = codes[t]!;
    const o = t * dim;
    if (k === RAW) {
      for (let c = 0; c < dim; c++, ri += 4) x[o + c] = rv.getFloat32(ri, true);
      continue;
    }
    const tab = ctx.table(base + k, tau);
    const M = tab.maxLevel;
    const lookup = tab.lookup;
    const mult = multipliers(ctx, tab);
    for (let c = 0; c < dim; c++) {
      if (o + c === nextOut) {
        x[o + c] = half ? f16BitsToF32(ovv.getUint16(2 * oi, true)) : ovv.getFloat32(4 * oi, true);
        nextOut = pos[++oi]!;
        continue;
      }
      while (nacc <= 24) {
        acc = (acc | ((sp < streamLen ? stream[sp]! : 0) << nacc)) >>> 0;
        sp++;
        nacc += 8;
      }
      const e = lookup[acc & 0xfff]!;
      const l = e & 15;
      acc >>>= l;
      nacc -= l;
      x[o + c] = center[c]! + ((e >> 4) - M) * mult[c]!;
    }
  }
  const used = 8 * sp - nacc; // bits consumed
  if (used > 8 * streamLen || Math.ceil(used / 8) !== streamLen) throw corrupt(`value stream holds ${streamLen} bytes, the values used ${Math.ceil(used / 8)}`);
  for (let i = 0; i < nOut; i++) {
    const v = x[pos[i]!]!;
    if (v - v !== 0) throw corrupt(`outlier ${i} is not finite`);
  }
  if (nRaw > 0) for (let i = 0; i < N; i++) if (x[i]! - x[i]! !== 0) throw corrupt(`value ${i} is not finite`);
  void s0;
  return { x, tokens, dim };
}

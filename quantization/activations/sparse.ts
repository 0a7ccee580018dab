/** topk:p — keep the p% largest magnitudes of a message exactly (float32), the rest are zero. */
import { SplitLLMError } from '../../shared/errors.js';
import type { Codec, CodecDefinition, Decoded, DecodeOptions } from './codec.js';
import { positionalParam } from './spec.js';
import { checkInput, corrupt, nonFinite, HEADER_BYTES, Reader, readHeader, Writer, writeHeader } from './format.js';

/** this codec's wire id (header byte 3) */
export const TOPK_ID = 5;

/** The k-th largest value of a (k ≥ 1), by quickselect on a copy. */
export function kthLargest(a: Float32Array, k: number): number {
  const s = Float32Array.from(a);
  let lo = 0;
  let hi = s.length - 1;
  const target = k - 1; // index in descending order
  while (lo < hi) {
    const pivot = s[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (s[i]! > pivot) i++;
      while (s[j]! < pivot) j--;
      if (i <= j) {
        const t = s[i]!;
        s[i] = s[j]!;
        s[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return s[target]!;
  }
  return s[target]!;
}

export class TopkCodec implements Codec {
  readonly id = TOPK_ID;
  readonly lossless = false;
  readonly spec: string;
  constructor(readonly percent: number) {
    if (!(percent >= 0.01 && percent <= 100)) throw new SplitLLMError('E_CODEC_SPEC', `codec "topk:${percent}": keep between 0.01 and 100 percent`);
    this.spec = `topk:${percent}`;
  }
  encode(x: Float32Array, tokens: number, dim: number): Uint8Array {
    checkInput(x, tokens, dim);
    const N = x.length;
    const n = Math.min(N, Math.max(1, Math.ceil((this.percent / 100) * N)));
    const abs = new Float32Array(N);
    for (let i = 0; i < N; i++) abs[i] = Math.abs(x[i]!);
    const thr = kthLargest(abs, n);
    let above = 0;
    for (let i = 0; i < N; i++) if (abs[i]! > thr) above++;
    let ties = n - above;
    const w = new Writer(HEADER_BYTES + 8 + n * 7);
    w.reserve(HEADER_BYTES);
    writeHeader(w.buf, this.id, tokens, dim);
    w.f32(this.percent);
    w.u32(n);
    const keep = new Int32Array(n);
    let m = 0;
    for (let i = 0; i < N && m < n; i++) {
      if (abs[i]! > thr || (abs[i] === thr && ties-- > 0)) keep[m++] = i;
    }
    let prev = -1;
    for (let i = 0; i < n; i++) {
      w.varint(keep[i]! - prev - 1);
      prev = keep[i]!;
    }
    for (let i = 0; i < n; i++) w.f32(x[keep[i]!]!);
    return w.finish();
  }
  decode(bytes: Uint8Array, opts?: DecodeOptions): Decoded {
    const h = readHeader(bytes, opts?.maxValues);
    if (h.codec !== this.id) throw corrupt(`codec id ${h.codec} where topk (${this.id}) was expected`);
    return decodeTopk(bytes, h.tokens, h.dim);
  }
}

export function decodeTopk(bytes: Uint8Array, tokens: number, dim: number): Decoded {
  const r = new Reader(bytes, HEADER_BYTES);
  r.f32();
  const n = r.u32();
  const N = tokens * dim;
  if (n > N || n * 5 > r.remaining) throw corrupt(`${n} kept values cannot fit in ${r.remaining} bytes`);
  const pos = new Int32Array(n);
  let prev = -1;
  for (let i = 0; i < n; i++) {
    const p = prev + 1 + r.varint();
    if (p >= N) throw corrupt(`position ${p} is past the ${N} values`);
    pos[i] = p;
    prev = p;
  }
  const vals = r.take(n * 4, 'kept values');
  r.end();
  const v = new DataView(vals.buffer, vals.byteOffset, vals.byteLength);
  const x = new Float32Array(N);
  for (let i = 0; i < n; i++) {
    const f = v.getFloat32(i * 4, true);
    if (f - f !== 0) throw nonFinite(`kept value ${i} is not finite`);
    x[pos[i]!] = f;
  }
  return { x, tokens, dim };
}

export const topkDefinition: CodecDefinition = {
  names: ['topk'],
  summary: 'topk:P keeps the P% largest-magnitude values exactly, the rest are zero',
  decodes: [TOPK_ID],
  create: (p) => new TopkCodec(positionalParam(p, 'percent')),
  decode: (bytes, h) => decodeTopk(bytes, h.tokens, h.dim),
};

/**
 * lowrank:r — truncated SVD over the tokens of a message: X [T,D] ≈ A [T,r'] · B [r',D], r' = min(r,T,D).
 * Randomized range finder (seeded Gaussian test matrix, r+8 columns, two power iterations, modified
 * Gram–Schmidt), then the exact SVD of the small projection by Jacobi eigen-decomposition. A has
 * orthonormal columns; B = Aᵀ X. Exact for matrices of rank ≤ r.
 */
import { SplitLLMError } from '../../shared/errors.js';
import type { Codec, CodecDefinition, Decoded, DecodeOptions } from './codec.js';
import { positionalParam } from './spec.js';
import { checkInput, corrupt, nonFinite, HEADER_BYTES, Reader, readHeader, writeHeader } from './format.js';

/** this codec's wire id (header byte 3) */
export const LOWRANK_ID = 6;

function gaussian(seed: number): () => number {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/** Orthonormalizes the k columns of M [rows, k] (row-major) in place; dependent columns become zero. */
function orthonormalize(M: Float64Array, rows: number, k: number): void {
  for (let j = 0; j < k; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        let dot = 0;
        for (let r = 0; r < rows; r++) dot += M[r * k + i]! * M[r * k + j]!;
        for (let r = 0; r < rows; r++) M[r * k + j] = M[r * k + j]! - dot * M[r * k + i]!;
      }
    }
    let nrm = 0;
    for (let r = 0; r < rows; r++) nrm += M[r * k + j]! ** 2;
    nrm = Math.sqrt(nrm);
    const inv = nrm > 1e-10 ? 1 / nrm : 0;
    for (let r = 0; r < rows; r++) M[r * k + j] = M[r * k + j]! * inv;
  }
}

/** Jacobi eigen-decomposition of a symmetric k×k matrix; returns eigenvalues and column eigenvectors. */
function jacobiEigen(C: Float64Array, k: number): { values: Float64Array; vectors: Float64Array } {
  const A = Float64Array.from(C);
  const V = new Float64Array(k * k);
  for (let i = 0; i < k; i++) V[i * k + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < k; p++) for (let q = p + 1; q < k; q++) off += A[p * k + q]! ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < k; p++) {
      for (let q = p + 1; q < k; q++) {
        const apq = A[p * k + q]!;
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (A[q * k + q]! - A[p * k + p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let r = 0; r < k; r++) {
          const arp = A[r * k + p]!;
          const arq = A[r * k + q]!;
          A[r * k + p] = c * arp - s * arq;
          A[r * k + q] = s * arp + c * arq;
        }
        for (let r = 0; r < k; r++) {
          const apr = A[p * k + r]!;
          const aqr = A[q * k + r]!;
          A[p * k + r] = c * apr - s * aqr;
          A[q * k + r] = s * apr + c * aqr;
        }
        for (let r = 0; r < k; r++) {
          const vrp = V[r * k + p]!;
          const vrq = V[r * k + q]!;
          V[r * k + p] = c * vrp - s * vrq;
          V[r * k + q] = s * vrp + c * vrq;
        }
      }
    }
  }
  const values = new Float64Array(k);
  for (let i = 0; i < k; i++) values[i] = A[i * k + i]!;
  return { values, vectors: V };
}

export class LowrankCodec implements Codec {
  readonly id = LOWRANK_ID;
  readonly lossless = false;
  readonly spec: string;
  constructor(readonly rank: number) {
    if (!Number.isInteger(rank) || rank < 1 || rank > 4096) throw new SplitLLMError('E_CODEC_SPEC', `codec "lowrank:${rank}": rank must be an integer in 1..4096`);
    this.spec = `lowrank:${rank}`;
  }

  encode(x: Float32Array, T: number, D: number): Uint8Array {
    checkInput(x, T, D);
    const r = Math.min(this.rank, T, D);
    const k = Math.min(r + 8, T, D);
    const rnd = gaussian(0x10ad);
    const omega = new Float64Array(D * k);
    for (let i = 0; i < omega.length; i++) omega[i] = rnd();
    const mulX = (M: Float64Array, out: Float64Array) => {
      // out [T,k] = X [T,D] · M [D,k]
      out.fill(0);
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < D; d++) {
          const v = x[t * D + d]!;
          if (v === 0) continue;
          for (let j = 0; j < k; j++) out[t * k + j] = out[t * k + j]! + v * M[d * k + j]!;
        }
      }
    };
    const mulXt = (M: Float64Array, out: Float64Array) => {
      // out [D,k] = Xᵀ [D,T] · M [T,k]
      out.fill(0);
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < D; d++) {
          const v = x[t * D + d]!;
          if (v === 0) continue;
          for (let j = 0; j < k; j++) out[d * k + j] = out[d * k + j]! + v * M[t * k + j]!;
        }
      }
    };
    const Q = new Float64Array(T * k);
    const Z = new Float64Array(D * k);
    mulX(omega, Q);
    orthonormalize(Q, T, k);
    for (let it = 0; it < 2; it++) {
      mulXt(Q, Z);
      orthonormalize(Z, D, k);
      mulX(Z, Q);
      orthonormalize(Q, T, k);
    }
    // Bk = Qᵀ X  [k, D]  (stored transposed as Z [D,k])
    mulXt(Q, Z);
    // C = Bk Bkᵀ [k,k]
    const C = new Float64Array(k * k);
    for (let d = 0; d < D; d++) {
      for (let i = 0; i < k; i++) {
        const zi = Z[d * k + i]!;
        if (zi === 0) continue;
        for (let j = 0; j < k; j++) C[i * k + j] = C[i * k + j]! + zi * Z[d * k + j]!;
      }
    }
    const { values, vectors } = jacobiEigen(C, k);
    const order = Array.from({ length: k }, (_, i) => i).sort((a, b) => values[b]! - values[a]!).slice(0, r);
    const out = new Uint8Array(HEADER_BYTES + 4 + 4 * r * (T + D));
    writeHeader(out, this.id, T, D);
    const v = new DataView(out.buffer);
    v.setUint32(HEADER_BYTES, r, true);
    let p = HEADER_BYTES + 4;
    // A = Q W_r  [T, r]
    for (let t = 0; t < T; t++) {
      for (const j of order) {
        let s = 0;
        for (let i = 0; i < k; i++) s += Q[t * k + i]! * vectors[i * k + j]!;
        v.setFloat32(p, s, true);
        p += 4;
      }
    }
    // B = W_rᵀ Bk  [r, D]
    for (const j of order) {
      for (let d = 0; d < D; d++) {
        let s = 0;
        for (let i = 0; i < k; i++) s += vectors[i * k + j]! * Z[d * k + i]!;
        v.setFloat32(p, s, true);
        p += 4;
      }
    }
    return out;
  }

  decode(bytes: Uint8Array, opts?: DecodeOptions): Decoded {
    const h = readHeader(bytes, opts?.maxValues);
    if (h.codec !== this.id) throw corrupt(`codec id ${h.codec} where lowrank (${this.id}) was expected`);
    return decodeLowrank(bytes, h.tokens, h.dim);
  }
}

export function decodeLowrank(bytes: Uint8Array, T: number, D: number): Decoded {
  const rd = new Reader(bytes, HEADER_BYTES);
  const r = rd.u32();
  if (r < 1 || r > Math.min(T, D)) throw corrupt(`rank ${r} is impossible for [${T}, ${D}]`);
  const body = rd.take(4 * r * (T + D), 'factors');
  rd.end();
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const A = new Float32Array(T * r);
  const B = new Float32Array(r * D);
  for (let i = 0; i < A.length; i++) A[i] = v.getFloat32(4 * i, true);
  for (let i = 0; i < B.length; i++) B[i] = v.getFloat32(4 * (A.length + i), true);
  for (const a of [A, B]) for (let i = 0; i < a.length; i++) if (a[i]! - a[i]! !== 0) throw nonFinite('a factor is not finite');
  const x = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < r; j++) {
      const a = A[t * r + j]!;
      for (let d = 0; d < D; d++) x[t * D + d] = x[t * D + d]! + a * B[j * D + d]!;
    }
  }
  for (let i = 0; i < x.length; i++) if (x[i]! - x[i]! !== 0) throw nonFinite('the factors multiply out to non-finite values');
  return { x, tokens: T, dim: D };
}

export const lowrankDefinition: CodecDefinition = {
  names: ['lowrank'],
  summary: 'lowrank:R sends a rank-R factorization of the message',
  decodes: [LOWRANK_ID],
  create: (p) => new LowrankCodec(positionalParam(p, 'rank')),
  decode: (bytes, h) => decodeLowrank(bytes, h.tokens, h.dim),
};

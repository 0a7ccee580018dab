/**
 * AWQ-style activation-aware scaling and clipping for blockwise weight quantization (pure math).
 *
 * Given calibration inputs X [T, K] of a linear layer W [N, K]:
 *  1. per input channel s = mean|X|^α (normalized to geometric mean 1); α from a grid in [0, 1] chosen to
 *     minimize ‖X Ŵᵀ − X Wᵀ‖² where Ŵ = Q(W·diag(s))·diag(1/s);
 *  2. per (row, block) a clip ratio r ∈ {1, 0.95, …, 0.6} of the block range minimizing the block's
 *     output error Δᵀ (X_bᵀ X_b) Δ, Δ = ŵ_b − w_b.
 * α = 0 with no clipping is plain round-to-nearest, which the grid always contains, so on the
 * calibration data AWQ is never worse than RTN.
 */
import { dequantizeBlockwise, kBlocks, quantizeBlockwise } from './blockwise.js';

export interface AwqResult {
  scale: Float32Array;
  clip: Float32Array;
  alpha: number;
  /** output error on the calibration rows, relative to ‖X Wᵀ‖², for RTN and for the chosen transform */
  rtnError: number;
  awqError: number;
}

const ALPHAS = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
const CLIPS = [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6];

/** XᵀX [K, K] of the calibration rows. */
function gramOf(X: Float32Array, T: number, K: number): Float64Array {
  const G = new Float64Array(K * K);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < K; i++) {
      const xi = X[t * K + i]!;
      if (xi === 0) continue;
      for (let j = i; j < K; j++) G[i * K + j] = G[i * K + j]! + xi * X[t * K + j]!;
    }
  }
  for (let i = 0; i < K; i++) for (let j = 0; j < i; j++) G[i * K + j] = G[j * K + i]!;
  return G;
}

/** ‖X (A − B)ᵀ‖² = Σ_n Δ_nᵀ (XᵀX) Δ_n for A, B [N, K]. */
function outputError(G: Float64Array, K: number, A: Float32Array, B: Float32Array, N: number): number {
  const d = new Float64Array(K);
  let e = 0;
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) d[k] = A[n * K + k]! - B[n * K + k]!;
    for (let i = 0; i < K; i++) {
      if (d[i] === 0) continue;
      let row = 0;
      for (let j = 0; j < K; j++) row += G[i * K + j]! * d[j]!;
      e += d[i]! * row;
    }
  }
  return e;
}

export function awqTransform(W: Float32Array, N: number, K: number, X: Float32Array, T: number, bits: number, blockSize: number): AwqResult {
  const zero = new Float32Array(N * K);
  const G = gramOf(X, T, K);
  const ref = outputError(G, K, W, zero, N) || 1;
  const mean = new Float64Array(K);
  for (let t = 0; t < T; t++) for (let k = 0; k < K; k++) mean[k] = mean[k]! + Math.abs(X[t * K + k]!) / T;
  let best = { alpha: 0, err: Infinity, scale: new Float32Array(K).fill(1) };
  let rtnError = NaN;
  for (const alpha of ALPHAS) {
    const s = new Float32Array(K);
    let logSum = 0;
    for (let k = 0; k < K; k++) {
      s[k] = Math.max(mean[k]!, 1e-8) ** alpha;
      logSum += Math.log(s[k]!);
    }
    const g = Math.exp(logSum / K);
    for (let k = 0; k < K; k++) s[k] = s[k]! / g;
    const Ws = new Float32Array(N * K);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) Ws[n * K + k] = W[n * K + k]! * s[k]!;
    const deq = dequantizeBlockwise(quantizeBlockwise(Ws, N, K, bits, blockSize));
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) deq[n * K + k] = deq[n * K + k]! / s[k]!;
    const err = outputError(G, K, deq, W, N);
    if (alpha === 0) rtnError = err;
    if (err < best.err) best = { alpha, err, scale: s };
  }
  // clip search per (row, block) on the scaled weight, with the block Gram matrices of X / s
  const s = best.scale;
  const Ws = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) Ws[n * K + k] = W[n * K + k]! * s[k]!;
  const kb = kBlocks(K, blockSize);
  const gram: Float64Array[] = [];
  for (let b = 0; b < kb; b++) {
    const k0 = b * blockSize;
    const k1 = Math.min(K, k0 + blockSize);
    const m = k1 - k0;
    const G = new Float64Array(m * m);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < m; i++) {
        const xi = X[t * K + k0 + i]! / s[k0 + i]!;
        if (xi === 0) continue;
        for (let j = 0; j < m; j++) G[i * m + j] = G[i * m + j]! + xi * (X[t * K + k0 + j]! / s[k0 + j]!);
      }
    }
    gram.push(G);
  }
  const clip = new Float32Array(N * kb).fill(1);
  const errs = new Float64Array(N * kb).fill(Infinity);
  for (const r of CLIPS) {
    const deq = dequantizeBlockwise(quantizeBlockwise(Ws, N, K, bits, blockSize, new Float32Array(N * kb).fill(r)));
    for (let n = 0; n < N; n++) {
      for (let b = 0; b < kb; b++) {
        const k0 = b * blockSize;
        const m = Math.min(K, k0 + blockSize) - k0;
        const G = gram[b]!;
        let e = 0;
        for (let i = 0; i < m; i++) {
          const di = deq[n * K + k0 + i]! - Ws[n * K + k0 + i]!;
          if (di === 0) continue;
          for (let j = 0; j < m; j++) e += di * G[i * m + j]! * (deq[n * K + k0 + j]! - Ws[n * K + k0 + j]!);
        }
        if (e < errs[n * kb + b]!) {
          errs[n * kb + b] = e;
          clip[n * kb + b] = r;
        }
      }
    }
  }
  const final = dequantizeBlockwise(quantizeBlockwise(Ws, N, K, bits, blockSize, clip));
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) final[n * K + k] = final[n * K + k]! / s[k]!;
  const awqError = outputError(G, K, final, W, N);
  return { scale: s, clip, alpha: best.alpha, rtnError: rtnError / ref, awqError: awqError / ref };
}

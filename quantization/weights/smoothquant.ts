/**
 * SmoothQuant (W8A8) smoothing factors (pure math): s_k = max|X_k|^α / max|W_:,k|^(1−α), which moves
 * activation outliers into the weights so that both quantize well to int8. The weight becomes W·diag(s)
 * (int8, symmetric per output channel) and the activation x / s (int8, dynamic per tensor).
 */
export function smoothingFactors(W: Float32Array | Float32Array[], N: number | number[], K: number, X: Float32Array, T: number, alpha = 0.5): Float32Array {
  // several weights may read the same input (q, k, v after one RMSNorm): one s serves them all
  const Ws = Array.isArray(W) ? W : [W];
  const Ns = Array.isArray(N) ? N : [N];
  const s = new Float32Array(K);
  for (let k = 0; k < K; k++) {
    let ax = 0;
    for (let t = 0; t < T; t++) ax = Math.max(ax, Math.abs(X[t * K + k]!));
    let aw = 0;
    Ws.forEach((w, j) => {
      for (let n = 0; n < Ns[j]!; n++) aw = Math.max(aw, Math.abs(w[n * K + k]!));
    });
    s[k] = ax > 0 && aw > 0 ? Math.max(1e-5, Math.pow(ax, alpha) / Math.pow(aw, 1 - alpha)) : 1;
  }
  return s;
}

/** int8 symmetric per output channel: q = round(w / scale_n), scale_n = max|W_n| / 127. Returns Wᵀ [K, N] codes. */
export function int8PerChannel(W: Float32Array, N: number, K: number): { qT: Int8Array; scales: Float32Array } {
  const qT = new Int8Array(K * N);
  const scales = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let m = 0;
    for (let k = 0; k < K; k++) m = Math.max(m, Math.abs(W[n * K + k]!));
    const sc = m > 0 ? m / 127 : 1;
    scales[n] = sc;
    for (let k = 0; k < K; k++) qT[k * N + n] = Math.max(-127, Math.min(127, Math.round(W[n * K + k]! / sc)));
  }
  return { qT, scales };
}

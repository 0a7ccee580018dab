/**
 * Rotary position embedding: the frequencies of the decoder block's RoPE, with the scalings Hugging Face
 * configs carry (`rope_scaling`): `linear` (positions divided by the factor), `llama3` (Llama 3.1/3.2:
 * long wavelengths divided by the factor, short ones kept, a smooth blend between), `yarn` (Qwen2.5's long
 * context: per-frequency blend of interpolation and extrapolation, cos and sin scaled by an attention
 * factor). `dynamic` NTK scaling changes the base only past the original context, so a model that keeps to
 * its original context computes it exactly with no scaling at all (the importer caps the context there).
 * Pure TypeScript: the segment builder (Node and browser) and the importers share it.
 */

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalContext: number }
  | { type: 'yarn'; factor: number; originalContext: number; betaFast: number; betaSlow: number; attentionFactor: number; truncate: boolean };

export const ROPE_SCALING_TYPES = ['linear', 'llama3', 'yarn'] as const;

/** The yarn attention factor Hugging Face uses when the config names none: 0.1·ln(factor) + 1 (1 for factor ≤ 1). */
export function yarnMscale(factor: number, mscale = 1): number {
  return factor <= 1 ? 1 : 0.1 * mscale * Math.log(factor) + 1;
}

/**
 * The inverse frequencies theta^(-2i/headDim), i < headDim/2, after the scaling (float64), and the factor
 * cos and sin are multiplied by (yarn's attention factor, else 1).
 */
export function ropeFrequencies(headDim: number, theta: number, scaling?: RopeScaling): { inv: Float64Array; mscale: number } {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  if (!scaling) return { inv, mscale: 1 };
  switch (scaling.type) {
    case 'linear':
      for (let i = 0; i < half; i++) inv[i]! /= scaling.factor;
      return { inv, mscale: 1 };
    case 'llama3': {
      const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalContext: ctx } = scaling;
      for (let i = 0; i < half; i++) {
        const wavelength = (2 * Math.PI) / inv[i]!;
        if (wavelength < ctx / hi) continue; // high frequency: kept
        if (wavelength > ctx / lo) inv[i] = inv[i]! / factor; // low frequency: interpolated
        else {
          const smooth = (ctx / wavelength - lo) / (hi - lo);
          inv[i] = (1 - smooth) * (inv[i]! / factor) + smooth * inv[i]!;
        }
      }
      return { inv, mscale: 1 };
    }
    case 'yarn': {
      const { factor, originalContext: ctx, betaFast, betaSlow, truncate } = scaling;
      // the dimension whose wavelength turns `rotations` times over the original context
      const correction = (rotations: number): number => (headDim * Math.log(ctx / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
      let low = correction(betaFast);
      let high = correction(betaSlow);
      if (truncate) {
        low = Math.floor(low);
        high = Math.ceil(high);
      }
      low = Math.max(low, 0);
      high = Math.min(high, headDim - 1);
      if (low === high) high += 0.001;
      for (let i = 0; i < half; i++) {
        const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
        const extrapolation = 1 - ramp; // weight of the unscaled frequency
        inv[i] = (inv[i]! / factor) * (1 - extrapolation) + inv[i]! * extrapolation;
      }
      return { inv, mscale: scaling.attentionFactor };
    }
  }
}

/**
 * RoPE tables [positions, headDim/2]: angle = pos · inv_freq. Without scaling, computed as llama2.c does
 * (float32 frequencies and angles), which the llama2.c equality tests depend on.
 */
export function ropeTables(positions: number, headDim: number, theta: number, scaling?: RopeScaling): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(positions * half);
  const sin = new Float32Array(positions * half);
  const { inv, mscale } = ropeFrequencies(headDim, theta, scaling);
  for (let i = 0; i < half; i++) {
    const freq = scaling ? Math.fround(inv[i]!) : Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / headDim))));
    for (let p = 0; p < positions; p++) {
      const a = Math.fround(p * freq);
      cos[p * half + i] = Math.cos(a) * mscale;
      sin[p * half + i] = Math.sin(a) * mscale;
    }
  }
  return { cos, sin };
}

// AssemblyScript source of the TAB-Q hot loops, compiled to WebAssembly (SIMD) by scripts/build-wasm.mjs.
// Pointers are byte offsets into this module's memory, laid out by the TypeScript glue (../kernels.ts).
// The float semantics are float32, lane by lane.

/**
 * Per token and group: min/max of the values with |x| ≤ tau (gmin/gmax, f32), Σx² per token (norm2, f64),
 * and the outliers (|x| > tau) as flat positions (i32) and values (f32). Returns the outlier count.
 */
export function stats(x: usize, tokens: i32, dim: i32, gs: i32, tau: f32, gmin: usize, gmax: usize, norm2: usize, outPos: usize, outVal: usize): i32 {
  let nOut = 0;
  const vtau = f32x4.splat(tau);
  const pinf = f32x4.splat(Infinity);
  const ninf = f32x4.splat(-Infinity);
  const G = (dim + gs - 1) / gs;
  for (let t = 0; t < tokens; t++) {
    let nrm: f64 = 0;
    for (let g = 0; g < G; g++) {
      const c0 = t * dim + g * gs;
      const n = min(gs, dim - g * gs);
      let vmin = pinf;
      let vmax = ninf;
      let vn = f32x4.splat(0);
      let c = 0;
      for (; c + 4 <= n; c += 4) {
        const p = x + (<usize>(c0 + c) << 2);
        const v = v128.load(p);
        vn = f32x4.add(vn, f32x4.mul(v, v));
        const out = f32x4.gt(f32x4.abs(v), vtau);
        if (v128.any_true(out)) {
          for (let k = 0; k < 4; k++) {
            const s = load<f32>(p + (<usize>k << 2));
            if (abs<f32>(s) > tau) {
              store<i32>(outPos + (<usize>nOut << 2), c0 + c + k);
              store<f32>(outVal + (<usize>nOut << 2), s);
              nOut++;
            }
          }
        }
        vmin = f32x4.min(vmin, v128.bitselect(pinf, v, out));
        vmax = f32x4.max(vmax, v128.bitselect(ninf, v, out));
      }
      let mn = min(min(f32x4.extract_lane(vmin, 0), f32x4.extract_lane(vmin, 1)), min(f32x4.extract_lane(vmin, 2), f32x4.extract_lane(vmin, 3)));
      let mx = max(max(f32x4.extract_lane(vmax, 0), f32x4.extract_lane(vmax, 1)), max(f32x4.extract_lane(vmax, 2), f32x4.extract_lane(vmax, 3)));
      nrm += <f64>f32x4.extract_lane(vn, 0) + <f64>f32x4.extract_lane(vn, 1) + <f64>f32x4.extract_lane(vn, 2) + <f64>f32x4.extract_lane(vn, 3);
      for (; c < n; c++) {
        const s = load<f32>(x + (<usize>(c0 + c) << 2));
        nrm += <f64>s * <f64>s;
        if (abs<f32>(s) > tau) {
          store<i32>(outPos + (<usize>nOut << 2), c0 + c);
          store<f32>(outVal + (<usize>nOut << 2), s);
          nOut++;
        } else {
          if (s < mn) mn = s;
          if (s > mx) mx = s;
        }
      }
      if (mn == Infinity) {
        mn = 0;
        mx = 0;
      }
      const slot = <usize>(t * G + g) << 2;
      store<f32>(gmin + slot, mn);
      store<f32>(gmax + slot, mx);
    }
    store<f64>(norm2 + (<usize>t << 3), nrm);
  }
  return nOut;
}

/**
 * q = clamp(round((x − mn)/sc), 0, levels) for n values into u8 q; values with |x| > tau get q = 0 and are
 * left out of the error. Returns Σ (x − (mn + q·sc))² over the rest.
 */
export function quantize(x: usize, n: i32, mn: f32, sc: f32, levels: i32, tau: f32, q: usize): f64 {
  const inv: f32 = sc > 0 ? <f32>1 / sc : 0;
  const vmn = f32x4.splat(mn);
  const vinv = f32x4.splat(inv);
  const vsc = f32x4.splat(sc);
  const vhalf = f32x4.splat(0.5);
  const vtau = f32x4.splat(tau);
  const vlev = i32x4.splat(levels);
  const vzero = i32x4.splat(0);
  let verr = f32x4.splat(0);
  let c = 0;
  for (; c + 16 <= n; c += 16) {
    const p = x + (<usize>c << 2);
    const v0 = v128.load(p);
    const v1 = v128.load(p, 16);
    const v2 = v128.load(p, 32);
    const v3 = v128.load(p, 48);
    const o0 = f32x4.gt(f32x4.abs(v0), vtau);
    const o1 = f32x4.gt(f32x4.abs(v1), vtau);
    const o2 = f32x4.gt(f32x4.abs(v2), vtau);
    const o3 = f32x4.gt(f32x4.abs(v3), vtau);
    const q0 = v128.andnot(i32x4.max_s(i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(f32x4.sub(v0, vmn), vinv), vhalf)), vlev), vzero), o0);
    const q1 = v128.andnot(i32x4.max_s(i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(f32x4.sub(v1, vmn), vinv), vhalf)), vlev), vzero), o1);
    const q2 = v128.andnot(i32x4.max_s(i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(f32x4.sub(v2, vmn), vinv), vhalf)), vlev), vzero), o2);
    const q3 = v128.andnot(i32x4.max_s(i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(f32x4.sub(v3, vmn), vinv), vhalf)), vlev), vzero), o3);
    const e0 = v128.andnot(f32x4.sub(v0, f32x4.add(vmn, f32x4.mul(f32x4.convert_i32x4_s(q0), vsc))), o0);
    const e1 = v128.andnot(f32x4.sub(v1, f32x4.add(vmn, f32x4.mul(f32x4.convert_i32x4_s(q1), vsc))), o1);
    const e2 = v128.andnot(f32x4.sub(v2, f32x4.add(vmn, f32x4.mul(f32x4.convert_i32x4_s(q2), vsc))), o2);
    const e3 = v128.andnot(f32x4.sub(v3, f32x4.add(vmn, f32x4.mul(f32x4.convert_i32x4_s(q3), vsc))), o3);
    verr = f32x4.add(verr, f32x4.add(f32x4.add(f32x4.mul(e0, e0), f32x4.mul(e1, e1)), f32x4.add(f32x4.mul(e2, e2), f32x4.mul(e3, e3))));
    v128.store(q + <usize>c, i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(q0, q1), i16x8.narrow_i32x4_u(q2, q3)));
  }
  let err: f64 = <f64>f32x4.extract_lane(verr, 0) + <f64>f32x4.extract_lane(verr, 1) + <f64>f32x4.extract_lane(verr, 2) + <f64>f32x4.extract_lane(verr, 3);
  for (; c < n; c++) {
    const v = load<f32>(x + (<usize>c << 2));
    if (abs<f32>(v) > tau) {
      store<u8>(q + <usize>c, 0);
      continue;
    }
    let qi = <i32>((v - mn) * inv + <f32>0.5);
    if (qi > levels) qi = levels;
    if (qi < 0) qi = 0;
    store<u8>(q + <usize>c, <u8>qi);
    const d = v - (mn + <f32>qi * sc);
    err += <f64>(d * d);
  }
  return err;
}

/** Packs n u8 values of w bits (≤ 8) little-endian into u32 words at out; returns the words written. */
export function pack(q: usize, n: i32, w: i32, out: usize): i32 {
  let acc: u64 = 0;
  let nb: i32 = 0;
  let o = out;
  for (let c = 0; c < n; c++) {
    acc |= (<u64>load<u8>(q + <usize>c)) << (<u64>nb);
    nb += w;
    if (nb >= 32) {
      store<u32>(o, <u32>acc);
      o += 4;
      acc >>= 32;
      nb -= 32;
    }
  }
  if (nb > 0) {
    store<u32>(o, <u32>acc);
    o += 4;
  }
  return <i32>((o - out) >> 2);
}

function unpack2(p: usize, n: i32, mn: f32, sc: f32, x: usize): i32 {
  let c = 0;
  for (; c + 16 <= n; c += 16) {
    const w0 = load<u32>(p, 0);
    store<f32>(x, mn + <f32>(w0 & 3) * sc, 0);
    store<f32>(x, mn + <f32>((w0 >> 2) & 3) * sc, 4);
    store<f32>(x, mn + <f32>((w0 >> 4) & 3) * sc, 8);
    store<f32>(x, mn + <f32>((w0 >> 6) & 3) * sc, 12);
    store<f32>(x, mn + <f32>((w0 >> 8) & 3) * sc, 16);
    store<f32>(x, mn + <f32>((w0 >> 10) & 3) * sc, 20);
    store<f32>(x, mn + <f32>((w0 >> 12) & 3) * sc, 24);
    store<f32>(x, mn + <f32>((w0 >> 14) & 3) * sc, 28);
    store<f32>(x, mn + <f32>((w0 >> 16) & 3) * sc, 32);
    store<f32>(x, mn + <f32>((w0 >> 18) & 3) * sc, 36);
    store<f32>(x, mn + <f32>((w0 >> 20) & 3) * sc, 40);
    store<f32>(x, mn + <f32>((w0 >> 22) & 3) * sc, 44);
    store<f32>(x, mn + <f32>((w0 >> 24) & 3) * sc, 48);
    store<f32>(x, mn + <f32>((w0 >> 26) & 3) * sc, 52);
    store<f32>(x, mn + <f32>((w0 >> 28) & 3) * sc, 56);
    store<f32>(x, mn + <f32>((w0 >> 30) & 3) * sc, 60);
    p += 4;
    x += 64;
  }
  return c;
}

function unpack3(p: usize, n: i32, mn: f32, sc: f32, x: usize): i32 {
  let c = 0;
  for (; c + 32 <= n; c += 32) {
    const w0 = load<u32>(p, 0);
    const w1 = load<u32>(p, 4);
    const w2 = load<u32>(p, 8);
    store<f32>(x, mn + <f32>(w0 & 7) * sc, 0);
    store<f32>(x, mn + <f32>((w0 >> 3) & 7) * sc, 4);
    store<f32>(x, mn + <f32>((w0 >> 6) & 7) * sc, 8);
    store<f32>(x, mn + <f32>((w0 >> 9) & 7) * sc, 12);
    store<f32>(x, mn + <f32>((w0 >> 12) & 7) * sc, 16);
    store<f32>(x, mn + <f32>((w0 >> 15) & 7) * sc, 20);
    store<f32>(x, mn + <f32>((w0 >> 18) & 7) * sc, 24);
    store<f32>(x, mn + <f32>((w0 >> 21) & 7) * sc, 28);
    store<f32>(x, mn + <f32>((w0 >> 24) & 7) * sc, 32);
    store<f32>(x, mn + <f32>((w0 >> 27) & 7) * sc, 36);
    store<f32>(x, mn + <f32>(((w0 >> 30) | (w1 << 2)) & 7) * sc, 40);
    store<f32>(x, mn + <f32>((w1 >> 1) & 7) * sc, 44);
    store<f32>(x, mn + <f32>((w1 >> 4) & 7) * sc, 48);
    store<f32>(x, mn + <f32>((w1 >> 7) & 7) * sc, 52);
    store<f32>(x, mn + <f32>((w1 >> 10) & 7) * sc, 56);
    store<f32>(x, mn + <f32>((w1 >> 13) & 7) * sc, 60);
    store<f32>(x, mn + <f32>((w1 >> 16) & 7) * sc, 64);
    store<f32>(x, mn + <f32>((w1 >> 19) & 7) * sc, 68);
    store<f32>(x, mn + <f32>((w1 >> 22) & 7) * sc, 72);
    store<f32>(x, mn + <f32>((w1 >> 25) & 7) * sc, 76);
    store<f32>(x, mn + <f32>((w1 >> 28) & 7) * sc, 80);
    store<f32>(x, mn + <f32>(((w1 >> 31) | (w2 << 1)) & 7) * sc, 84);
    store<f32>(x, mn + <f32>((w2 >> 2) & 7) * sc, 88);
    store<f32>(x, mn + <f32>((w2 >> 5) & 7) * sc, 92);
    store<f32>(x, mn + <f32>((w2 >> 8) & 7) * sc, 96);
    store<f32>(x, mn + <f32>((w2 >> 11) & 7) * sc, 100);
    store<f32>(x, mn + <f32>((w2 >> 14) & 7) * sc, 104);
    store<f32>(x, mn + <f32>((w2 >> 17) & 7) * sc, 108);
    store<f32>(x, mn + <f32>((w2 >> 20) & 7) * sc, 112);
    store<f32>(x, mn + <f32>((w2 >> 23) & 7) * sc, 116);
    store<f32>(x, mn + <f32>((w2 >> 26) & 7) * sc, 120);
    store<f32>(x, mn + <f32>((w2 >> 29) & 7) * sc, 124);
    p += 12;
    x += 128;
  }
  return c;
}

function unpack5(p: usize, n: i32, mn: f32, sc: f32, x: usize): i32 {
  let c = 0;
  for (; c + 32 <= n; c += 32) {
    const w0 = load<u32>(p, 0);
    const w1 = load<u32>(p, 4);
    const w2 = load<u32>(p, 8);
    const w3 = load<u32>(p, 12);
    const w4 = load<u32>(p, 16);
    store<f32>(x, mn + <f32>(w0 & 31) * sc, 0);
    store<f32>(x, mn + <f32>((w0 >> 5) & 31) * sc, 4);
    store<f32>(x, mn + <f32>((w0 >> 10) & 31) * sc, 8);
    store<f32>(x, mn + <f32>((w0 >> 15) & 31) * sc, 12);
    store<f32>(x, mn + <f32>((w0 >> 20) & 31) * sc, 16);
    store<f32>(x, mn + <f32>((w0 >> 25) & 31) * sc, 20);
    store<f32>(x, mn + <f32>(((w0 >> 30) | (w1 << 2)) & 31) * sc, 24);
    store<f32>(x, mn + <f32>((w1 >> 3) & 31) * sc, 28);
    store<f32>(x, mn + <f32>((w1 >> 8) & 31) * sc, 32);
    store<f32>(x, mn + <f32>((w1 >> 13) & 31) * sc, 36);
    store<f32>(x, mn + <f32>((w1 >> 18) & 31) * sc, 40);
    store<f32>(x, mn + <f32>((w1 >> 23) & 31) * sc, 44);
    store<f32>(x, mn + <f32>(((w1 >> 28) | (w2 << 4)) & 31) * sc, 48);
    store<f32>(x, mn + <f32>((w2 >> 1) & 31) * sc, 52);
    store<f32>(x, mn + <f32>((w2 >> 6) & 31) * sc, 56);
    store<f32>(x, mn + <f32>((w2 >> 11) & 31) * sc, 60);
    store<f32>(x, mn + <f32>((w2 >> 16) & 31) * sc, 64);
    store<f32>(x, mn + <f32>((w2 >> 21) & 31) * sc, 68);
    store<f32>(x, mn + <f32>((w2 >> 26) & 31) * sc, 72);
    store<f32>(x, mn + <f32>(((w2 >> 31) | (w3 << 1)) & 31) * sc, 76);
    store<f32>(x, mn + <f32>((w3 >> 4) & 31) * sc, 80);
    store<f32>(x, mn + <f32>((w3 >> 9) & 31) * sc, 84);
    store<f32>(x, mn + <f32>((w3 >> 14) & 31) * sc, 88);
    store<f32>(x, mn + <f32>((w3 >> 19) & 31) * sc, 92);
    store<f32>(x, mn + <f32>((w3 >> 24) & 31) * sc, 96);
    store<f32>(x, mn + <f32>(((w3 >> 29) | (w4 << 3)) & 31) * sc, 100);
    store<f32>(x, mn + <f32>((w4 >> 2) & 31) * sc, 104);
    store<f32>(x, mn + <f32>((w4 >> 7) & 31) * sc, 108);
    store<f32>(x, mn + <f32>((w4 >> 12) & 31) * sc, 112);
    store<f32>(x, mn + <f32>((w4 >> 17) & 31) * sc, 116);
    store<f32>(x, mn + <f32>((w4 >> 22) & 31) * sc, 120);
    store<f32>(x, mn + <f32>((w4 >> 27) & 31) * sc, 124);
    p += 20;
    x += 128;
  }
  return c;
}

function unpack6(p: usize, n: i32, mn: f32, sc: f32, x: usize): i32 {
  let c = 0;
  for (; c + 16 <= n; c += 16) {
    const w0 = load<u32>(p, 0);
    const w1 = load<u32>(p, 4);
    const w2 = load<u32>(p, 8);
    store<f32>(x, mn + <f32>(w0 & 63) * sc, 0);
    store<f32>(x, mn + <f32>((w0 >> 6) & 63) * sc, 4);
    store<f32>(x, mn + <f32>((w0 >> 12) & 63) * sc, 8);
    store<f32>(x, mn + <f32>((w0 >> 18) & 63) * sc, 12);
    store<f32>(x, mn + <f32>((w0 >> 24) & 63) * sc, 16);
    store<f32>(x, mn + <f32>(((w0 >> 30) | (w1 << 2)) & 63) * sc, 20);
    store<f32>(x, mn + <f32>((w1 >> 4) & 63) * sc, 24);
    store<f32>(x, mn + <f32>((w1 >> 10) & 63) * sc, 28);
    store<f32>(x, mn + <f32>((w1 >> 16) & 63) * sc, 32);
    store<f32>(x, mn + <f32>((w1 >> 22) & 63) * sc, 36);
    store<f32>(x, mn + <f32>(((w1 >> 28) | (w2 << 4)) & 63) * sc, 40);
    store<f32>(x, mn + <f32>((w2 >> 2) & 63) * sc, 44);
    store<f32>(x, mn + <f32>((w2 >> 8) & 63) * sc, 48);
    store<f32>(x, mn + <f32>((w2 >> 14) & 63) * sc, 52);
    store<f32>(x, mn + <f32>((w2 >> 20) & 63) * sc, 56);
    store<f32>(x, mn + <f32>((w2 >> 26) & 63) * sc, 60);
    p += 12;
    x += 64;
  }
  return c;
}

function unpack8(p: usize, n: i32, mn: f32, sc: f32, x: usize): i32 {
  let c = 0;
  for (; c + 4 <= n; c += 4) {
    const w0 = load<u32>(p, 0);
    store<f32>(x, mn + <f32>(w0 & 255) * sc, 0);
    store<f32>(x, mn + <f32>((w0 >> 8) & 255) * sc, 4);
    store<f32>(x, mn + <f32>((w0 >> 16) & 255) * sc, 8);
    store<f32>(x, mn + <f32>((w0 >> 24) & 255) * sc, 12);
    p += 4;
    x += 16;
  }
  return c;
}

/** x[c] = mn + q·sc for n values of w bits starting at bit `bit0` of the words at inp (reads one word ahead). */
export function unpack(inp: usize, bit0: i32, n: i32, w: i32, mn: f32, sc: f32, x: usize): void {
  let p = inp + (<usize>(bit0 >> 5) << 2);
  const s = bit0 & 31;
  let acc: u64 = (<u64>load<u32>(p)) >> (<u64>s);
  let nb: i32 = 32 - s;
  p += 4;
  const mask: u64 = ((<u64>1) << (<u64>w)) - 1;
  if (w == 4 && s == 0) {
    const vmn = f32x4.splat(mn);
    const vsc = f32x4.splat(sc);
    const m4 = i32x4.splat(15);
    let c = 0;
    // 8 values per word: two f32x4 per u32
    let wp = inp + (<usize>(bit0 >> 5) << 2);
    for (; c + 8 <= n; c += 8) {
      const word = load<u32>(wp);
      wp += 4;
      const lo = i32x4(<i32>word, <i32>(word >> 4), <i32>(word >> 8), <i32>(word >> 12));
      const hi = i32x4(<i32>(word >> 16), <i32>(word >> 20), <i32>(word >> 24), <i32>(word >> 28));
      v128.store(x + (<usize>c << 2), f32x4.add(vmn, f32x4.mul(f32x4.convert_i32x4_s(v128.and(lo, m4)), vsc)));
      v128.store(x + (<usize>c << 2), f32x4.add(vmn, f32x4.mul(f32x4.convert_i32x4_s(v128.and(hi, m4)), vsc)), 16);
    }
    const base = inp + (<usize>(bit0 >> 5) << 2);
    for (; c < n; c++) {
      const word = load<u32>(base + (<usize>(c >> 3) << 2));
      store<f32>(x + (<usize>c << 2), mn + <f32>((word >> (<u32>(c & 7) << 2)) & 15) * sc);
    }
    return;
  }
  let c = 0;
  if (s == 0) {
    // whole periods unrolled per width, the tail below
    const base = inp + (<usize>(bit0 >> 5) << 2);
    if (w == 2) c = unpack2(base, n, mn, sc, x);
    else if (w == 3) c = unpack3(base, n, mn, sc, x);
    else if (w == 5) c = unpack5(base, n, mn, sc, x);
    else if (w == 6) c = unpack6(base, n, mn, sc, x);
    else if (w == 8) c = unpack8(base, n, mn, sc, x);
    if (c > 0) {
      const bit = c * w;
      p = base + (<usize>(bit >> 5) << 2);
      acc = <u64>load<u32>(p) >> (<u64>(bit & 31));
      nb = 32 - (bit & 31);
      p += 4;
    }
  }
  for (; c < n; c++) {
    if (nb < w) {
      acc |= (<u64>load<u32>(p)) << (<u64>nb);
      p += 4;
      nb += 32;
    }
    store<f32>(x + (<usize>c << 2), mn + <f32>(<u32>(acc & mask)) * sc);
    acc >>= <u64>w;
    nb -= w;
  }
}

// ---- ts-tabq against a calibration context (tabq-ec.ts): quantize, prefix-code, decode ----
// Reconstruction is x̂ = f32(center + f32(lv·mult)) everywhere (encoder error, both decoders): the
// TypeScript and WebAssembly paths agree bit for bit.

/** 1 when all n values are finite. */
export function ecFinite(x: usize, n: i32): i32 {
  const zero = f32x4.splat(0);
  let ok = i32x4.splat(-1);
  let c = 0;
  for (; c + 4 <= n; c += 4) {
    const v = v128.load(x + (<usize>c << 2));
    ok = v128.and(ok, f32x4.eq(f32x4.sub(v, v), zero));
  }
  if (!v128.all_true<i32>(ok)) return 0;
  for (; c < n; c++) {
    const v = load<f32>(x + (<usize>c << 2));
    if (v - v != 0) return 0;
  }
  return 1;
}

let ecCount: i32 = 0;
export function ecOutliers(): i32 {
  return ecCount;
}
/**
 * Levels of n values: lv = floor((x − center)·invScale·invStep + 0.5) into q (i32); |lv| > M marks an
 * outlier (q = 0x7fffffff, its channel appended to outList, the count to ecOutliers()). With needErr,
 * returns Σ (x − x̂)² over the non-outliers.
 */
export function ecQuant(x: usize, n: i32, center: usize, invScale: usize, invStep: f32, M: i32, mult: usize, q: usize, outList: usize, needErr: i32): f64 {
  let nOut = 0;
  const vinv = f32x4.splat(invStep);
  const vhalf = f32x4.splat(0.5);
  const vM = i32x4.splat(M);
  const vnM = i32x4.splat(-M);
  const vOut = i32x4.splat(0x7fffffff);
  let verr = f32x4.splat(0);
  let c = 0;
  for (; c + 4 <= n; c += 4) {
    const o = <usize>c << 2;
    const v = v128.load(x + o);
    const cen = v128.load(center + o);
    const y = f32x4.mul(f32x4.mul(f32x4.sub(v, cen), v128.load(invScale + o)), vinv);
    const lv = i32x4.trunc_sat_f32x4_s(f32x4.floor(f32x4.add(y, vhalf)));
    const out = v128.or(i32x4.gt_s(lv, vM), i32x4.lt_s(lv, vnM));
    v128.store(q + o, v128.bitselect(vOut, lv, out));
    if (needErr) {
      const r = f32x4.add(cen, f32x4.mul(f32x4.convert_i32x4_s(lv), v128.load(mult + o)));
      const d = v128.andnot(f32x4.sub(v, r), out);
      verr = f32x4.add(verr, f32x4.mul(d, d));
    }
    if (v128.any_true(out)) {
      for (let k = 0; k < 4; k++) {
        if (load<i32>(q + o + (<usize>k << 2)) == 0x7fffffff) {
          store<i32>(outList + (<usize>nOut << 2), c + k);
          nOut++;
        }
      }
    }
  }
  let err: f64 = <f64>f32x4.extract_lane(verr, 0) + <f64>f32x4.extract_lane(verr, 1) + <f64>f32x4.extract_lane(verr, 2) + <f64>f32x4.extract_lane(verr, 3);
  for (; c < n; c++) {
    const o = <usize>c << 2;
    const xv = load<f32>(x + o);
    const yv = (xv - load<f32>(center + o)) * load<f32>(invScale + o) * invStep;
    const f = Mathf.floor(yv + 0.5);
    const l = f > 2147483520 ? 0x7fffffff : f < -2147483520 ? -0x7fffffff : <i32>f;
    if (l > M || l < -M) {
      store<i32>(q + o, 0x7fffffff);
      store<i32>(outList + (<usize>nOut << 2), c);
      nOut++;
    } else {
      store<i32>(q + o, l);
      if (needErr) {
        const d = xv - (load<f32>(center + o) + <f32>l * load<f32>(mult + o));
        err += <f64>d * <f64>d;
      }
    }
  }
  ecCount = nOut;
  return err;
}

// Prefix-code streams, LSB-first, in 1 or 4 lanes: coded value j goes to lane j % lanes, so a decoder
// follows four independent chains at once. Outlier slots (q = 0x7fffffff) are coded as level 0.
// Writers are branchless: after each code the 64-bit accumulator is stored whole and the pointer moves
// by the whole bytes it holds. Readers take an unaligned 64-bit window at each lane's bit position; every
// stream is followed by zero padding in memory.
const WS = memory.data(96); // acc[4] u64 | bits[4] u64 | ptr[4] u32 | start[4] u32
let wLanes: i32 = 1;
let wPhase: i32 = 0;
export function ecWriteStart(o0: usize, o1: usize, o2: usize, o3: usize, lanes: i32): void {
  for (let i = 0; i < 4; i++) {
    store<u64>(WS + (<usize>i << 3), 0);
    store<u64>(WS + 32 + (<usize>i << 3), 0);
  }
  store<u32>(WS + 64, <u32>o0);
  store<u32>(WS + 68, <u32>o1);
  store<u32>(WS + 72, <u32>o2);
  store<u32>(WS + 76, <u32>o3);
  store<u32>(WS + 80, <u32>o0);
  store<u32>(WS + 84, <u32>o1);
  store<u32>(WS + 88, <u32>o2);
  store<u32>(WS + 92, <u32>o3);
  wLanes = lanes;
  wPhase = 0;
}
@inline function putLane(lane: i32, l: i32, codeM: usize, lenM: usize): void {
  const ap = WS + (<usize>lane << 3);
  const bp = WS + 32 + (<usize>lane << 3);
  const pp = WS + 64 + (<usize>lane << 2);
  let acc = load<u64>(ap);
  let bits = load<u64>(bp);
  let p = <usize>load<u32>(pp);
  acc |= (<u64>load<u16>(codeM + (<usize>l << 1))) << bits;
  bits += <u64>load<u8>(lenM + <usize>l);
  store<u64>(p, acc);
  const whole = bits & ~(<u64>7);
  p += <usize>(whole >> 3);
  store<u64>(ap, acc >> whole);
  store<u64>(bp, bits - whole);
  store<u32>(pp, <u32>p);
}
@inline function level(q: usize, c: i32): i32 {
  const l = load<i32>(q + (<usize>c << 2));
  return l == 0x7fffffff ? 0 : l;
}
/** Appends the codes of the n levels in q with tables code (u16) / len (u8) offset by M. */
export function ecWrite(q: usize, n: i32, code: usize, len: usize, M: i32): void {
  const codeM = code + (<usize>M << 1);
  const lenM = len + <usize>M;
  let c = 0;
  if (wLanes == 1) {
    for (; c < n; c++) putLane(0, level(q, c), codeM, lenM);
    return;
  }
  for (; wPhase != 0 && c < n; c++) {
    putLane(wPhase, level(q, c), codeM, lenM);
    wPhase = (wPhase + 1) & 3;
  }
  let a0 = load<u64>(WS), a1 = load<u64>(WS + 8), a2 = load<u64>(WS + 16), a3 = load<u64>(WS + 24);
  let b0 = load<u64>(WS + 32), b1 = load<u64>(WS + 40), b2 = load<u64>(WS + 48), b3 = load<u64>(WS + 56);
  let p0 = <usize>load<u32>(WS + 64), p1 = <usize>load<u32>(WS + 68), p2 = <usize>load<u32>(WS + 72), p3 = <usize>load<u32>(WS + 76);
  for (; c + 4 <= n; c += 4) {
    const l0 = level(q, c), l1 = level(q, c + 1), l2 = level(q, c + 2), l3 = level(q, c + 3);
    a0 |= (<u64>load<u16>(codeM + (<usize>l0 << 1))) << b0;
    a1 |= (<u64>load<u16>(codeM + (<usize>l1 << 1))) << b1;
    a2 |= (<u64>load<u16>(codeM + (<usize>l2 << 1))) << b2;
    a3 |= (<u64>load<u16>(codeM + (<usize>l3 << 1))) << b3;
    b0 += <u64>load<u8>(lenM + <usize>l0);
    b1 += <u64>load<u8>(lenM + <usize>l1);
    b2 += <u64>load<u8>(lenM + <usize>l2);
    b3 += <u64>load<u8>(lenM + <usize>l3);
    store<u64>(p0, a0);
    store<u64>(p1, a1);
    store<u64>(p2, a2);
    store<u64>(p3, a3);
    const w0 = b0 & ~(<u64>7), w1 = b1 & ~(<u64>7), w2 = b2 & ~(<u64>7), w3 = b3 & ~(<u64>7);
    p0 += <usize>(w0 >> 3);
    p1 += <usize>(w1 >> 3);
    p2 += <usize>(w2 >> 3);
    p3 += <usize>(w3 >> 3);
    a0 >>= w0;
    a1 >>= w1;
    a2 >>= w2;
    a3 >>= w3;
    b0 -= w0;
    b1 -= w1;
    b2 -= w2;
    b3 -= w3;
  }
  store<u64>(WS, a0);
  store<u64>(WS + 8, a1);
  store<u64>(WS + 16, a2);
  store<u64>(WS + 24, a3);
  store<u64>(WS + 32, b0);
  store<u64>(WS + 40, b1);
  store<u64>(WS + 48, b2);
  store<u64>(WS + 56, b3);
  store<u32>(WS + 64, <u32>p0);
  store<u32>(WS + 68, <u32>p1);
  store<u32>(WS + 72, <u32>p2);
  store<u32>(WS + 76, <u32>p3);
  for (; c < n; c++) {
    putLane(wPhase, level(q, c), codeM, lenM);
    wPhase = (wPhase + 1) & 3;
  }
}
/** Flushes a lane; returns its stream length in bytes. */
export function ecWriteEnd(lane: i32): i32 {
  const pp = WS + 64 + (<usize>lane << 2);
  let p = <usize>load<u32>(pp);
  if (load<u64>(WS + 32 + (<usize>lane << 3)) > 0) {
    store<u8>(p, <u8>load<u64>(WS + (<usize>lane << 3)));
    p++;
  }
  return <i32>(p - <usize>load<u32>(WS + 80 + (<usize>lane << 2)));
}

const RS = memory.data(48); // pos[4] u64 | base[4] u32
let rLanes: i32 = 1;
let rPhase: i32 = 0;
export function ecReadStart(i0: usize, i1: usize, i2: usize, i3: usize, lanes: i32): void {
  for (let i = 0; i < 4; i++) store<u64>(RS + (<usize>i << 3), 0);
  store<u32>(RS + 32, <u32>i0);
  store<u32>(RS + 36, <u32>i1);
  store<u32>(RS + 40, <u32>i2);
  store<u32>(RS + 44, <u32>i3);
  rLanes = lanes;
  rPhase = 0;
}
@inline function getLane(lane: i32, lookup: usize): i32 {
  const pp = RS + (<usize>lane << 3);
  const pos = load<u64>(pp);
  const win = load<u64>(<usize>load<u32>(RS + 32 + (<usize>lane << 2)) + <usize>(pos >> 3)) >> (pos & 7);
  const e = <i32>load<u16>(lookup + (<usize>(<u32>win & 0xfff) << 1));
  store<u64>(pp, pos + <u64>(e & 15));
  return e >> 4;
}
/** Decodes n levels (symbol − M) into lv (i32) with the 12-bit lookup table (u16 entries). */
export function ecRead(n: i32, lookup: usize, M: i32, lv: usize): void {
  let c = 0;
  if (rLanes == 1) {
    for (; c < n; c++) store<i32>(lv + (<usize>c << 2), getLane(0, lookup) - M);
    return;
  }
  for (; rPhase != 0 && c < n; c++) {
    store<i32>(lv + (<usize>c << 2), getLane(rPhase, lookup) - M);
    rPhase = (rPhase + 1) & 3;
  }
  let s0 = load<u64>(RS), s1 = load<u64>(RS + 8), s2 = load<u64>(RS + 16), s3 = load<u64>(RS + 24);
  const g0 = <usize>load<u32>(RS + 32), g1 = <usize>load<u32>(RS + 36), g2 = <usize>load<u32>(RS + 40), g3 = <usize>load<u32>(RS + 44);
  for (; c + 4 <= n; c += 4) {
    const e0 = <i32>load<u16>(lookup + (<usize>(<u32>(load<u64>(g0 + <usize>(s0 >> 3)) >> (s0 & 7)) & 0xfff) << 1));
    const e1 = <i32>load<u16>(lookup + (<usize>(<u32>(load<u64>(g1 + <usize>(s1 >> 3)) >> (s1 & 7)) & 0xfff) << 1));
    const e2 = <i32>load<u16>(lookup + (<usize>(<u32>(load<u64>(g2 + <usize>(s2 >> 3)) >> (s2 & 7)) & 0xfff) << 1));
    const e3 = <i32>load<u16>(lookup + (<usize>(<u32>(load<u64>(g3 + <usize>(s3 >> 3)) >> (s3 & 7)) & 0xfff) << 1));
    s0 += <u64>(e0 & 15);
    s1 += <u64>(e1 & 15);
    s2 += <u64>(e2 & 15);
    s3 += <u64>(e3 & 15);
    const o = lv + (<usize>c << 2);
    store<i32>(o, (e0 >> 4) - M);
    store<i32>(o + 4, (e1 >> 4) - M);
    store<i32>(o + 8, (e2 >> 4) - M);
    store<i32>(o + 12, (e3 >> 4) - M);
  }
  store<u64>(RS, s0);
  store<u64>(RS + 8, s1);
  store<u64>(RS + 16, s2);
  store<u64>(RS + 24, s3);
  for (; c < n; c++) {
    store<i32>(lv + (<usize>c << 2), getLane(rPhase, lookup) - M);
    rPhase = (rPhase + 1) & 3;
  }
}
/** Bits a lane's reader has consumed. */
export function ecReadUsed(lane: i32): i32 {
  return <i32>load<u64>(RS + (<usize>lane << 3));
}
/** x = center + f32(lv)·mult for n values (f32, lane by lane). */
export function ecRecon(lv: usize, n: i32, center: usize, mult: usize, x: usize): void {
  let c = 0;
  for (; c + 4 <= n; c += 4) {
    const o = <usize>c << 2;
    v128.store(x + o, f32x4.add(v128.load(center + o), f32x4.mul(f32x4.convert_i32x4_s(v128.load(lv + o)), v128.load(mult + o))));
  }
  for (; c < n; c++) {
    const o = <usize>c << 2;
    store<f32>(x + o, load<f32>(center + o) + <f32>load<i32>(lv + o) * load<f32>(mult + o));
  }
}


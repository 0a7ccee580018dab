import { describe, expect, it } from 'vitest';
import { rng } from '../models/runtime/sampler.js';
import { SplitLLMError } from '../shared/errors.js';
import { CalibrationContexts, contextData, fitStep, type Calibration } from '../quantization/activations/calibration.js';
import { CodecContext, limitedHuffman, MAX_CODE_BITS, rungNearest, rungStep } from '../quantization/activations/context.js';
import { HEADER_BYTES } from '../quantization/activations/format.js';
import { codecAtSplit, createCodec, decodeMessage } from '../quantization/activations/registry.js';
import { lanesFor, SINK_TOLERANCE } from '../quantization/activations/tabq-ec.js';
import { useWasmKernels, wasmKernels } from '../quantization/activations/wasm/kernels.js';

function normalGen(seed: number) {
  const next = rng(seed);
  return () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
}

/** Hidden-state-like rows: per-channel means and scales, Student-t tails, a fixed first token. */
function hiddenRows(windows: number, tokens: number, dim: number, seed: number): Float32Array[] {
  const n = normalGen(seed);
  const shape = normalGen(99); // channel means/scales shared by every seed: one "model"
  const mean = Array.from({ length: dim }, () => 0.3 * shape());
  const sd = Array.from({ length: dim }, () => 0.5 + Math.abs(shape()));
  const sink = Array.from({ length: dim }, (_, c) => 8 * shape() + mean[c]!);
  const rows: Float32Array[] = [];
  for (let w = 0; w < windows; w++) {
    const x = new Float32Array(tokens * dim);
    for (let c = 0; c < dim; c++) x[c] = sink[c]!;
    for (let t = 1; t < tokens; t++) {
      for (let c = 0; c < dim; c++) {
        let chi = 0;
        for (let k = 0; k < 4; k++) chi += n() ** 2;
        x[t * dim + c] = mean[c]! + (sd[c]! * n()) / Math.sqrt(chi / 4);
      }
    }
    rows.push(x);
  }
  return rows;
}

type Input = { name: string; x: Float32Array; tokens: number; dim: number };

function inputsFor(dim: number): Input[] {
  const mk = (name: string, tokens: number, f: (t: number, c: number) => number): Input => {
    const x = new Float32Array(tokens * dim);
    for (let t = 0; t < tokens; t++) for (let c = 0; c < dim; c++) x[t * dim + c] = f(t, c);
    return { name, x, tokens, dim };
  };
  const n = normalGen(5);
  const like = hiddenRows(1, 24, dim, 7)[0]!;
  return [
    { name: 'hidden-like (sink first)', x: like, tokens: 24, dim },
    mk('random normal', 17, () => n()),
    mk('heavy-tailed Student-t (ν=3)', 20, () => {
      let chi = 0;
      for (let k = 0; k < 3; k++) chi += n() ** 2;
      return n() / Math.sqrt(chi / 3);
    }),
    mk('all-zero', 4, () => 0),
    mk('constant', 3, () => 0.731),
    mk('single token', 1, () => n()),
    mk('huge outliers', 6, (t, c) => (c === 5 ? 1e6 * (t % 2 ? 1 : -1) : c === 9 && t === 3 ? -3e5 : n())),
  ];
}

const contexts = new Map([64, 172].map((d) => [d, new CodecContext(contextData(hiddenRows(40, 32, d, d), d))]));
const env = (dim: number) => ({ context: () => contexts.get(dim) });
const all = { contexts: new Map([...contexts.values()].map((c) => [c.id, c])) };

const relTok = (a: Float32Array, b: Float32Array, t: number, dim: number) => {
  let e = 0;
  let n = 0;
  for (let c = t * dim; c < (t + 1) * dim; c++) {
    e += (a[c]! - b[c]!) ** 2;
    n += a[c]! ** 2;
  }
  return n === 0 ? Math.sqrt(e) : Math.sqrt(e / n);
};

const SPECS = ['ts-tabq:cal=1,step=0.3', 'ts-tabq:cal=1,step=0.05,tau=2', 'ts-tabq:cal=1,eps=0.08', 'ts-tabq:cal=1,eps=0.01,tau=none,outliers=f16'];

for (const wasm of [true, false]) describe(`ts-tabq against a calibration context keeps its promises (${wasm ? 'WebAssembly' : 'TypeScript'} kernels)`, () => {
  for (const dim of [64, 172]) {
    for (const spec of SPECS) {
      it(`${spec} at dim ${dim}`, () => {
        useWasmKernels(wasm);
        expect(!!wasmKernels()).toBe(wasm);
        const codec = createCodec(spec, env(dim));
        const ctx = contexts.get(dim)!;
        for (const inp of inputsFor(dim)) {
          const { x, tokens } = inp;
          const where = `${spec} on ${inp.name} (dim ${dim})`;
          const bytes = codec.encode(x, tokens, dim);
          expect(codec.encode(x, tokens, dim), `${where}: deterministic`).toEqual(bytes);
          const d = decodeMessage(bytes, all);
          expect([d.tokens, d.dim]).toEqual([tokens, dim]);
          expect(codec.decode(bytes).x).toEqual(d.x);
          const y = d.x;
          const sinkSent = (bytes[HEADER_BYTES + 4]! & 16) !== 0;
          expect(sinkSent, where).toBe(inp.name.includes('sink'));
          if (sinkSent) expect(relTok(x, y, 0, dim), where).toBeLessThanOrEqual(SINK_TOLERANCE);
          const t0 = sinkSent ? 1 : 0;
          if (spec.includes('eps=')) {
            const eps = Number(/eps=([\d.]+)/.exec(spec)![1]);
            for (let t = t0; t < tokens; t++) expect(relTok(x, y, t, dim), `${where} token ${t}`).toBeLessThanOrEqual(eps * (1 + 1e-6));
          } else {
            const step = rungStep(rungNearest(Number(/step=([\d.]+)/.exec(spec)![1])));
            for (let i = t0 * dim; i < x.length; i++) {
              const c = i % dim;
              const err = Math.abs(x[i]! - y[i]!);
              // a value is either on the grid (within half a step) or an outlier sent exactly
              if (err !== 0) expect(err, `${where} value ${i}`).toBeLessThanOrEqual((step * ctx.scale[c]!) / 2 * (1 + 1e-5) + Math.abs(x[i]!) * 1e-6);
            }
          }
          if (inp.name === 'huge outliers' && !spec.includes('f16')) for (let t = 0; t < tokens; t++) expect(y[t * dim + 5]).toBe(x[t * dim + 5]);
        }
      });
    }
  }

});

describe('ts-tabq against a calibration context', () => {
  it('WebAssembly and TypeScript encoders write the same messages, and their decoders read them to the same values', () => {
    for (const dim of [64, 172]) {
      for (const spec of SPECS) {
        for (const inp of inputsFor(dim)) {
          useWasmKernels(true);
          const a = createCodec(spec, env(dim)).encode(inp.x, inp.tokens, dim);
          const da = decodeMessage(a, all).x;
          useWasmKernels(false);
          const b = createCodec(spec, env(dim)).encode(inp.x, inp.tokens, dim);
          const db = decodeMessage(a, all).x;
          const where = `${spec} on ${inp.name} (dim ${dim})`;
          if (spec.includes('step')) expect(b, where).toEqual(a); // eps mode may pick another rung at a tie of float error sums
          expect(db, where).toEqual(da);
          expect(decodeMessage(b, all).x.length).toBe(inp.x.length);
        }
      }
    }
    useWasmKernels(true);
    expect([lanesFor(1023), lanesFor(1024)]).toEqual([1, 4]);
  });

  it('spends about the entropy: a hidden-like message at step 0.3 takes 3–4.5 bits per value, far fewer than fp16', () => {
    const dim = 172;
    const rows = hiddenRows(1, 200, dim, 3)[0]!;
    const bytes = createCodec('ts-tabq:cal=1,step=0.3', env(dim)).encode(rows, 200, dim);
    const bpv = (8 * bytes.length) / rows.length;
    expect(bpv).toBeGreaterThan(3);
    expect(bpv).toBeLessThan(4.5);
  });

  it('prefix codes are complete, at most 12 bits, and decode what they encode', () => {
    const ctx = contexts.get(64)!;
    for (const r of [0, 40, 55, 64, 80, 127]) {
      const tab = ctx.table(r, 6);
      let kraft = 0;
      for (const l of tab.len) {
        expect(l).toBeGreaterThan(0);
        expect(l).toBeLessThanOrEqual(MAX_CODE_BITS);
        kraft += 2 ** -l;
      }
      expect(kraft).toBeCloseTo(1, 12);
      for (let s = 0; s < tab.len.length; s++) {
        const e = tab.lookup[tab.code[s]!]!;
        expect([e >> 4, e & 15]).toEqual([s, tab.len[s]]);
      }
    }
    expect(limitedHuffman(Float64Array.from([1e9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]), 4).every((l) => l <= 4)).toBe(true);
  });

  it('the same calibration gives the same context id; another calibration is refused with a typed error', () => {
    const again = new CodecContext(contextData(hiddenRows(40, 32, 64, 64), 64));
    expect(again.id).toBe(contexts.get(64)!.id);
    const other = new CodecContext(contextData(hiddenRows(40, 32, 64, 1234), 64));
    expect(other.id).not.toBe(again.id);
    const x = hiddenRows(1, 8, 64, 5)[0]!;
    const bytes = createCodec('ts-tabq:cal=1,step=0.3', env(64)).encode(x, 8, 64);
    expect(() => decodeMessage(bytes, { contexts: new Map([[other.id, other]]) })).toThrow(expect.objectContaining({ code: 'E_CODEC_CONTEXT' }) as unknown as Error);
    expect(() => decodeMessage(bytes)).toThrow(/give the edge and the cloud the same calibration/);
    expect(() => createCodec('ts-tabq:cal=1,step=0.3')).toThrow(expect.objectContaining({ code: 'E_CODEC_CONTEXT' }) as unknown as Error);
    expect(() => createCodec('ts-tabq:cal=1,step=0.3', env(64)).encode(new Float32Array(172), 1, 172)).toThrow(expect.objectContaining({ code: 'E_CODEC_INPUT' }) as unknown as Error);
    for (const bad of ['ts-tabq:cal=1,step=0.3,eps=0.1', 'ts-tabq:cal=x', 'ts-tabq:cal=1,step=-1', 'ts-tabq:cal=1,budget=3', 'ts-tabq:cal=1,outliers=f8']) {
      expect(() => createCodec(bad, env(64)), bad).toThrow(expect.objectContaining({ code: 'E_CODEC_SPEC' }) as unknown as Error);
    }
    expect(createCodec('ts-tabq:cal=1,step=0.3', env(64)).spec).toBe('ts-tabq:cal=1,step=0.2973,tau=6');
  });

  it('a context file with wrong shapes is a typed error', () => {
    const good = contextData(hiddenRows(4, 8, 64, 1), 64);
    for (const bad of [{ ...good, dim: 0 }, { ...good, center: good.center.slice(1) }, { ...good, scale: good.scale.map(() => 0) }, { ...good, hist: { ...good.hist, counts: [1.5, 2] } }, { ...good, sink: [1] }]) {
      expect(() => new CodecContext(bad)).toThrow(expect.objectContaining({ code: 'E_CODEC_CONTEXT' }) as unknown as Error);
    }
    const cal: Calibration = { format: 'splitllm-calibration', version: 1, model: 'm', text: 't', windows: 4, target: 0.01, baselinePpl: 1, splits: { '3': { stats: {} as never, context: good } } };
    const cc = new CalibrationContexts(cal);
    expect(cc.context(3)!.dim).toBe(64);
    expect(cc.context(2)).toBeUndefined();
    // a bare ts-tabq is each split's calibrated default; cal=K follows the split where a context exists
    cal.splits['4'] = { stats: {} as never, context: contextData(hiddenRows(4, 8, 64, 2), 64), choice: { codec: 'ts-tabq:cal=4,step=0.25', bitsPerValue: 4, ppl: 1, pplIncrease: 0 } };
    const c2 = new CalibrationContexts(cal);
    expect(codecAtSplit('ts-tabq', 4, c2).spec).toBe('ts-tabq:cal=4,step=0.25,tau=6');
    // a split the calibration did not cover: the self-contained default
    expect(codecAtSplit('ts-tabq', 3, c2).spec).toBe('ts-tabq:eps=0.05,tau=auto');
    // no calibration at all: an error that names the command, not a quiet fall back to the uncalibrated eps mode
    expect(() => codecAtSplit('ts-tabq', 2)).toThrow(/no calibration is loaded \(asked at split 2\): run 'splitllm calibrate --model M --text CALIB\.txt'/);
    expect(() => codecAtSplit('ts-tabq', 2, new CalibrationContexts(undefined))).toThrow(/run 'splitllm calibrate/);
    expect(codecAtSplit('ts-tabq:cal=4,step=0.3', 3, c2).spec).toBe('ts-tabq:cal=3,step=0.2973,tau=6');
    expect(codecAtSplit('ts-tabq:cal=4,step=0.3', 2, c2).spec).toBe('ts-tabq:cal=4,step=0.2973,tau=6'); // no context at 2: stays
    expect(() => codecAtSplit('default', 3, c2)).toThrow(expect.objectContaining({ code: 'E_CODEC_SPEC' }) as unknown as Error);
  });

  it('the step fit smooths noisy measurements and picks the coarsest step within the target', () => {
    const pts = [0.42, 0.35, 0.3, 0.25, 0.21].map((step, i) => ({ step, increase: 0.1 * step * step * (1 + (i % 2 ? 0.2 : -0.2)) }));
    const f = fitStep(pts, [0.5, 0.42, 0.35, 0.3, 0.25, 0.21, 0.18], 0.009);
    expect(f.a).toBeGreaterThan(0.09);
    expect(f.a).toBeLessThan(0.11);
    expect(f.step).toBe(0.3);
    expect(fitStep(pts, [0.5, 0.42], 1e-6).step).toBe(0.42); // nothing fits: the finest
  });

  it('fuzz: mutated messages decode or fail with a typed error', () => {
    const next = rng(77);
    const msgs: Uint8Array[] = [];
    for (const dim of [64, 172]) for (const spec of SPECS) for (const inp of inputsFor(dim).slice(0, 4)) msgs.push(createCodec(spec, env(dim)).encode(inp.x, inp.tokens, dim));
    let typed = 0;
    for (let iter = 0; iter < 4000; iter++) {
      const src = msgs[Math.floor(next() * msgs.length)]!;
      let m: Uint8Array;
      const kind = iter % 4;
      if (kind === 0) m = src.subarray(0, Math.floor(next() * src.length));
      else if (kind === 1) {
        m = src.slice();
        for (let f = 0; f < 1 + Math.floor(next() * 4); f++) {
          const i = Math.floor(next() * m.length);
          m[i] = m[i]! ^ (1 << Math.floor(next() * 8));
        }
      } else if (kind === 2) {
        m = src.slice();
        const i = HEADER_BYTES + 4 + Math.floor(next() * Math.min(30, m.length - HEADER_BYTES - 4));
        if (i < m.length) m[i] = Math.floor(next() * 256);
      } else {
        m = src.slice();
        new DataView(m.buffer).setUint32(4 + 4 * Math.floor(next() * 2), Math.floor(next() * 2 ** 32), true);
      }
      try {
        const d = decodeMessage(m, all);
        expect(d.x.length).toBe(d.tokens * d.dim);
        for (let i = 0; i < d.x.length; i++) if (!Number.isFinite(d.x[i]!)) throw new Error('non-finite output');
      } catch (e) {
        expect(e, String(e)).toBeInstanceOf(SplitLLMError);
        expect((e as SplitLLMError).code).toMatch(/^E_CODEC_(CORRUPT|LIMIT|CONTEXT|NONFINITE)$/);
        typed++;
      }
    }
    expect(typed).toBeGreaterThan(2000);
  });
});

import { describe, expect, it } from 'vitest';
import { rng } from '../models/runtime/sampler.js';
import { SplitLLMError } from '../shared/errors.js';
import { checkWireIds, CODECS, createCodec, decodeMessage, parseSpec } from '../quantization/activations/registry.js';
import { topkDefinition } from '../quantization/activations/sparse.js';
import { HEADER_BYTES } from '../quantization/activations/format.js';
import { useWasmKernels, wasmKernels } from '../quantization/activations/wasm/kernels.js';

function normalGen(seed: number) {
  const next = rng(seed);
  return () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
}

type Input = { name: string; x: Float32Array; tokens: number; dim: number };

function inputs(): Input[] {
  const mk = (name: string, tokens: number, dim: number, f: (t: number, c: number) => number): Input => {
    const x = new Float32Array(tokens * dim);
    for (let t = 0; t < tokens; t++) for (let c = 0; c < dim; c++) x[t * dim + c] = f(t, c);
    return { name, x, tokens, dim };
  };
  const n1 = normalGen(1);
  const n2 = normalGen(2);
  const n3 = normalGen(3);
  const studentT = () => {
    let chi = 0;
    for (let k = 0; k < 3; k++) chi += n2() ** 2;
    return n2() / Math.sqrt(chi / 3);
  };
  return [
    mk('random normal', 33, 128, () => n1()),
    mk('heavy-tailed Student-t (ν=3)', 40, 96, () => studentT()),
    mk('all-zero', 7, 64, () => 0),
    mk('constant', 5, 64, () => 0.731),
    mk('single token', 1, 64, () => n3()),
    mk('odd width 172', 9, 172, () => n3()),
    mk('huge outliers', 12, 256, (t, c) => (c === 17 ? 1e6 * (t % 2 ? 1 : -1) : c === 200 && t === 3 ? -3e5 : n3())),
  ];
}

const rel = (a: Float32Array, b: Float32Array, from = 0, to = a.length) => {
  let e = 0;
  let n = 0;
  for (let i = from; i < to; i++) {
    e += (a[i]! - b[i]!) ** 2;
    n += a[i]! ** 2;
  }
  return n === 0 ? Math.sqrt(e) : Math.sqrt(e / n);
};

const SPECS = ['fp32', 'fp16', 'int8', 'uniform:4', 'uniform:2', 'ts-tabq', 'ts-tabq:eps=0.02,tau=2.5', 'ts-tabq:eps=0.1,group=32,outliers=f16', 'ts-tabq:budget=3.5', 'topk:10', 'lowrank:4'];

for (const wasm of [true, false]) describe(`codec round trips keep their promises (${wasm ? 'WebAssembly' : 'TypeScript'} kernels)`, () => {
  for (const spec of SPECS) {
    it(spec, () => {
      useWasmKernels(wasm);
      expect(!!wasmKernels()).toBe(wasm);
      const codec = createCodec(spec);
      for (const inp of inputs()) {
        const { x, tokens, dim } = inp;
        if (spec === 'fp16' && inp.name === 'huge outliers') continue; // past the half range: saturates (tested below)
        const bytes = codec.encode(x, tokens, dim);
        expect(codec.encode(x, tokens, dim), `${inp.name}: deterministic`).toEqual(bytes);
        const d = decodeMessage(bytes);
        expect([d.tokens, d.dim]).toEqual([tokens, dim]);
        const y = d.x;
        const where = `${spec} on ${inp.name}`;
        if (spec === 'fp32') expect(y, where).toEqual(x);
        else if (spec === 'fp16') {
          for (let i = 0; i < x.length; i++) expect(Math.abs(y[i]! - x[i]!), where).toBeLessThanOrEqual(Math.abs(x[i]!) * 2 ** -11 + 2 ** -24);
        } else if (spec === 'int8') {
          for (let t = 0; t < tokens; t++) {
            for (let b0 = 0; b0 < dim; b0 += 32) {
              let amax = 0;
              for (let c = b0; c < Math.min(dim, b0 + 32); c++) amax = Math.max(amax, Math.abs(x[t * dim + c]!));
              for (let c = b0; c < Math.min(dim, b0 + 32); c++) {
                expect(Math.abs(y[t * dim + c]! - x[t * dim + c]!), where).toBeLessThanOrEqual((amax / 127) * 0.5 * (1 + 2 ** -9) + 1e-12);
              }
            }
          }
        } else if (spec.startsWith('uniform')) {
          const bits = Number(spec.split(':')[1]);
          for (let t = 0; t < tokens; t++) {
            const row = x.subarray(t * dim, (t + 1) * dim);
            const range = Math.max(...row) - Math.min(...row);
            const step = (range / (2 ** bits - 1)) * (1 + 2 ** -9);
            for (let c = 0; c < dim; c++) expect(Math.abs(y[t * dim + c]! - row[c]!), where).toBeLessThanOrEqual(step / 2 + Math.abs(row[c]!) * 2e-6 + 1e-7);
          }
        } else if (spec.startsWith('ts-tabq') && !spec.includes('budget')) {
          const eps = spec.includes('eps=') ? Number(/eps=([\d.]+)/.exec(spec)![1]) : 0.05;
          for (let t = 0; t < tokens; t++) expect(rel(x, y, t * dim, (t + 1) * dim), `${where} token ${t}`).toBeLessThanOrEqual(eps * (1 + 1e-6));
          if (inp.name === 'huge outliers' && spec.includes('tau=2.5')) {
            for (let t = 0; t < tokens; t++) expect(y[t * dim + 17]).toBe(x[t * dim + 17]); // kept exactly
          }
          if (inp.name === 'all-zero' || inp.name === 'constant') expect(y, where).toEqual(x.map((v) => (v === 0 ? 0 : y[0]!)));
        } else if (spec.includes('budget')) {
          const bpv = (8 * (bytes.length - HEADER_BYTES)) / x.length;
          // every token at 2 bits already costs more than the budget only for tiny widths (dim 64, 1 token)
          if (dim >= 96) expect(bpv, where).toBeLessThanOrEqual(3.5 + 1e-9);
          expect(rel(x, y), where).toBeLessThan(0.5);
        } else if (spec.startsWith('topk')) {
          const n = Math.ceil(0.1 * x.length);
          let kept = 0;
          let minKept = Infinity;
          for (let i = 0; i < x.length; i++) {
            if (y[i] !== 0) {
              expect(y[i], where).toBe(x[i]);
              kept++;
              minKept = Math.min(minKept, Math.abs(x[i]!));
            }
          }
          expect(kept, where).toBeLessThanOrEqual(n);
          for (let i = 0; i < x.length; i++) if (y[i] === 0 && x[i] !== 0 && kept === n) expect(Math.abs(x[i]!), where).toBeLessThanOrEqual(minKept);
        } else if (spec.startsWith('lowrank')) {
          expect(rel(x, y), where).toBeLessThanOrEqual(1 + 1e-6);
          if (tokens <= 4) expect(rel(x, y), `${where}: rank ≥ tokens is exact`).toBeLessThan(1e-5);
        }
      }
    });
  }

  it('lowrank reconstructs a rank-3 matrix exactly and improves with rank', () => {
    const T = 50;
    const D = 40;
    const n = normalGen(9);
    const U = Array.from({ length: 3 }, () => Array.from({ length: T }, n));
    const V = Array.from({ length: 3 }, () => Array.from({ length: D }, n));
    const x = new Float32Array(T * D);
    for (let t = 0; t < T; t++) for (let d = 0; d < D; d++) for (let k = 0; k < 3; k++) x[t * D + d] = x[t * D + d]! + U[k]![t]! * V[k]![d]!;
    expect(rel(x, decodeMessage(createCodec('lowrank:3').encode(x, T, D)).x)).toBeLessThan(1e-5);
    const noise = inputs()[0]!;
    const e2 = rel(noise.x, decodeMessage(createCodec('lowrank:2').encode(noise.x, noise.tokens, noise.dim)).x);
    const e16 = rel(noise.x, decodeMessage(createCodec('lowrank:16').encode(noise.x, noise.tokens, noise.dim)).x);
    expect(e16).toBeLessThan(e2);
  });

  it('fp16 saturates values past the half range instead of sending Inf', () => {
    const y = decodeMessage(createCodec('fp16').encode(Float32Array.of(1e6, -1e6, 1), 1, 3)).x;
    expect(Array.from(y)).toEqual([65504, -65504, 1]);
  });

  it('ts-tabq in eps mode spends fewer bits where it can, and keeps outliers sparse', () => {
    const x = new Float32Array(64 * 256);
    const n = normalGen(4);
    for (let i = 0; i < x.length; i++) x[i] = n();
    const loose = createCodec('ts-tabq:eps=0.2,tau=none').encode(x, 64, 256).length;
    const tight = createCodec('ts-tabq:eps=0.01,tau=none').encode(x, 64, 256).length;
    expect(loose).toBeLessThan(tight);
    x[5] = 1e4;
    x[300] = -2e4;
    const withTs = createCodec('ts-tabq:eps=0.05,tau=10');
    const plain = createCodec('ts-tabq:eps=0.05,tau=none');
    // threshold splitting: the two outliers cost a few bytes instead of widening two tokens' ranges
    expect(withTs.encode(x, 64, 256).length).toBeLessThan(plain.encode(x, 64, 256).length);
  });

  it('budget mode meets the average bits per value at several targets', () => {
    const inp = inputs()[1]!;
    for (const budget of [3, 4, 6]) {
      const bytes = createCodec(`ts-tabq:budget=${budget},tau=8`).encode(inp.x, inp.tokens, inp.dim);
      expect((8 * (bytes.length - HEADER_BYTES)) / inp.x.length).toBeLessThanOrEqual(budget);
      expect((8 * (bytes.length - HEADER_BYTES)) / inp.x.length).toBeGreaterThan(budget - 1);
    }
    // below what headers and outliers already cost, every token gets the narrowest width
    const floor = createCodec('ts-tabq:budget=2,tau=8').encode(inp.x, inp.tokens, inp.dim);
    expect(floor.length).toBe(createCodec('ts-tabq:budget=2.2,tau=8').encode(inp.x, inp.tokens, inp.dim).length);
  });
});

it('WebAssembly and TypeScript kernels decode each other\'s messages to the same values', () => {
  for (const spec of ['ts-tabq', 'ts-tabq:eps=0.02,tau=2.5', 'ts-tabq:budget=3', 'uniform:3', 'uniform:5', 'ts-tabq:eps=0.1,group=32']) {
    for (const inp of inputs()) {
      useWasmKernels(true);
      const a = createCodec(spec).encode(inp.x, inp.tokens, inp.dim);
      const aw = decodeMessage(a).x;
      useWasmKernels(false);
      const b = createCodec(spec).encode(inp.x, inp.tokens, inp.dim);
      const aj = decodeMessage(a).x;
      const bj = decodeMessage(b).x;
      useWasmKernels(true);
      const bw = decodeMessage(b).x;
      for (const [u, v] of [[aw, aj], [bw, bj]] as const) {
        for (let i = 0; i < u.length; i++) expect(Math.abs(u[i]! - v[i]!), `${spec} ${inp.name}`).toBeLessThanOrEqual(Math.abs(v[i]!) * 1e-6 + 1e-30);
      }
      // float32 lanes and float64 scalars may round a value to a neighbouring level: rarely, never often
      expect(Math.abs(a.length - b.length) / a.length, `${spec} ${inp.name}`).toBeLessThan(0.02);
    }
  }
  useWasmKernels(true);
});

describe('codec errors are typed', () => {
  it('NaN and Inf in the input to encode', () => {
    for (const spec of SPECS) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const x = new Float32Array(128).fill(0.5);
        x[77] = bad;
        expect(() => createCodec(spec).encode(x, 2, 64), `${spec} ${bad}`).toThrow(expect.objectContaining({ code: 'E_CODEC_INPUT' }) as unknown as Error);
      }
    }
  });

  it('bad specs', () => {
    for (const spec of ['zstd', 'uniform', 'uniform:7', 'topk:0', 'lowrank:0', 'ts-tabq:eps=2', 'ts-tabq:eps=0.1,budget=3', 'ts-tabq:foo=1', 'fp16:3', 'ts-tabq:tau=-1', 'ts-tabq:eps=abc']) {
      expect(() => createCodec(spec), spec).toThrow(expect.objectContaining({ code: 'E_CODEC_SPEC' }) as unknown as Error);
    }
    expect(parseSpec('ts-tabq:eps=0.02,tau=1.5').params.get('tau')).toBe('1.5');
    expect(createCodec('ts-tabq:eps=0.02,tau=1.5').spec).toBe('ts-tabq:eps=0.02,tau=1.5');
  });

  it('a header claiming 2^31 values, wrong magic, wrong version', () => {
    const good = createCodec('fp32').encode(new Float32Array(64), 1, 64);
    const huge = good.slice();
    new DataView(huge.buffer).setUint32(4, 1 << 16, true);
    new DataView(huge.buffer).setUint32(8, 1 << 15, true);
    expect(() => decodeMessage(huge)).toThrow(expect.objectContaining({ code: 'E_CODEC_LIMIT' }) as unknown as Error);
    const many = good.slice();
    new DataView(many.buffer).setUint32(4, 4096, true);
    expect(() => decodeMessage(many)).toThrow(/cannot come from|needs/);
    const magic = good.slice();
    magic[0] = 0x00;
    expect(() => decodeMessage(magic)).toThrow(/wrong magic/);
    const ver = good.slice();
    ver[2] = 9;
    expect(() => decodeMessage(ver)).toThrow(/version 9/);
    expect(() => decodeMessage(good.subarray(0, 5))).toThrow(/shorter than/);
  });

  it('fuzz: thousands of mutated messages decode or fail with a typed error, quickly', () => {
    const next = rng(1234);
    const inp = inputs();
    const messages: Uint8Array[] = [];
    for (const spec of SPECS) for (const i of [0, 1, 4, 6]) messages.push(createCodec(spec).encode(inp[i]!.x, inp[i]!.tokens, inp[i]!.dim));
    let typed = 0;
    let ok = 0;
    const t0 = performance.now();
    for (let iter = 0; iter < 6000; iter++) {
      useWasmKernels(iter % 2 === 0); // both decoders see hostile input
      const src = messages[Math.floor(next() * messages.length)]!;
      let m: Uint8Array;
      const kind = iter % 5;
      if (kind === 0) m = src.subarray(0, Math.floor(next() * src.length)); // truncation
      else if (kind === 1) {
        m = src.slice();
        for (let f = 0; f < 1 + Math.floor(next() * 4); f++) {
          const i = Math.floor(next() * m.length);
          m[i] = m[i]! ^ (1 << Math.floor(next() * 8)); // bit flips
        }
      } else if (kind === 2) {
        m = src.slice();
        const i = HEADER_BYTES + Math.floor(next() * Math.min(40, m.length - HEADER_BYTES));
        if (i < m.length) m[i] = Math.floor(next() * 256); // parameter / count bytes
      } else if (kind === 3) {
        m = src.slice();
        new DataView(m.buffer).setUint32(4 + 4 * Math.floor(next() * 2), Math.floor(next() * 2 ** 32), true); // absurd dims
      } else {
        m = new Uint8Array(Math.floor(next() * 200));
        for (let i = 0; i < m.length; i++) m[i] = Math.floor(next() * 256);
        if (m.length > 3 && next() < 0.7) m.set([0x53, 0x48, 1, 1 + Math.floor(next() * 6)]);
      }
      try {
        const d = decodeMessage(m);
        expect(d.x.length).toBe(d.tokens * d.dim);
        expect(d.x.length).toBeLessThanOrEqual(4096 * m.length);
        for (let i = 0; i < d.x.length; i++) if (!Number.isFinite(d.x[i]!)) throw new Error('non-finite output');
        ok++;
      } catch (e) {
        expect(e, String(e)).toBeInstanceOf(SplitLLMError);
        expect((e as SplitLLMError).code).toMatch(/^E_CODEC_(CORRUPT|LIMIT|NONFINITE)$/);
        typed++;
      }
    }
    useWasmKernels(true);
    expect(typed + ok).toBe(6000);
    expect(typed).toBeGreaterThan(3000);
    expect(performance.now() - t0).toBeLessThan(60_000); // no hang (generous: a sanity bound, not a benchmark)
  });
});

it('each codec file declares its own wire id, and the registry refuses two definitions that claim one', () => {
  const ids = CODECS.flatMap((d) => d.decodes);
  expect(new Set(ids).size).toBe(ids.length);
  expect([...ids].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  const clash = { ...topkDefinition, names: ['topk2'] };
  expect(() => checkWireIds([...CODECS, clash])).toThrow('codecs topk and topk2 both claim wire id 5: give one another id');
  expect(() => checkWireIds([{ ...topkDefinition, decodes: [256] }])).toThrow('codec topk: wire id 256 is not a byte from 1 to 255');
});

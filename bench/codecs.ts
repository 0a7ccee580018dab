/**
 * bench/codecs: encode and decode MB/s (of float32 input) per codec on one core, next to a memcpy of the
 * same bytes measured in the same run, for [1,64], [512,2048] and [4096,4096] inputs (Student-t
 * distributed with a few large outlier channels, like LLM hidden states).
 *
 *   node dist/bench/codecs.js [--codecs fp32,ts-tabq,...] [--shapes 512x2048] [--json]
 */
import { parseArgs } from 'node:util';
import { contextData } from '../quantization/activations/calibration.js';
import { CodecContext } from '../quantization/activations/context.js';
import { createCodec } from '../quantization/activations/registry.js';
import { rng } from '../models/runtime/sampler.js';

const { values } = parseArgs({
  options: {
    codecs: { type: 'string', default: 'fp32,fp16,int8,uniform:4,ts-tabq:eps=0.05,ts-tabq:budget=4,ts-tabq:cal=1,step=0.3,ts-tabq:cal=1,eps=0.08,topk:5,lowrank:8' },
    shapes: { type: 'string', default: '1x64,512x2048,4096x4096' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/codecs.js [--codecs LIST] [--shapes 1x64,512x2048] [--json]\n');
  process.exit(0);
}

/** Student-t (ν = 4) values with 4 outlier channels ×20 and a first token ×10, deterministic. */
export function hiddenLike(tokens: number, dim: number, seed = 1): Float32Array {
  const next = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
  const x = new Float32Array(tokens * dim);
  const outCh = new Set([3 % dim, 77 % dim, 500 % dim, 1337 % dim]);
  for (let t = 0; t < tokens; t++) {
    for (let c = 0; c < dim; c++) {
      let chi = 0;
      for (let k = 0; k < 4; k++) chi += normal() ** 2;
      let v = normal() / Math.sqrt(chi / 4);
      if (outCh.has(c)) v *= 20;
      if (t === 0) v *= 10;
      x[t * dim + c] = v;
    }
  }
  return x;
}

/** Splits a codec list on commas, keeping a spec's own parameters (`ts-tabq:eps=0.1,entropy=on`) together. */
function codecList(list: string): string[] {
  const out: string[] = [];
  for (const part of list.split(',')) {
    if (out.length > 0 && part.includes('=') && !part.includes(':')) out[out.length - 1] += ',' + part;
    else out.push(part);
  }
  return out;
}

function timeIt(fn: () => void, minMs: number): number {
  fn(); // warm-up
  let reps = 0;
  const t0 = performance.now();
  let el = 0;
  do {
    fn();
    reps++;
    el = performance.now() - t0;
  } while (el < minMs);
  return el / reps;
}

const rows: Record<string, string | number>[] = [];
for (const shape of values.shapes!.split(',')) {
  const [T, D] = shape.split('x').map(Number) as [number, number];
  const x = hiddenLike(T, D);
  const mb = (x.byteLength / 1e6);
  const minMs = T * D > 4e6 ? 1500 : 600;
  const src = new Uint8Array(x.buffer);
  const dst = new Uint8Array(src.length);
  const memcpyMs = timeIt(() => dst.set(src), minMs);
  for (const spec of codecList(values.codecs!)) {
    if (spec.startsWith('lowrank') && T * D > 4e6) continue; // O(T·D·r) per pass: minutes at this size
    // a calibrated codec codes against a context made from another sample of the same distribution, as
    // 'splitllm calibrate' makes it from calibration text
    const ctx = spec.includes('cal=') ? new CodecContext(contextData([hiddenLike(Math.min(T, 256) + 1, D, 2)], D)) : undefined;
    const codec = createCodec(spec, { context: () => ctx });
    let bytes = codec.encode(x, T, D);
    const encMs = timeIt(() => {
      bytes = codec.encode(x, T, D);
    }, minMs);
    const decMs = timeIt(() => codec.decode(bytes), minMs);
    const y = codec.decode(bytes).x;
    let e2 = 0;
    let n2 = 0;
    for (let i = 0; i < x.length; i++) {
      e2 += (x[i]! - y[i]!) ** 2;
      n2 += x[i]! ** 2;
    }
    rows.push({
      shape,
      codec: spec,
      encodeMBs: mb / (encMs / 1000),
      decodeMBs: mb / (decMs / 1000),
      memcpyMBs: mb / (memcpyMs / 1000),
      bitsPerValue: (8 * bytes.length) / x.length,
      relError: Math.sqrt(e2 / n2),
    });
  }
}
if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
else {
  process.stdout.write('shape       codec                      encode MB/s  decode MB/s  memcpy MB/s  enc/memcpy  dec/memcpy  bits/value  rel.error\n');
  for (const r of rows) {
    const e = r['encodeMBs'] as number;
    const d = r['decodeMBs'] as number;
    const m = r['memcpyMBs'] as number;
    process.stdout.write(
      `${String(r['shape']).padEnd(11)} ${String(r['codec']).padEnd(26)} ${e.toFixed(0).padStart(11)} ${d.toFixed(0).padStart(12)} ${m.toFixed(0).padStart(12)} ${(e / m).toFixed(4).padStart(11)} ${(d / m).toFixed(4).padStart(11)} ${(r['bitsPerValue'] as number).toFixed(3).padStart(11)} ${(r['relError'] as number).toExponential(2).padStart(10)}\n`,
    );
  }
}

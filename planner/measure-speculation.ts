/**
 * The acceptance profile of draft proposers (`splitllm profile speculation`), measured teacher-forced on
 * calibration text: at every position the model's greedy next token (float32, unsplit) against the
 * proposer's first draft there — the early exit's head on each split's hidden state, a draft model's
 * argmax, the n-gram lookup over the text so far (which drafts only where the text repeats: its coverage).
 * On the model's own greedy output drafts stand more often than on human text, so this is a floor.
 * A draft model's decode step is timed beside it (median of 32 one-token steps).
 */
import { ngramPropose } from '../edge/draft/ngram.js';
import type { ModelPackage } from '../models/package.js';
import { argmax } from '../models/runtime/sampler.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { heldBytes, segmentBytes } from '../quantization/weights/memory.js';
import type { SpeculationProfile } from './types.js';

export interface MeasuredDraftModel {
  /** the spec the profile records (`model:PATH`, PATH relative to the model's package) */
  proposer: string;
  pkg: ModelPackage;
}

export async function measureSpeculation(
  pkg: ModelPackage,
  windows: readonly (readonly number[])[],
  opts: { ngram?: boolean; earlyExit?: boolean; drafts?: readonly MeasuredDraftModel[]; threads?: number; onProgress?: (msg: string) => void } = {},
): Promise<SpeculationProfile[]> {
  const c = pkg.config;
  const L = c.nLayers;
  const V = c.vocabSize;
  const threads = opts.threads;
  // a layer at a time over every window (one-off segments: one layer and the head held, never the whole
  // float model), the early exit's head on each split's states as they pass
  const head = await SegmentRuntime.create(pkg, L, L, { embed: false, head: true, threads, cache: false });
  const drafts: (MeasuredDraftModel & { rt: SegmentRuntime })[] = [];
  const exitHits = new Array<number>(L + 1).fill(0);
  const draftHits = (opts.drafts ?? []).map(() => 0);
  let positions = 0;
  let ngramDrafted = 0;
  let ngramHits = 0;
  const argmaxes = (logits: Float32Array, n: number) => Array.from({ length: n }, (_, t) => argmax(logits, t * V, V));
  try {
    for (const d of opts.drafts ?? []) drafts.push({ ...d, rt: await SegmentRuntime.create(d.pkg, 0, d.pkg.config.nLayers, { embed: true, head: true, threads }) });
    let states: Float32Array[] = [];
    /** per split 1..L−1, per window: the early exit's token at each position */
    const exits: number[][][] = [];
    for (let k = 0; k < L; k++) {
      const layer = await SegmentRuntime.create(pkg, k, k + 1, { embed: k === 0, head: false, threads, cache: false });
      try {
        const next: Float32Array[] = [];
        for (const [wi, w] of windows.entries()) next.push((await layer.run(k === 0 ? w : states[wi]!, w.length, { keepCache: false })).data);
        states = next;
      } finally {
        await layer.release();
      }
      if (opts.earlyExit && k + 1 < L) {
        const at: number[][] = [];
        for (const [wi, w] of windows.entries()) at.push(argmaxes((await head.run(states[wi]!, w.length, { keepCache: false })).data, w.length));
        exits[k + 1] = at;
      }
      opts.onProgress?.(`profile speculation: layer ${k + 1}/${L} over ${windows.length} windows`);
    }
    for (const [wi, w] of windows.entries()) {
      const n = w.length;
      const greedy = argmaxes((await head.run(states[wi]!, n, { keepCache: false })).data, n);
      positions += n;
      for (let k = 1; k < L; k++) for (let t = 0; t < n; t++) if (exits[k]?.[wi]?.[t] === greedy[t]) exitHits[k]!++;
      for (const [i, d] of drafts.entries()) {
        const l = (await d.rt.run(w, n, { keepCache: false })).data;
        for (let t = 0; t < n; t++) if (argmax(l, t * V, V) === greedy[t]) draftHits[i]!++;
      }
      if (opts.ngram) {
        for (let t = 0; t < n; t++) {
          const p = ngramPropose(w.slice(0, t + 1), 1);
          if (p.length === 0) continue;
          ngramDrafted++;
          if (p[0] === greedy[t]) ngramHits++;
        }
      }
    }
    const out: SpeculationProfile[] = [];
    if (opts.ngram) out.push({ proposer: 'ngram', acceptance: ngramDrafted ? ngramHits / ngramDrafted : 0, coverage: positions ? ngramDrafted / positions : 0, draftMsPerToken: 0 });
    if (opts.earlyExit) for (let k = 1; k < L; k++) out.push({ proposer: 'early-exit', split: k, acceptance: exitHits[k]! / positions, coverage: 1, draftMsPerToken: 0 });
    for (const [i, d] of drafts.entries()) {
      const dc = d.pkg.config;
      const seg = segmentBytes(d.pkg.memoryShape, 0, dc.nLayers, { embed: true, head: true, bitsOf: () => 32 });
      const edgeBytes = heldBytes(dc, seg, dc.maxSeq);
      out.push({ proposer: d.proposer, acceptance: draftHits[i]! / positions, coverage: 1, draftMsPerToken: await decodeMs(d.rt, windows[0] ?? [0]), edgeBytes });
    }
    return out;
  } finally {
    for (const r of [head, ...drafts.map((d) => d.rt)]) await r.release();
  }
}

/** Median ms of a one-token decode step of a whole-model runtime, after a short prompt. */
async function decodeMs(rt: SegmentRuntime, prompt: readonly number[]): Promise<number> {
  rt.reset();
  const p = prompt.slice(0, 16);
  await rt.run(p, p.length);
  const times: number[] = [];
  for (let i = 0; i < 32; i++) {
    const t0 = performance.now();
    await rt.run([p[i % p.length]!], 1);
    times.push(performance.now() - t0);
  }
  rt.reset();
  times.sort((a, b) => a - b);
  return times[times.length >> 1]!;
}

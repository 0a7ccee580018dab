/**
 * Perplexity of many variants of one model at once, a layer at a time: each variant ("path") names the
 * precision of the embedding, of every layer and of the head, and at most one hidden-state round trip
 * (a codec) at one split. The sweep runs the windows through layer 0 for every distinct precision the
 * paths ask there, then layer 1, …: paths that agree so far share one hidden state, each layer's
 * segment is opened once per precision and released
 * before the next layer's, so the process never holds more than one layer (in each of its precisions),
 * the embedding or the head. `profile accuracy` and the planner's accuracy estimate run on it.
 *
 * Results are the protocol's perplexity (models/eval/ppl.ts): each window runs from an empty cache.
 * Hidden states of the live paths are held for a batch of windows at a time (at most
 * `stateBytes`); with more windows than one batch holds, the layers are opened again for each batch
 * (then through the segment cache, built once).
 */
import { SplitLLMError } from '../../shared/errors.js';
import type { LinearEmitter } from '../onnx/segment.js';
import type { ModelPackage } from '../package.js';
import { SegmentRuntime } from '../runtime/segment-runtime.js';
import { windowNll } from './ppl.js';

/** A hidden-state round trip at a split (a codec on the wire): given the windows' rows [T, D], returns the rows the other side decodes. */
export type RoundTrip = (hidden: Float32Array, tokens: number) => Float32Array;

export interface SweepPath {
  /** the token embedding's bits (32: float) */
  embedBits: number;
  /** a precision id per layer (length nLayers), resolved by `SweepOptions.emitter` */
  layers: readonly string[];
  /** the LM head's precision id */
  head: string;
  /** a round trip applied to the hidden state entering layer `split` (`split` = nLayers: entering the head); `id` names it among the paths */
  codec?: { split: number; id: string; roundTrip: RoundTrip };
}

export interface SweepOptions {
  /** the linear emitter of a precision id (undefined: float32, the segments' default) */
  emitter(precision: string): LinearEmitter | undefined;
  /** most bytes of hidden states held at once (default 512 MiB); windows go in batches that fit */
  stateBytes?: number;
  /** told as the work goes: runs of a window through a segment done, of all, and the distinct states at this layer */
  onProgress?(done: number, total: number, distinct: number): void;
  /** intra-op threads of each segment (default: the runtime's) */
  threads?: number;
  /** sees one path's state entering each layer and the head (split 0..nLayers): rows [T, D] per window of the batch */
  observe?: { path: SweepPath; at(split: number, rows: readonly Float32Array[], tokens: readonly number[]): void };
  /**
   * runs the observed path's state entering each layer through that layer at each of `precisions` as
   * well (where other paths open that layer at that precision anyway) and hands over the output: what
   * one layer alone at a precision changes
   */
  probe?: { precisions: readonly string[]; /** the first windows of each batch only (default all) */ windows?: number; at(layer: number, precision: string, rows: readonly Float32Array[]): void };
}

export interface SweepResult {
  /** per path, in the order given: total NLL over the predicted ids */
  nll: number[];
  /** predicted ids (the same for every path) */
  tokens: number;
  /** layer runs the sweep did (a window through one layer counts once): the work, for progress and benches */
  layerRuns: number;
}

/** The key of the embedding's output at `bits`: a path's state entering layer 0. */
const embedKey = (bits: number) => `e${bits}`;

/** The key of a path's state entering layer `l` (l = nLayers: entering the head, before its codec). */
function keyAt(p: SweepPath, l: number): string {
  let k = embedKey(p.embedBits);
  for (let j = 0; j < l; j++) k += `/${p.codec?.split === j ? `[${p.codec.id}]` : ''}${p.layers[j]}`;
  return k;
}

/** The entries of `m` grouped by `by`, in first-seen order. */
function groupBy<V>(m: Map<string, V>, by: (v: V) => string): Map<string, [string, V][]> {
  const out = new Map<string, [string, V][]>();
  for (const [k, v] of m) {
    const g = out.get(by(v));
    if (g) g.push([k, v]);
    else out.set(by(v), [[k, v]]);
  }
  return out;
}

interface Step {
  /** the parent state's key */
  parent: string;
  /** the round trip to apply to the parent's state first */
  codec?: RoundTrip;
  precision: string;
}

/** Runs the paths over the windows (token ids, each predicting ids 1..n-1 from its prefix). */
export async function sweepPerplexity(pkg: ModelPackage, windows: number[][], paths: readonly SweepPath[], opts: SweepOptions): Promise<SweepResult> {
  const c = pkg.config;
  const L = c.nLayers;
  for (const p of paths) {
    if (p.layers.length !== L) throw new SplitLLMError('E_RUNTIME', `a sweep path names ${p.layers.length} layer precisions for a model of ${L} layers`);
    if (p.codec && (p.codec.split < 0 || p.codec.split > L)) throw new SplitLLMError('E_RUNTIME', `a sweep path's codec sits at split ${p.codec.split}, outside 0..${L}`);
  }
  const usable = windows.filter((w) => w.length >= 2).map((w) => w.slice(0, c.maxSeq + 1));
  if (usable.length === 0) throw new SplitLLMError('E_BAD_ARGUMENT', 'no window of two or more tokens to measure on');
  // the distinct states at each level, and the step that makes each from its parent
  const levels: Map<string, Step>[] = [];
  for (let l = 1; l <= L; l++) {
    const m = new Map<string, Step>();
    for (const p of paths) {
      const k = keyAt(p, l);
      if (!m.has(k)) m.set(k, { parent: keyAt(p, l - 1), ...(p.codec?.split === l - 1 ? { codec: p.codec.roundTrip } : {}), precision: p.layers[l - 1]! });
    }
    levels.push(m);
  }
  const finals = new Map<string, { parent: string; codec?: RoundTrip; head: string }>();
  const finalKey = (p: SweepPath) => `${keyAt(p, L)}>${p.codec?.split === L ? `[${p.codec.id}]` : ''}h${p.head}`;
  for (const p of paths) {
    const k = finalKey(p);
    if (!finals.has(k)) finals.set(k, { parent: keyAt(p, L), ...(p.codec?.split === L ? { codec: p.codec.roundTrip } : {}), head: p.head });
  }
  const embeds = [...new Set(paths.map((p) => p.embedBits))];
  // windows in batches whose states (two levels alive at once) fit the budget
  const widest = Math.max(embeds.length, ...levels.map((m) => m.size));
  const rowBytes = c.dim * 4;
  const budget = opts.stateBytes ?? 512 * 1024 * 1024;
  const batches: number[][][] = [];
  let cur: number[][] = [];
  let curBytes = 0;
  for (const w of usable) {
    const bytes = 2 * widest * (w.length - 1) * rowBytes;
    if (cur.length > 0 && curBytes + bytes > budget) {
      batches.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(w);
    curBytes += bytes;
  }
  batches.push(cur);

  const nllOf = new Map<string, number>();
  let layerRuns = 0;
  // progress counts runs of a window through one segment (the embedding, a layer or the head)
  const perWindow = embeds.length + levels.reduce((n, m) => n + m.size, 0) + finals.size;
  const total = perWindow * usable.length;
  let done = 0;
  const ran = (windows: number, distinct: number) => opts.onProgress?.((done += windows), total, distinct);
  const rt = (from: number, to: number, o: { embed?: boolean; head?: boolean; embedBits?: number; linear?: LinearEmitter; headLinear?: LinearEmitter }) =>
    SegmentRuntime.create(pkg, from, to, {
      embed: o.embed ?? false,
      head: o.head ?? false,
      ...(o.embedBits !== undefined && o.embedBits !== 32 ? { embedBits: o.embedBits } : {}),
      ...(o.linear ? { linearFor: () => o.linear! } : {}),
      ...(o.headLinear ? { headLinear: o.headLinear } : {}),
      ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
      // one batch opens each segment once: a one-off build, not kept in the package's cache (a layer at
      // each precision would take gigabytes of disk at 1B); several batches open them again, from the cache
      ...(batches.length === 1 ? { cache: false as const } : {}),
      spin: 'alone',
    });
  for (const batch of batches) {
    const inputs = batch.map((w) => w.slice(0, -1));
    // the embedding of each precision the paths ask
    let states = new Map<string, Float32Array[]>();
    for (const e of embeds) {
      const seg = await rt(0, 0, { embed: true, embedBits: e });
      try {
        const rows: Float32Array[] = [];
        for (const ids of inputs) rows.push((await seg.run(ids, ids.length, { keepCache: false })).data);
        states.set(embedKey(e), rows);
        ran(inputs.length, embeds.length);
      } finally {
        await seg.release();
      }
    }
    const lengths = inputs.map((ids) => ids.length);
    const observe = (l: number) => {
      const rows = opts.observe && states.get(keyAt(opts.observe.path, l));
      if (rows) opts.observe!.at(l, rows, lengths);
    };
    observe(0);
    for (let l = 0; l < L; l++) {
      const level = levels[l]!;
      const next = new Map<string, Float32Array[]>();
      for (const [precision, steps] of groupBy(level, (s) => s.precision)) {
        const seg = await rt(l, l + 1, { linear: opts.emitter(precision) });
        try {
          for (const [k, s] of steps) {
            const from = states.get(s.parent);
            if (!from) throw new SplitLLMError('E_RUNTIME', `sweep: no state ${s.parent} at layer ${l}`);
            const rows: Float32Array[] = [];
            for (let w = 0; w < inputs.length; w++) {
              const T = inputs[w]!.length;
              const x = s.codec ? s.codec(from[w]!, T) : from[w]!;
              rows.push((await seg.run(x, T, { keepCache: false })).data);
              layerRuns++;
            }
            next.set(k, rows);
            ran(inputs.length, level.size);
          }
          const probed = opts.observe && opts.probe?.precisions.includes(precision) ? states.get(keyAt(opts.observe.path, l)) : undefined;
          if (probed) {
            const rows: Float32Array[] = [];
            const n = Math.min(inputs.length, opts.probe!.windows ?? inputs.length);
            for (let w = 0; w < n; w++) rows.push((await seg.run(probed[w]!, inputs[w]!.length, { keepCache: false })).data);
            layerRuns += n;
            opts.probe!.at(l, precision, rows);
          }
        } finally {
          await seg.release();
        }
      }
      states = next;
      observe(l + 1);
    }
    // the head of each precision the paths ask, and each window's NLL
    for (const [head, list] of groupBy(finals, (f) => f.head)) {
      const seg = await rt(L, L, { head: true, headLinear: opts.emitter(head) });
      try {
        for (const [k, f] of list) {
          const from = states.get(f.parent);
          if (!from) throw new SplitLLMError('E_RUNTIME', `sweep: no state ${f.parent} at the head`);
          let nll = nllOf.get(k) ?? 0;
          for (let w = 0; w < inputs.length; w++) {
            const T = inputs[w]!.length;
            const x = f.codec ? f.codec(from[w]!, T) : from[w]!;
            nll += windowNll((await seg.run(x, T, { keepCache: false })).data, c.vocabSize, batch[w]!);
          }
          nllOf.set(k, nll);
          ran(inputs.length, finals.size);
        }
      } finally {
        await seg.release();
      }
    }
  }
  const tokens = usable.reduce((n, w) => n + w.length - 1, 0);
  return { nll: paths.map((p) => nllOf.get(finalKey(p))!), tokens, layerRuns };
}

/**
 * Captures the inputs of every linear layer on calibration windows (for AWQ and SmoothQuant): the full
 * model is built with an emitter that also exposes each linear's input as a graph output.
 */
import { float32Of, inferenceBackend, type Tensor } from '../runtime/backend.js';
import { DT } from '../onnx/graph.js';
import { buildSegment, float32Linear, type LinearEmitter } from '../onnx/segment.js';
import type { ModelPackage } from '../package.js';

export interface CapturedInputs {
  /** rows [T, K] per linear weight name (q/k/v share their input, as do gate/up) */
  rows: Map<string, { X: Float32Array; T: number; K: number }>;
}

export async function captureLinearInputs(pkg: ModelPackage, windows: number[][], maxTokens = 512): Promise<CapturedInputs> {
  const inputOf = new Map<string, { x: string; K: number }>(); // weight name → value name and its width
  const exposed = new Set<string>();
  const capturing: LinearEmitter = {
    id: 'capture',
    linear(g, x, w) {
      inputOf.set(w.name, { x, K: w.inDim });
      if (!exposed.has(x)) {
        exposed.add(x);
        g.output(x, DT.FLOAT, ['batch', 'tokens', w.inDim]);
      }
      return float32Linear.linear(g, x, w);
    },
  };
  const seg = buildSegment(pkg.config, pkg.weights, 0, pkg.config.nLayers, { linearFor: () => capturing, attention: 'reference' });
  const bk = await inferenceBackend();
  const session = await bk.createSession(seg.modelPath ?? seg.model ?? new Uint8Array(0));
  const { nKvHeads: KV, headDim: hd } = pkg.config;
  const chunks = new Map<string, Float32Array[]>();
  let tokens = 0;
  for (const ids of windows) {
    if (tokens >= maxTokens) break;
    // a perplexity window holds maxSeq + 1 ids (its last predicts nothing): at most maxSeq positions run
    const T = Math.min(ids.length, maxTokens - tokens, pkg.config.maxSeq);
    const feeds: Record<string, Tensor> = {
      input_ids: bk.int64(BigInt64Array.from(ids.slice(0, T).map(BigInt)), [1, T]),
      position_ids: bk.int64(BigInt64Array.from({ length: T }, (_, i) => BigInt(i)), [1, T]),
    };
    // an imported export's graph masks by key positions (models/onnx-import/segment.ts)
    if (seg.keyPositions) feeds['key_positions'] = bk.int64(BigInt64Array.from({ length: T }, (_, i) => BigInt(i)), [1, T]);
    if (seg.recompute) {
      // no caches to feed
    } else for (let i = 0; i < pkg.config.nLayers; i++) {
      feeds[`past_key_${i}`] = bk.float32(new Float32Array(0), [1, KV, 0, hd]);
      feeds[`past_value_${i}`] = bk.float32(new Float32Array(0), [1, KV, 0, hd]);
    }
    const out = await session.run(feeds);
    for (const x of exposed) {
      const list = chunks.get(x) ?? [];
      const data = float32Of(out, x).data;
      // position 0 (BOS) has the same, very large activations in every window: left out so that it does not
      // dominate the statistics the quantizers fit
      list.push(data.slice(data.length / T));
      chunks.set(x, list);
    }
    tokens += T - 1;
  }
  await session.release();
  const rows = new Map<string, { X: Float32Array; T: number; K: number }>();
  const joined = new Map<string, Float32Array>();
  for (const [name, { x, K }] of inputOf) {
    let X = joined.get(x);
    if (!X) {
      const parts = chunks.get(x) ?? [];
      X = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
      let o = 0;
      for (const p of parts) {
        X.set(p, o);
        o += p.length;
      }
      joined.set(x, X);
    }
    rows.set(name, { X, T: X.length / K, K });
  }
  return { rows };
}

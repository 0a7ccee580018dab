/**
 * Perplexity of a configuration as it would run: segments at a split with their weights, and the codec's
 * round trip on the hidden state where it crosses (what `eval ppl` and bench/paper score).
 */
import { SplitLLMError } from '../shared/errors.js';
import { pipelinePerplexity, type PplResult } from '../models/eval/ppl.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import type { ModelPackage } from '../models/package.js';
import { Pipeline } from '../models/runtime/pipeline.js';
import type { CalibrationContexts } from '../quantization/activations/calibration.js';
import { WireMeter } from '../quantization/activations/meter.js';
import { codecAtSplit } from '../quantization/activations/registry.js';

export interface ScoredConfig {
  /** split point: [0, K) then [K, L); none: one segment */
  split?: number;
  linearFor?: (layer: number) => LinearEmitter;
  headLinear?: LinearEmitter;
  embedBits?: number;
  /** hidden-state codec at the split (needs `split`); a bare 'ts-tabq' is the split's calibrated default in `contexts` */
  codec?: string;
  contexts?: CalibrationContexts;
  threads?: number;
}

/** Scores `windows` under the configuration; with a codec, also its meter (the codec it resolved to, bits per value). */
export async function configPerplexity(
  pkg: ModelPackage,
  windows: number[][],
  c: ScoredConfig,
  onProgress?: (done: number, total: number) => void,
  onCodec?: (spec: string) => void,
): Promise<PplResult & { meter?: WireMeter }> {
  const split = c.split;
  const pipeline = await Pipeline.create(pkg, split === undefined ? [] : [split], { threads: c.threads, linearFor: c.linearFor, headLinear: c.headLinear, embedBits: c.embedBits });
  try {
    let meter: WireMeter | undefined;
    if (c.codec !== undefined) {
      if (split === undefined) throw new SplitLLMError('E_USAGE', '--codec needs --split K: the codec sits on the hidden state at the split');
      const m = new WireMeter(codecAtSplit(c.codec, split, c.contexts), { contexts: c.contexts?.contexts });
      pipeline.between = (h, tokens) => m.roundTrip(h, tokens, pkg.config.dim);
      meter = m;
      onCodec?.(m.codec.spec);
    }
    const r = await pipelinePerplexity(pipeline, windows, onProgress);
    return meter ? { ...r, meter } : r;
  } finally {
    await pipeline.release();
  }
}

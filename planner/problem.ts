/**
 * A planning problem for a model from its profiles and budgets: the candidate splits, the precisions
 * both compute profiles measured, the codecs the accuracy profile covers, and ten sequence lengths up
 * to the model's maximum, and the quantization blocks all three profiles measured. A baseline method narrows
 * them: some codecs only, one precision for both segments.
 */
import type { ModelConfig } from '../models/manifest.js';
import { DEFAULT_BLOCK_SIZE, isBlockwise } from '../shared/precision.js';
import { profileBlocks } from './profiles.js';
import type { AccuracyProfile, Budgets, ComputeProfile, Constraint, LinkProfile, Problem } from './types.js';

export interface Profiles {
  edge: ComputeProfile;
  cloud: ComputeProfile;
  link: LinkProfile;
  accuracy: AccuracyProfile;
}

/**
 * The quantization blocks a plan may use: the default one, and each other block the accuracy profile and both
 * compute profiles measured for every blockwise precision (layers and head) of the search.
 */
function blockSizes(p: Profiles, bits: number[], headBits: number[]): number[] {
  const covers = (c: ComputeProfile, b: string) => {
    const t = c.blocks?.[b];
    return bits.filter(isBlockwise).every((x) => t?.layerDecodeMs[String(x)] !== undefined);
  };
  const other = profileBlocks(p.accuracy).filter((b) => {
    const k = String(b);
    return covers(p.edge, k) && covers(p.cloud, k) && headBits.filter(isBlockwise).every((x) => p.cloud.blocks?.[k]?.headMsByBits?.[String(x)] !== undefined);
  });
  return [DEFAULT_BLOCK_SIZE, ...other];
}

export function buildProblem(
  model: ModelConfig & { hash: string },
  p: Profiles,
  budgets: Budgets,
  opts: { minSplit?: number; splits?: number[]; speculate?: boolean; maxDraft?: number; codecs?: string[]; sameBits?: boolean } = {},
): Problem {
  const measured = [...new Set(Object.keys(p.accuracy.codecs).map((k) => k.slice(k.indexOf('/') + 1)))];
  // a method restricted to some codecs (fp16 hidden states: a naive split) gets those the profile measured
  const only = opts.codecs;
  const codecs = only ? measured.filter((c) => only.includes(c)) : measured;
  const bits = [...new Set(Object.keys(p.edge.layerDecodeMs).map(Number))].filter((b) => p.cloud.layerDecodeMs[String(b)] !== undefined).sort((a, b) => a - b);
  const all = Array.from({ length: model.nLayers + 1 }, (_, i) => i);
  // the head's precisions both the accuracy profile and the cloud's compute profile measured
  const headBits = [32, ...Object.keys(p.accuracy.heads ?? {}).map(Number).filter((b) => b !== 32 && p.cloud.headMsByBits?.[String(b)] !== undefined)].sort((a, b) => b - a);
  return {
    model,
    ...p,
    budgets,
    ...(opts.speculate !== false && p.accuracy.speculation?.length ? { speculation: p.accuracy.speculation, maxDraft: opts.maxDraft ?? 4 } : {}),
    candidates: {
      splits: opts.splits ?? all.filter((k) => k >= (opts.minSplit ?? 1)),
      bits,
      codecs,
      seqLens: Array.from({ length: 10 }, (_, i) => Math.round(((i + 1) * model.maxSeq) / 10)),
      headBits,
      embedBits: [32, ...Object.keys(p.accuracy.embeds ?? {}).map(Number).filter((b) => b !== 32)].sort((a, b) => b - a),
      ...(opts.sameBits ? { sameBits: true } : {}),
      blockSizes: blockSizes(p, bits, headBits),
    },
  };
}

/** A budget's value as people read it: MB, ms or a percentage. */
export function formatBudget(c: Constraint, v: number, mbDigits = 1): string {
  return c === 'memory' ? `${(v / 1e6).toFixed(mbDigits)} MB` : c === 'latency' ? `${v.toFixed(1)} ms` : `${(100 * v).toFixed(2)}%`;
}

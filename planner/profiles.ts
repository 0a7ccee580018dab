/** Profile files (JSON) and their validation: a profile of another model, or a malformed one, is refused. */
import { Fields, failWith } from '../shared/fields.js';
import { BLOCK_SIZES, DEFAULT_BLOCK_SIZE, isBlockSize, isBlockwise } from '../shared/precision.js';
import type { AccuracyEstimate, AccuracyProfile, BlockAccuracyProfile, BlockComputeProfile, ComputeProfile, LinkProfile, SpeculationProfile } from './types.js';

export type ProfileKind = 'compute' | 'link' | 'accuracy';

export interface ProfileFile<T> {
  format: 'splitllm-profile';
  kind: ProfileKind;
  data: T;
  machine?: Record<string, unknown>;
}

function header(raw: unknown, kind: ProfileKind, where: string): Fields {
  const fail = failWith('E_BAD_CONFIG');
  const f: Fields = Fields.of(raw, where, fail, `a splitllm profile (make it with 'splitllm profile ${kind === 'compute' ? 'device' : kind}')`);
  if (f.value('format') !== 'splitllm-profile') f.fail(`not a splitllm profile: make it with 'splitllm profile ${kind === 'compute' ? 'device' : kind}'`);
  if (f.value('kind') !== kind) f.fail(`is a ${String(f.value('kind'))} profile, a ${kind} profile is needed here`);
  if (!f.has('data')) f.fail('has no data');
  return new Fields(f.map('data').raw, where, fail);
}

function sameModel(d: Fields, modelHash: string): string {
  const model = d.value('model');
  if (model !== modelHash) d.fail(`was measured for another model (${String(model).slice(0, 12)}…, this one is ${modelHash.slice(0, 12)}…): profile this model`);
  return modelHash;
}

/**
 * A profile's `blocks` table: each key a supported block other than the default one (whose measurements
 * are the profile's top-level entries), each value read by `entry`.
 */
function blockTable<T>(d: Fields, entry: (e: Fields) => T): Record<string, T> | undefined {
  const t = d.optMap('blocks');
  if (!t) return undefined;
  const out: Record<string, T> = {};
  for (const k of t.keys()) {
    const b = Number(k);
    if (!isBlockSize(b) || b === DEFAULT_BLOCK_SIZE) t.fail(`has a block ${k}: blocks holds ${BLOCK_SIZES.filter((x) => x !== DEFAULT_BLOCK_SIZE).join(', ')} (block ${DEFAULT_BLOCK_SIZE} is the top-level entries)`);
    out[k] = entry(t.map(k));
  }
  return out;
}

/** A per-bits table of a block's entry: only blockwise precisions (below 16 bits) have a block. */
function blockwiseRecord(e: Fields, name: string, min = -Infinity): Record<string, number> {
  const r = e.numberRecord(name, min);
  for (const k of Object.keys(r)) if (!isBlockwise(Number(k))) e.fail(`${name} has ${k}-bit weights, which have no block: only precisions below 16 bits go in blocks`);
  return r;
}

export function computeProfile(raw: unknown, where: string, modelHash: string): ComputeProfile {
  const d = header(raw, 'compute', where);
  const p: ComputeProfile = {
    model: sameModel(d, modelHash),
    layerDecodeMs: d.numberRecord('layerDecodeMs', 0),
    embedMs: d.num('embedMs', 0),
    headMs: d.num('headMs', 0),
    baselineBytes: d.num('baselineBytes', 0),
  };
  if (d.has('layerPrefillMsPerToken')) p.layerPrefillMsPerToken = d.numberRecord('layerPrefillMsPerToken', 0);
  if (d.has('headMsByBits')) p.headMsByBits = d.numberRecord('headMsByBits', 0);
  const blocks = blockTable(d, (e): BlockComputeProfile => {
    const b: BlockComputeProfile = { layerDecodeMs: blockwiseRecord(e, 'layerDecodeMs', 0) };
    if (e.has('layerPrefillMsPerToken')) b.layerPrefillMsPerToken = blockwiseRecord(e, 'layerPrefillMsPerToken', 0);
    if (e.has('headMsByBits')) b.headMsByBits = blockwiseRecord(e, 'headMsByBits', 0);
    return b;
  });
  if (blocks) p.blocks = blocks;
  return p;
}

export function linkProfile(raw: unknown, where: string): LinkProfile {
  const d = header(raw, 'link', where);
  return { rttMs: d.num('rttMs', 0), bytesPerSec: d.positive('bytesPerSec') };
}

export function accuracyProfile(raw: unknown, where: string, modelHash: string): AccuracyProfile {
  const d = header(raw, 'accuracy', where);
  const codecs: AccuracyProfile['codecs'] = {};
  const table = d.map('codecs');
  for (const k of table.keys()) {
    const e = table.map(k);
    codecs[k] = { pplIncrease: e.num('pplIncrease'), bitsPerValue: e.num('bitsPerValue', 0) };
  }
  const p: AccuracyProfile = { model: sameModel(d, modelHash), weights: d.numberRecord('weights'), codecs };
  if (d.has('heads')) p.heads = d.numberRecord('heads');
  if (d.has('embeds')) p.embeds = d.numberRecord('embeds');
  if (d.has('speculation')) {
    p.speculation = d.array('speculation', 256).map((raw, i) => {
      const e = Fields.of(raw, `${where}: speculation[${i}]`, failWith('E_BAD_CONFIG'));
      const s: SpeculationProfile = { proposer: e.str('proposer', 4096), acceptance: e.num('acceptance', 0, 1), coverage: e.num('coverage', 0, 1), draftMsPerToken: e.num('draftMsPerToken', 0) };
      if (e.has('split')) s.split = e.int('split', 0, 4096);
      if (e.has('edgeBytes')) s.edgeBytes = e.num('edgeBytes', 0);
      return s;
    });
  }
  const blocks = blockTable(d, (e): BlockAccuracyProfile => {
    const b: BlockAccuracyProfile = { weights: e.numberRecord('weights') };
    if (e.has('heads')) b.heads = blockwiseRecord(e, 'heads');
    return b;
  });
  if (blocks) p.blocks = blocks;
  const est = d.optMap('estimate');
  if (est) {
    if (est.value('method') !== 'sampled-splits') est.fail(`method must be 'sampled-splits'`);
    const e: AccuracyEstimate = { method: 'sampled-splits', splits: est.intArray('splits', 4097, 0, 4096), tokens: est.num('tokens', 0), seconds: est.num('seconds', 0) };
    const text = est.optMap('text');
    if (text) e.text = { name: text.str('name', 4096), sha256: text.str('sha256', 64, 64) };
    p.estimate = e;
  }
  return p;
}

/** The quantization blocks besides the default one that an accuracy profile measured. */
export function profileBlocks(accuracy: AccuracyProfile): number[] {
  return Object.keys(accuracy.blocks ?? {}).map(Number).sort((a, b) => a - b);
}

/** The weight precisions an accuracy profile covers (its keys are split/front/back). */
export function profileBits(accuracy: AccuracyProfile): number[] {
  return [...new Set(Object.keys(accuracy.weights).flatMap((k) => k.split('/').slice(1).map(Number)))].sort((a, b) => a - b);
}

/** Profile files (JSON) and their validation: a profile of another model, or a malformed one, is refused. */
import { SplitLLMError } from '../shared/errors.js';
import type { AccuracyProfile, ComputeProfile, LinkProfile } from './types.js';

export type ProfileKind = 'compute' | 'link' | 'accuracy';

export interface ProfileFile<T> {
  format: 'splitllm-profile';
  kind: ProfileKind;
  data: T;
  machine?: Record<string, unknown>;
}

function bad(where: string, why: string): never {
  throw new SplitLLMError('E_BAD_CONFIG', `${where}: ${why}`);
}

function header(raw: unknown, kind: ProfileKind, where: string): Record<string, unknown> {
  const f = raw as Partial<ProfileFile<unknown>> | null;
  if (!f || typeof f !== 'object' || f.format !== 'splitllm-profile') bad(where, `not a splitllm profile: make it with 'splitllm profile ${kind === 'compute' ? 'device' : kind}'`);
  if (f.kind !== kind) bad(where, `is a ${String(f.kind)} profile, a ${kind} profile is needed here`);
  if (!f.data || typeof f.data !== 'object') bad(where, 'has no data');
  return f.data as Record<string, unknown>;
}

const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0;

export function computeProfile(raw: unknown, where: string, modelHash: string): ComputeProfile {
  const d = header(raw, 'compute', where) as Partial<ComputeProfile>;
  if (d.model !== modelHash) bad(where, `was measured for another model (${String(d.model).slice(0, 12)}…, this one is ${modelHash.slice(0, 12)}…): profile this model`);
  if (!d.layerDecodeMs || typeof d.layerDecodeMs !== 'object' || !Object.values(d.layerDecodeMs).every(num)) bad(where, 'layerDecodeMs must map bit widths to milliseconds');
  if (!num(d.embedMs) || !num(d.headMs) || !num(d.baselineBytes)) bad(where, 'embedMs, headMs and baselineBytes must be non-negative numbers');
  return d as ComputeProfile;
}

export function linkProfile(raw: unknown, where: string): LinkProfile {
  const d = header(raw, 'link', where) as Partial<LinkProfile>;
  if (!num(d.rttMs) || !num(d.bytesPerSec) || !(d.bytesPerSec! > 0)) bad(where, 'rttMs and bytesPerSec must be positive numbers');
  return d as LinkProfile;
}

export function accuracyProfile(raw: unknown, where: string, modelHash: string): AccuracyProfile {
  const d = header(raw, 'accuracy', where) as Partial<AccuracyProfile>;
  if (d.model !== modelHash) bad(where, `was measured for another model (${String(d.model).slice(0, 12)}…, this one is ${modelHash.slice(0, 12)}…): profile this model`);
  if (!d.weights || typeof d.weights !== 'object' || !d.codecs || typeof d.codecs !== 'object') bad(where, 'needs weights and codecs tables');
  return d as AccuracyProfile;
}

/** The weight precisions an accuracy profile covers (its keys are split/front/back). */
export function profileBits(accuracy: AccuracyProfile): number[] {
  return [...new Set(Object.keys(accuracy.weights).flatMap((k) => k.split('/').slice(1).map(Number)))].sort((a, b) => a - b);
}

/**
 * The plan: what the planner chooses and what edge, cloud and planner all read.
 * `{split, frontBits, backBits, codec, kvCodec, maxSeq, predicted: {memory, latency, accuracy}}`.
 */
import { SplitLLMError } from './errors.js';

export interface Plan {
  /** the model the plan was made for (sha256 of its weights), when known */
  model?: string;
  split: number;
  frontBits: number;
  backBits: number;
  /** weight strategy of the quantized layers (default rtn) */
  strategy?: 'rtn' | 'awq' | 'smoothquant';
  blockSize?: number;
  codec: string;
  kvCodec: string;
  maxSeq: number;
  predicted?: { memory?: number; latency?: number; accuracy?: number; [k: string]: number | undefined };
}

const BITS = [2, 3, 4, 8, 16, 32];

export function validatePlan(raw: unknown, where = 'plan'): Plan {
  const p = raw as Partial<Plan> | null;
  const bad = (why: string): never => {
    throw new SplitLLMError('E_BAD_CONFIG', `${where}: ${why}: make a plan with 'splitllm plan' or fix the file`);
  };
  if (!p || typeof p !== 'object') return bad('not a JSON object');
  if (!Number.isInteger(p.split) || p.split! < 0) bad(`split ${JSON.stringify(p.split)} is not a layer index`);
  for (const k of ['frontBits', 'backBits'] as const) if (!BITS.includes(p[k] as number)) bad(`${k} ${JSON.stringify(p[k])} is not one of ${BITS.join(', ')}`);
  for (const k of ['codec', 'kvCodec'] as const) if (typeof p[k] !== 'string' || !p[k]) bad(`${k} must be a codec spec string`);
  if (!Number.isInteger(p.maxSeq) || p.maxSeq! <= 0) bad(`maxSeq ${JSON.stringify(p.maxSeq)} must be a positive integer`);
  if (p.strategy !== undefined && !['rtn', 'awq', 'smoothquant'].includes(p.strategy)) bad(`strategy "${p.strategy}" is unknown`);
  if (p.blockSize !== undefined && ![16, 32, 64, 128].includes(p.blockSize)) bad(`blockSize ${p.blockSize} is not 16, 32, 64 or 128`);
  return p as Plan;
}

/**
 * The plan: what the planner chooses and what edge, cloud and planner all read.
 * `{split, frontBits, backBits, headBits?, codec, kvCodec, maxSeq, prefillChunk?, predicted: {memory, latency, accuracy}}`.
 * `validatePlan` is the boundary for plan files: it checks every field and builds a fresh object.
 */
import { SplitLLMError } from './errors.js';
import { BLOCK_SIZES, isBlockSize, isWeightBits, WEIGHT_BITS } from './precision.js';

export interface Plan {
  /** the model the plan was made for (sha256 of its weights), when known */
  model?: string;
  split: number;
  frontBits: number;
  backBits: number;
  /** the LM head's weight bits (default 32) */
  headBits?: number;
  /** the token embedding's weight bits on the edge (default 32; 8 or 4) */
  embedBits?: number;
  /** weight strategy of the quantized layers (default rtn) */
  strategy?: string;
  blockSize?: number;
  codec: string;
  kvCodec: string;
  maxSeq: number;
  /** prompt positions per prefill message (the planner's choice for its prompt length) */
  prefillChunk?: number;
  /** speculative decoding the planner chose (`--speculate` spec; a draft model's path is relative to the model's package) */
  speculate?: string;
  /** most drafts per step with `speculate` */
  draftTokens?: number;
  predicted?: Record<string, number>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks a plan read from a file; `strategies` are the weight strategy names the caller knows. */
export function validatePlan(raw: unknown, where = 'plan', strategies?: readonly string[]): Plan {
  const bad = (why: string): never => {
    throw new SplitLLMError('E_BAD_CONFIG', `${where}: ${why}: make a plan with 'splitllm plan' or fix the file`);
  };
  if (!isRecord(raw)) return bad('not a JSON object');
  const int = (k: string, ok: (n: number) => boolean, what: string): number => {
    const v = raw[k];
    return typeof v === 'number' && Number.isInteger(v) && ok(v) ? v : bad(`${k} ${JSON.stringify(v)} ${what}`);
  };
  const str = (k: string, what: string): string => {
    const v = raw[k];
    return typeof v === 'string' && v.length > 0 ? v : bad(`${k} must be ${what}`);
  };
  const bitsMsg = `is not one of ${WEIGHT_BITS.join(', ')}`;
  const plan: Plan = {
    split: int('split', (n) => n >= 0, 'is not a layer index'),
    frontBits: int('frontBits', isWeightBits, bitsMsg),
    backBits: int('backBits', isWeightBits, bitsMsg),
    codec: str('codec', 'a codec spec string'),
    kvCodec: str('kvCodec', 'a codec spec string'),
    maxSeq: int('maxSeq', (n) => n > 0, 'must be a positive integer'),
  };
  if (raw['model'] !== undefined) plan.model = str('model', 'the sha256 of the model weights');
  if (raw['strategy'] !== undefined) {
    plan.strategy = str('strategy', 'a weight strategy name');
    if (strategies && !strategies.includes(plan.strategy)) bad(`strategy "${plan.strategy}" is unknown (known: ${strategies.join(', ')})`);
  }
  if (raw['prefillChunk'] !== undefined) plan.prefillChunk = int('prefillChunk', (n) => n > 0, 'must be a positive integer');
  if (raw['speculate'] !== undefined) plan.speculate = str('speculate', "a --speculate spec (ngram, early-exit, model:PATH)");
  if (raw['draftTokens'] !== undefined) plan.draftTokens = int('draftTokens', (n) => n >= 1 && n <= 16, 'must be 1..16');
  if (raw['embedBits'] !== undefined) plan.embedBits = int('embedBits', (n) => n === 4 || n === 8 || n === 32, 'is not 4, 8 or 32');
  if (raw['headBits'] !== undefined) plan.headBits = int('headBits', isWeightBits, bitsMsg);
  if (raw['blockSize'] !== undefined) plan.blockSize = int('blockSize', isBlockSize, `is not ${BLOCK_SIZES.join(', ')}`);
  const predicted = raw['predicted'];
  if (isRecord(predicted)) {
    plan.predicted = {};
    for (const [k, v] of Object.entries(predicted)) if (typeof v === 'number') plan.predicted[k] = v;
  }
  return plan;
}

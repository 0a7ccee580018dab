/**
 * A model family: what the importer, the package checks and the segment builder need to know about
 * Llama, Mistral, Qwen2 or a next one. Every family runs the shared decoder block (shared/decoder.ts);
 * a family names the Hugging Face `model_type`s it reads and turns their config.json into the block's
 * flags. Adding a family whose block is the shared one is one file plus one line in registry.ts.
 */
import { Fields, failWith } from '../../shared/fields.js';

/** Block flags and limits a family decides from its Hugging Face config. */
export interface FamilyFlags {
  qkvBias: boolean;
  tiedEmbeddings: boolean;
  /** Longest sequence the block computes exactly (the context, or a sliding window below it). */
  maxSeq: number;
}

export interface ModelFamily {
  /** The `architecture` a package manifest records. */
  id: string;
  summary: string;
  /** Hugging Face `config.json` `model_type` values this family imports. */
  hfModelTypes: readonly string[];
  /**
   * The block flags from a config.json, read through checked accessors; `context` is its
   * max_position_embeddings. Throws E_BAD_CONFIG for what the block cannot run.
   */
  fromHf(cfg: Fields, context: number): FamilyFlags;
}

/** Checked reads of a parsed config.json: a wrong type is E_BAD_CONFIG naming the file and the field. */
export function hfFields(raw: unknown, where: string): Fields {
  return Fields.of(raw, where, failWith('E_BAD_CONFIG'), 'a JSON object');
}

/** Refuses a config that turns on something the shared block does not compute. */
export function refuse(cfg: Fields, key: string, unsupported: boolean, fix: string): void {
  if (unsupported) cfg.fail(`${key} = ${JSON.stringify(cfg.value(key))}, which splitllm does not run yet: ${fix}`);
}

/**
 * The context the block computes exactly under sliding-window attention: with at most `window`
 * positions every key is inside the window, so full attention equals the family's own.
 */
export function slidingWindowCap(cfg: Fields, context: number, enabled: boolean): number {
  const window = enabled ? cfg.optInt('sliding_window', 0, 1 << 24) : undefined;
  return window !== undefined && window > 0 && window < context ? window : context;
}

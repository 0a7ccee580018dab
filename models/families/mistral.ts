/**
 * Mistral: the Llama block with sliding-window attention. Within the window every key is visible, so
 * the package's context is capped at the window and the shared block computes it exactly.
 */
import { slidingWindowCap, type ModelFamily } from './family.js';

export const mistral = {
  id: 'mistral',
  summary: 'Mistral: the Llama block; sliding-window attention, so the context is capped at the window',
  hfModelTypes: ['mistral'],
  fromHf(cfg, context) {
    return { qkvBias: false, tiedEmbeddings: cfg.optBool('tie_word_embeddings') ?? false, maxSeq: slidingWindowCap(cfg, context, true) };
  },
} as const satisfies ModelFamily;

/** Qwen2 and Qwen2.5: the Llama block with q/k/v biases; sliding-window attention only where use_sliding_window is set. */
import { slidingWindowCap, type ModelFamily } from './family.js';

export const qwen2 = {
  id: 'qwen2',
  summary: 'Qwen2 / Qwen2.5: the Llama block with q/k/v biases, often tied embeddings',
  hfModelTypes: ['qwen2'],
  fromHf(cfg, context) {
    return {
      qkvBias: true,
      tiedEmbeddings: cfg.optBool('tie_word_embeddings') ?? false,
      maxSeq: slidingWindowCap(cfg, context, cfg.optBool('use_sliding_window') ?? false),
    };
  },
} as const satisfies ModelFamily;

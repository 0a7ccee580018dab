/** Llama (1, 2, 3, 3.1/3.2 with llama3 rope_scaling), TinyLlama, SmolLM and every llama2.c checkpoint. */
import { refuse, type ModelFamily } from './family.js';

export const llama = {
  id: 'llama',
  summary: 'Llama and its plain-RoPE descendants (TinyLlama, SmolLM, llama2.c checkpoints); q/k/v biases when attention_bias is set',
  hfModelTypes: ['llama'],
  fromHf(cfg, context) {
    refuse(cfg, 'mlp_bias', cfg.optBool('mlp_bias') === true, 'use a checkpoint without feed-forward biases');
    return { qkvBias: cfg.optBool('attention_bias') ?? false, tiedEmbeddings: cfg.optBool('tie_word_embeddings') ?? false, maxSeq: context };
  },
} as const satisfies ModelFamily;

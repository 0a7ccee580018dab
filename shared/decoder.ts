/**
 * The decoder block every supported model family shares: pre-RMSNorm attention with RoPE and grouped
 * query heads, then a pre-RMSNorm SwiGLU feed-forward, around one residual stream. This file is its
 * tensor layout — names in the Hugging Face Llama layout ([out, in] matrices), shapes, which RMSNorm
 * each linear reads and which carry a bias — read by the package checks, the segment builder, the
 * memory accounting and the calibrated weight strategies alike. A family (models/families/) sets the
 * block's flags; a family whose block differs adds a flag here and its branch in the segment builder.
 */

/** llama2.c rotates interleaved pairs of q/k, Hugging Face checkpoints the two halves. */
export type RopeStyle = 'interleaved' | 'half';

/** The shape of a model as the block and the accounting need it. */
export interface DecoderShape {
  dim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  ffnDim: number;
  vocabSize: number;
  maxSeq: number;
  /** The LM head reuses the embedding matrix. */
  tiedEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2, Llama with attention_bias). */
  qkvBias: boolean;
}

export const TENSORS = {
  embed: 'model.embed_tokens.weight',
  norm: 'model.norm.weight',
  lmHead: 'lm_head.weight',
  attnNorm: (i: number) => `model.layers.${i}.input_layernorm.weight`,
  ffnNorm: (i: number) => `model.layers.${i}.post_attention_layernorm.weight`,
  q: (i: number) => `model.layers.${i}.self_attn.q_proj.weight`,
  k: (i: number) => `model.layers.${i}.self_attn.k_proj.weight`,
  v: (i: number) => `model.layers.${i}.self_attn.v_proj.weight`,
  o: (i: number) => `model.layers.${i}.self_attn.o_proj.weight`,
  qBias: (i: number) => `model.layers.${i}.self_attn.q_proj.bias`,
  kBias: (i: number) => `model.layers.${i}.self_attn.k_proj.bias`,
  vBias: (i: number) => `model.layers.${i}.self_attn.v_proj.bias`,
  gate: (i: number) => `model.layers.${i}.mlp.gate_proj.weight`,
  up: (i: number) => `model.layers.${i}.mlp.up_proj.weight`,
  down: (i: number) => `model.layers.${i}.mlp.down_proj.weight`,
} as const;

export type LinearRole = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';
export const LINEAR_ROLES: readonly LinearRole[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

export interface LinearSpec {
  role: LinearRole;
  name: string;
  /** Output features (rows of the [out, in] matrix). */
  out: number;
  /** Input features. */
  in: number;
  /** The RMSNorm whose output this linear reads: a per-input-channel scale can be folded into it. */
  norm?: string;
  /** Its bias vector [out], when the block has one. */
  bias?: string;
}

export interface LayerLayout {
  attnNorm: string;
  ffnNorm: string;
  linears: Record<LinearRole, LinearSpec>;
}

export function layerLayout(c: DecoderShape, i: number): LayerLayout {
  const qd = c.nHeads * c.headDim;
  const kvd = c.nKvHeads * c.headDim;
  const attnNorm = TENSORS.attnNorm(i);
  const ffnNorm = TENSORS.ffnNorm(i);
  const bias = (name: string): { bias?: string } => (c.qkvBias ? { bias: name } : {});
  return {
    attnNorm,
    ffnNorm,
    linears: {
      q: { role: 'q', name: TENSORS.q(i), out: qd, in: c.dim, norm: attnNorm, ...bias(TENSORS.qBias(i)) },
      k: { role: 'k', name: TENSORS.k(i), out: kvd, in: c.dim, norm: attnNorm, ...bias(TENSORS.kBias(i)) },
      v: { role: 'v', name: TENSORS.v(i), out: kvd, in: c.dim, norm: attnNorm, ...bias(TENSORS.vBias(i)) },
      o: { role: 'o', name: TENSORS.o(i), out: c.dim, in: qd },
      gate: { role: 'gate', name: TENSORS.gate(i), out: c.ffnDim, in: c.dim, norm: ffnNorm },
      up: { role: 'up', name: TENSORS.up(i), out: c.ffnDim, in: c.dim, norm: ffnNorm },
      down: { role: 'down', name: TENSORS.down(i), out: c.dim, in: c.ffnDim },
    },
  };
}

/** The linears of layer i in graph order (q, k, v, o, gate, up, down). */
export function layerLinears(c: DecoderShape, i: number): LinearSpec[] {
  const l = layerLayout(c, i).linears;
  return LINEAR_ROLES.map((r) => l[r]);
}

/** The linears of layer i that read each RMSNorm, in graph order (attention's q/k/v, then gate/up). */
export function normGroups(c: DecoderShape, i: number): { norm: string; linears: LinearSpec[] }[] {
  const groups = new Map<string, LinearSpec[]>();
  for (const l of layerLinears(c, i)) {
    if (l.norm) groups.set(l.norm, [...(groups.get(l.norm) ?? []), l]);
  }
  return [...groups].map(([norm, linears]) => ({ norm, linears }));
}

/** Every tensor a package of this shape holds, with its shape, in file order. */
export function decoderTensors(c: DecoderShape): Map<string, number[]> {
  const m = new Map<string, number[]>();
  m.set(TENSORS.embed, [c.vocabSize, c.dim]);
  for (let i = 0; i < c.nLayers; i++) {
    const layer = layerLayout(c, i);
    m.set(layer.attnNorm, [c.dim]);
    const l = layer.linears;
    for (const spec of [l.q, l.k, l.v, l.o]) m.set(spec.name, [spec.out, spec.in]);
    for (const spec of [l.q, l.k, l.v]) if (spec.bias) m.set(spec.bias, [spec.out]);
    m.set(layer.ffnNorm, [c.dim]);
    for (const spec of [l.gate, l.up, l.down]) m.set(spec.name, [spec.out, spec.in]);
  }
  m.set(TENSORS.norm, [c.dim]);
  if (!c.tiedEmbeddings) m.set(TENSORS.lmHead, [c.vocabSize, c.dim]);
  return m;
}

/**
 * Shape fixtures: Hugging Face model folders with random weights in the exact configurations and file
 * layouts of models people deploy — Qwen2.5-0.5B (one bf16 file, tied head, q/k/v biases), Llama-3.2-1B
 * (two bf16 shards and their index, tied head, llama3 rope scaling) and Llama-3-8B (four shards, untied) —
 * deterministic from a seed, written tensor by tensor (memory: one chunk, not the model). The tokenizer is
 * the byte-level one synthetic models use, padded to the vocabulary, with the family's special tokens at
 * their ids. Never committed: made where a bench or test needs one (bench/shape-model.ts is the command).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decoderTensors, TENSORS as W } from '../shared/decoder.js';
import { syntheticTokenizerJson } from '../models/importers/synthetic.js';
import { writeSafetensorsStream } from '../models/safetensors.js';

export interface ShapeSpec {
  description: string;
  /** config.json as published (less fields splitllm does not read) */
  config: Record<string, unknown>;
  /** the number of safetensors shards (1: model.safetensors, no index) */
  shards: number;
  /** special tokens at their ids, with their tokenizer_config names */
  special: { bos: [string, number]; eos: [string, number] };
  chatTemplate: string;
}

const LLAMA3_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
const QWEN_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

export const SHAPES: Record<string, ShapeSpec> = {
  'qwen2.5-0.5b': {
    description: 'Qwen2.5-0.5B layout: 24 layers, hidden 896, 14/2 heads, FFN 4864, vocab 151936, tied, q/k/v biases, rope_theta 1e6; one bf16 file',
    config: {
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      hidden_act: 'silu',
      hidden_size: 896,
      intermediate_size: 4864,
      num_hidden_layers: 24,
      num_attention_heads: 14,
      num_key_value_heads: 2,
      vocab_size: 151936,
      max_position_embeddings: 32768,
      max_window_layers: 21,
      sliding_window: 32768,
      use_sliding_window: false,
      rope_theta: 1000000.0,
      rms_norm_eps: 1e-6,
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
      bos_token_id: 151643,
      eos_token_id: 151643,
    },
    shards: 1,
    special: { bos: ['<|endoftext|>', 151643], eos: ['<|endoftext|>', 151643] },
    chatTemplate: QWEN_TEMPLATE,
  },
  'llama-3.2-1b': {
    description: 'Llama-3.2-1B layout: 16 layers, hidden 2048, 32/8 heads, FFN 8192, vocab 128256, tied, llama3 rope scaling; two bf16 shards + index',
    config: {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_act: 'silu',
      hidden_size: 2048,
      intermediate_size: 8192,
      num_hidden_layers: 16,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 64,
      vocab_size: 128256,
      max_position_embeddings: 131072,
      rope_theta: 500000.0,
      rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
      rms_norm_eps: 1e-5,
      attention_bias: false,
      mlp_bias: false,
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
      bos_token_id: 128000,
      eos_token_id: 128001,
    },
    shards: 2,
    special: { bos: ['<|begin_of_text|>', 128000], eos: ['<|end_of_text|>', 128001] },
    chatTemplate: LLAMA3_TEMPLATE,
  },
  'llama-3-8b': {
    description: 'Llama-3-8B layout: 32 layers, hidden 4096, 32/8 heads, FFN 14336, vocab 128256, untied head; four bf16 shards + index',
    config: {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_act: 'silu',
      hidden_size: 4096,
      intermediate_size: 14336,
      num_hidden_layers: 32,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      vocab_size: 128256,
      max_position_embeddings: 8192,
      rope_theta: 500000.0,
      rms_norm_eps: 1e-5,
      attention_bias: false,
      tie_word_embeddings: false,
      torch_dtype: 'bfloat16',
      bos_token_id: 128000,
      eos_token_id: 128001,
    },
    shards: 4,
    special: { bos: ['<|begin_of_text|>', 128000], eos: ['<|end_of_text|>', 128001] },
    chatTemplate: LLAMA3_TEMPLATE,
  },
};

/** The tensors of a shape in Hugging Face's order and names, with their shapes. */
export function shapeTensors(spec: ShapeSpec, layers?: number): [string, number[]][] {
  const c = spec.config;
  const n = (k: string): number => c[k] as number;
  const dim = n('hidden_size');
  const nHeads = n('num_attention_heads');
  return [
    ...decoderTensors({
      dim,
      nLayers: layers ?? n('num_hidden_layers'),
      nHeads,
      nKvHeads: n('num_key_value_heads'),
      headDim: (c['head_dim'] as number | undefined) ?? dim / nHeads,
      ffnDim: n('intermediate_size'),
      vocabSize: n('vocab_size'),
      maxSeq: n('max_position_embeddings'),
      tiedEmbeddings: c['tie_word_embeddings'] === true,
      qkvBias: c['model_type'] === 'qwen2' || c['attention_bias'] === true,
    }),
  ];
}

/** FNV-1a of a string: each tensor's own seed, so shards can be written in any order. */
function hashName(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h || 1;
}

const CHUNK = 1 << 22; // values per write (8 MiB of bf16)

/**
 * Hands over one tensor's bf16 values: norms 1, everything else uniform with standard deviation `std`
 * (xorshift32 from the tensor's seed), in chunks.
 */
function tensorValues(put: (bytes: Uint8Array) => void, name: string, count: number, seed: number, std: number): void {
  const f = new Float32Array(Math.min(CHUNK, count));
  const bits = new Uint32Array(f.buffer);
  const out = new Uint16Array(f.length);
  const norm = name.endsWith('norm.weight');
  let s = hashName(name, seed);
  const scale = (std * Math.sqrt(3) * 2) / 4294967296;
  for (let done = 0; done < count; ) {
    const n = Math.min(f.length, count - done);
    if (norm) f.fill(1, 0, n);
    else
      for (let i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >>> 17;
        s ^= s << 5;
        f[i] = (s >>> 0) * scale - std * Math.sqrt(3);
      }
    for (let i = 0; i < n; i++) out[i] = bits[i]! >>> 16;
    put(new Uint8Array(out.buffer, 0, n * 2));
    done += n;
  }
}

export interface ShapeWriteOptions {
  seed?: number;
  /** fewer layers than the shape (the rest of the config as published) */
  layers?: number;
  /** called after each tensor with the bytes written so far and the total */
  progress?: (written: number, total: number) => void;
}

/** Writes the shape's Hugging Face folder (config.json, safetensors shards and index, tokenizer files); returns the weight bytes. */
export function writeShapeModel(shape: string, dir: string, opts: ShapeWriteOptions = {}): number {
  const spec = SHAPES[shape];
  if (!spec) throw new Error(`unknown shape ${shape}: choose one of ${Object.keys(SHAPES).join(', ')}`);
  const seed = opts.seed ?? 1;
  mkdirSync(dir, { recursive: true });
  const config = { ...spec.config, ...(opts.layers ? { num_hidden_layers: opts.layers } : {}) };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  const tensors = shapeTensors(spec, opts.layers);
  const bytesOf = (s: number[]): number => s.reduce((a, b) => a * b, 1) * 2;
  const total = tensors.reduce((a, [, s]) => a + bytesOf(s), 0);
  // shards of about equal bytes, tensors in order (as Hugging Face's sharding does)
  const groups: [string, number[]][][] = Array.from({ length: spec.shards }, () => []);
  let acc = 0;
  for (const t of tensors) {
    groups[Math.min(spec.shards - 1, Math.floor((acc / total) * spec.shards))]!.push(t);
    acc += bytesOf(t[1]);
  }
  const names = groups.map((_, i) => (spec.shards === 1 ? 'model.safetensors' : `model-${String(i + 1).padStart(5, '0')}-of-${String(spec.shards).padStart(5, '0')}.safetensors`));
  const weightMap: Record<string, string> = {};
  let written = 0;
  const dim = spec.config['hidden_size'] as number;
  for (const [g, group] of groups.entries()) {
    for (const [name] of group) weightMap[name] = names[g]!;
    writeSafetensorsStream(
      join(dir, names[g]!),
      group.map(([name, shape]) => ({
        name,
        shape,
        dtype: 'BF16' as const,
        write(put) {
          const std = name === W.embed || name === W.lmHead ? 1 / Math.sqrt(dim) : name.endsWith('.bias') ? 0.1 : 0.02;
          tensorValues(put, name, bytesOf(shape) / 2, seed, std);
          written += bytesOf(shape);
          opts.progress?.(written, total);
        },
      })),
      { format: 'pt' },
    );
  }
  if (spec.shards > 1) writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
  const vocab = spec.config['vocab_size'] as number;
  const tok = syntheticTokenizerJson(vocab);
  const model = tok['model'] as { vocab: Record<string, number> };
  const added: Record<string, unknown>[] = [];
  for (const [content, id] of [spec.special.bos, spec.special.eos]) {
    if (added.some((a) => a['id'] === id)) continue;
    for (const [k, v] of Object.entries(model.vocab)) if (v === id) delete model.vocab[k];
    model.vocab[content] = id;
    added.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  tok['added_tokens'] = added;
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok));
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({ bos_token: spec.special.bos[0], eos_token: spec.special.eos[0], chat_template: spec.chatTemplate, model_max_length: spec.config['max_position_embeddings'] }, null, 2) + '\n',
  );
  return total;
}

/**
 * GGUF importer: a llama-architecture GGUF (v2/v3; F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K
 * tensors) into a package. Tensors are dequantized to float32 — the package holds float weights and the
 * weight plan quantizes them again (OPSC) — and the tokenizer in the metadata becomes a tokenizer.json:
 * the SentencePiece-style `llama` vocabulary (pieces with scores) or the byte-level BPE `gpt2` one
 * (tokens with merges).
 *
 * llama.cpp's converter permutes q/k of Hugging Face checkpoints so that its RoPE rotates adjacent pairs
 * (ggml's "normal" mode, which the llama architecture uses), so a llama GGUF is ropeStyle "interleaved".
 * An `output.weight` bit-identical to `token_embd.weight` (llama2.c conversions write both) is stored
 * once, as tied embeddings.
 */
import { basename } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { Fields, failWith } from '../../shared/fields.js';
import { W, expectedTensors, validateConfig, type ModelConfig } from '../manifest.js';
import { GgufFile, ggmlTypeName, type GgufValue } from '../gguf.js';
import { MemoryWeights, sha256File, type ImportedModel } from '../package.js';
import { sentencePieceTokenizerJson } from '../tokenizer/llama2c.js';

/** GGUF architectures imported, and the package architecture each becomes. */
const ARCHES: Record<string, 'llama'> = { llama: 'llama' };

/** Package tensor name → GGUF tensor name. */
function ggufName(name: string): string {
  const fixed: Record<string, string> = { [W.embed]: 'token_embd.weight', [W.norm]: 'output_norm.weight', [W.lmHead]: 'output.weight' };
  if (fixed[name]) return fixed[name];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
  const per: Record<string, string> = {
    'input_layernorm.weight': 'attn_norm.weight',
    'self_attn.q_proj.weight': 'attn_q.weight',
    'self_attn.k_proj.weight': 'attn_k.weight',
    'self_attn.v_proj.weight': 'attn_v.weight',
    'self_attn.o_proj.weight': 'attn_output.weight',
    'self_attn.q_proj.bias': 'attn_q.bias',
    'self_attn.k_proj.bias': 'attn_k.bias',
    'self_attn.v_proj.bias': 'attn_v.bias',
    'post_attention_layernorm.weight': 'ffn_norm.weight',
    'mlp.gate_proj.weight': 'ffn_gate.weight',
    'mlp.up_proj.weight': 'ffn_up.weight',
    'mlp.down_proj.weight': 'ffn_down.weight',
  };
  const tail = m ? per[m[2]!] : undefined;
  if (!m || !tail) throw new SplitLLMError('E_RUNTIME', `no GGUF name for package tensor ${name}`);
  return `blk.${m[1]}.${tail}`;
}

/** The metadata as a checked map (u64 values that fit become numbers). */
function metadataFields(g: GgufFile): Fields {
  const plain = (v: GgufValue): unknown =>
    typeof v === 'bigint' ? (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v) : Array.isArray(v) ? v.map(plain) : v;
  const raw: Record<string, unknown> = {};
  for (const [k, v] of g.metadata) raw[k] = plain(v);
  return Fields.of(raw, g.path, failWith('E_BAD_CONFIG', 'the GGUF metadata is incomplete; convert the model again with llama.cpp'));
}

export async function importGguf(path: string): Promise<ImportedModel> {
  const g = GgufFile.open(path);
  try {
    const md = metadataFields(g);
    const arch = md.optStr('general.architecture', 64) ?? md.fail('has no general.architecture');
    const architecture = ARCHES[arch];
    if (!architecture) {
      throw new SplitLLMError(
        'E_UNKNOWN_ARCHITECTURE',
        `${path}: GGUF architecture "${arch}" is not supported: splitllm imports ${Object.keys(ARCHES).join(', ')} GGUF files (Llama-family decoders)`,
      );
    }
    const key = (k: string) => `${arch}.${k}`;
    const need = (k: string): number => {
      if (!md.has(key(k))) md.fail(`lacks ${key(k)}`);
      return md.int(key(k), 1, 1 << 24);
    };
    const dim = need('embedding_length');
    const nHeads = need('attention.head_count');
    const headDim = md.optInt(key('attention.key_length'), 1, 1 << 16) ?? dim / nHeads;
    const rotary = md.optInt(key('rope.dimension_count'), 1, 1 << 16);
    if (rotary !== undefined && rotary !== headDim) md.fail(`rotates ${rotary} of ${headDim} head dimensions (partial RoPE), which the shared block does not compute`);
    const scaling = md.optStr(key('rope.scaling.type'), 64);
    if (scaling !== undefined && scaling !== 'none') md.fail(`uses RoPE scaling "${scaling}", which the shared block does not compute: use a model with plain RoPE`);
    const tokens = md.array('tokenizer.ggml.tokens', 1 << 22);
    const pieces = tokens.map((t, i) => (typeof t === 'string' ? t : md.fail(`tokenizer.ggml.tokens[${i}] is not a string`)));
    const embed = g.info('token_embd.weight');
    if (embed.shape.length !== 2 || embed.shape[1] !== dim) md.fail(`token_embd.weight has shape [${embed.shape}], not [vocab, ${dim}]`);
    const vocabSize = embed.shape[0]!;
    if (pieces.length > vocabSize) {
      throw new SplitLLMError('E_VOCAB_MISMATCH', `${path}: the tokenizer has ${pieces.length} tokens but token_embd.weight has ${vocabSize} rows: the GGUF is inconsistent`);
    }
    const tokenId = (k: string, fallback: number): number => md.optInt(`tokenizer.ggml.${k}`, 0, vocabSize - 1) ?? fallback;

    const hasOutput = g.tensors.has('output.weight');
    const raw = {
      architecture,
      dim,
      nLayers: need('block_count'),
      nHeads,
      nKvHeads: md.optInt(key('attention.head_count_kv'), 1, 1 << 16) ?? nHeads,
      headDim,
      ffnDim: need('feed_forward_length'),
      vocabSize,
      maxSeq: md.optInt(key('context_length'), 1, 1 << 24) ?? 2048,
      ropeTheta: md.optNum(key('rope.freq_base'), 0) ?? 10000,
      ropeStyle: 'interleaved',
      normEps: md.optNum(key('attention.layer_norm_rms_epsilon'), 0) ?? 1e-5,
      tiedEmbeddings: !hasOutput,
      qkvBias: g.tensors.has('blk.0.attn_q.bias'),
      bosId: tokenId('bos_token_id', 1),
      eosId: tokenId('eos_token_id', 2),
    };
    let config: ModelConfig = validateConfig(raw, path);

    const types = new Map<string, number>();
    const read = (name: string): { shape: number[]; data: Float32Array } => {
      const gname = ggufName(name);
      const info = g.info(gname);
      const data = g.readF32(gname);
      for (let i = 0; i < data.length; i++) {
        if (!Number.isFinite(data[i]!)) throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path}: tensor ${gname} holds a non-finite value at element ${i}: the file is corrupt`);
      }
      const t = ggmlTypeName(info.type);
      types.set(t, (types.get(t) ?? 0) + 1);
      return { shape: info.shape, data };
    };
    const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
    if (hasOutput) {
      // llama2.c conversions write the shared classifier twice; keep one copy when they are the same
      const emb = read(W.embed);
      const out = read(W.lmHead);
      if (emb.data.length === out.data.length && emb.data.every((x, i) => Object.is(x, out.data[i]))) {
        config = { ...config, tiedEmbeddings: true };
      }
      tensors.set(W.embed, emb);
      if (!config.tiedEmbeddings) tensors.set(W.lmHead, out);
    }
    for (const [name, shape] of expectedTensors(config)) {
      const t = tensors.get(name) ?? read(name);
      if (t.shape.join(',') !== shape.join(',')) {
        throw new SplitLLMError('E_BAD_PACKAGE', `${path}: tensor ${ggufName(name)} has shape [${t.shape}], the metadata implies [${shape}]`);
      }
      tensors.set(name, t);
    }

    const tokenizerModel = md.optStr('tokenizer.ggml.model', 64);
    const bos = config.bosId;
    let tokenizerJson: Record<string, unknown>;
    if (tokenizerModel === 'llama') {
      const scores = md.numArray('tokenizer.ggml.scores', pieces.length);
      const kinds = md.has('tokenizer.ggml.token_type') ? md.intArray('tokenizer.ggml.token_type', pieces.length, 0, 6) : [];
      // token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
      tokenizerJson = sentencePieceTokenizerJson(pieces, scores, {
        bosId: bos,
        special: (id) => id === bos || id === config.eosId || (kinds[id] !== undefined && kinds[id] !== 1 && kinds[id] !== 6),
        addSpacePrefix: md.optBool('tokenizer.ggml.add_space_prefix') ?? true,
      });
    } else if (tokenizerModel === 'gpt2') {
      const pre = md.optStr('tokenizer.ggml.pre', 64) ?? 'default';
      if (pre !== 'default' && pre !== 'gpt2') {
        throw new SplitLLMError('E_TOKENIZER', `${path}: the gpt2 vocabulary's pre-tokenizer "${pre}" is not supported (only GPT-2's own): import the Hugging Face checkpoint with its tokenizer.json instead`);
      }
      const merges = md.array('tokenizer.ggml.merges', 1 << 22).map((m, i) => {
        const parts = typeof m === 'string' ? m.split(' ') : [];
        return parts.length === 2 ? parts : md.fail(`tokenizer.ggml.merges[${i}] is not "a b"`);
      });
      const kinds = md.has('tokenizer.ggml.token_type') ? md.intArray('tokenizer.ggml.token_type', pieces.length, 0, 6) : [];
      tokenizerJson = byteLevelTokenizerJson(pieces, merges, (id) => kinds[id] === 3 || kinds[id] === 4);
    } else {
      throw new SplitLLMError(
        'E_TOKENIZER',
        `${path}: tokenizer model ${tokenizerModel === undefined ? '(none)' : `"${tokenizerModel}"`} is not supported: splitllm converts GGUF "llama" and "gpt2" vocabularies`,
      );
    }
    return {
      // llama.cpp's llama2.c converter names every model "llama": the file name says more then
      name: ((n) => (n === undefined || n === arch ? basename(path).replace(/\.gguf$/i, '') : n))(md.optStr('general.name', 256)),
      config,
      weights: new MemoryWeights(tensors),
      tokenizerJson,
      source: { format: 'gguf', version: g.version, file: basename(path), architecture: arch, tensorTypes: Object.fromEntries(types) },
      sha256: await sha256File(path),
    };
  } finally {
    g.close();
  }
}

/** A tokenizer.json for GPT-2's byte-level BPE (tokens already in its byte-to-unicode alphabet). */
function byteLevelTokenizerJson(tokens: readonly string[], merges: readonly string[][], special: (id: number) => boolean): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => {
    if (!(t in vocab)) vocab[t] = i;
  });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: tokens.flatMap((content, id) =>
      special(id) ? [{ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }] : [],
    ),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

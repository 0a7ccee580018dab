/**
 * llama2.c checkpoint importer (version-0 "legacy" layout): 7 int32 header fields
 * (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means an
 * untied classifier follows), then float32 weights: token_embedding [V,D], rms_att [L,D], wq [L,D,D],
 * wk [L,KV,D], wv [L,KV,D], wo [L,D,D], rms_ffn [L,D], w1 [L,H,D], w2 [L,D,H], w3 [L,H,D], rms_final [D],
 * freq_cis_real and freq_cis_imag (seq_len·head_dim/2 each, unused), then wcls [V,D] when untied.
 * llama2.c rotates interleaved pairs, so the package records ropeStyle "interleaved" and keeps wq/wk as is.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { W, type ModelConfig } from '../manifest.js';
import { MemoryWeights, type ImportedModel } from '../package.js';
import { llama2cToTokenizerJson, readLlama2cTokenizer } from '../tokenizer/llama2c.js';

const HEADER_BYTES = 28;
const V1_MAGIC = 0x616b3432; // "ak42": llama2.c's version-1/2 export

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  shared: boolean;
}

export function llama2cExpectedBytes(h: Llama2cHeader): number {
  const { dim: D, hiddenDim: H, nLayers: L, nHeads, nKvHeads, vocabSize: V, seqLen } = h;
  const hd = D / nHeads;
  const kv = nKvHeads * hd;
  const floats =
    V * D + L * D + L * D * D + 2 * L * kv * D + L * D * D + L * D + 3 * L * H * D + D + seqLen * hd + (h.shared ? 0 : V * D);
  return HEADER_BYTES + floats * 4;
}

export function parseLlama2cHeader(buf: Buffer, path: string): Llama2cHeader {
  if (buf.length < HEADER_BYTES) {
    throw new SplitLLMError('E_CHECKPOINT_TRUNCATED', `${path} is ${buf.length} bytes, shorter than a llama2.c header: the file is truncated`);
  }
  if (buf.readUInt32LE(0) === V1_MAGIC) {
    throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path} uses llama2.c's version-1/2 layout: export it with --version 0 (legacy) and import again`);
  }
  const f = [0, 1, 2, 3, 4, 5, 6].map((i) => buf.readInt32LE(i * 4));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = f as [number, number, number, number, number, number, number];
  const h: Llama2cHeader = { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize: Math.abs(vocab), seqLen, shared: vocab > 0 };
  const sane =
    dim > 0 && dim <= 65536 && hiddenDim > 0 && hiddenDim <= 262144 && nLayers > 0 && nLayers <= 1024 && nHeads > 0 &&
    nKvHeads > 0 && nKvHeads <= nHeads && nHeads % nKvHeads === 0 && dim % nHeads === 0 && (dim / nHeads) % 2 === 0 &&
    h.vocabSize > 0 && h.vocabSize <= 1 << 20 && seqLen > 0 && seqLen <= 1 << 20;
  if (!sane) {
    throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path} has an impossible llama2.c header [${f.join(', ')}]: it is not a llama2.c checkpoint or it is corrupt`);
  }
  return h;
}

/** The tokenizer next to a checkpoint: tok<vocab>.bin or tokenizer.bin in the same folder. */
export function findLlama2cTokenizer(checkpoint: string): string {
  const dir = dirname(checkpoint);
  let vocab = 0;
  try {
    const b = readFileSync(checkpoint).subarray(0, HEADER_BYTES);
    if (b.length === HEADER_BYTES) vocab = Math.abs(b.readInt32LE(20));
  } catch {
    /* reported by the importer */
  }
  for (const name of [`tok${vocab}.bin`, 'tokenizer.bin']) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  throw new SplitLLMError('E_USAGE', `no tokenizer found next to ${basename(checkpoint)}: pass the llama2.c tok*.bin with --tokenizer`);
}

export async function importLlama2c(path: string, tokenizerPath: string): Promise<ImportedModel> {
  if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `checkpoint ${path} does not exist: check the path`);
  const buf = readFileSync(path);
  const h = parseLlama2cHeader(buf, path);
  const expected = llama2cExpectedBytes(h);
  if (buf.length < expected) {
    throw new SplitLLMError('E_CHECKPOINT_TRUNCATED', `${path} is ${buf.length} bytes but its header implies ${expected}: the file is truncated, download or export it again`);
  }
  if (buf.length > expected) {
    throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path} is ${buf.length} bytes but its header implies ${expected}: it is not a version-0 llama2.c checkpoint`);
  }
  const vocab = readLlama2cTokenizer(tokenizerPath);
  if (vocab.pieces.length !== h.vocabSize) {
    throw new SplitLLMError(
      'E_VOCAB_MISMATCH',
      `tokenizer ${basename(tokenizerPath)} has ${vocab.pieces.length} pieces but the checkpoint's vocabulary has ${h.vocabSize}: pass the tok*.bin that belongs to this model`,
    );
  }
  // copy out of the file buffer into one aligned Float32Array
  const all = new Float32Array(new Uint8Array(buf.subarray(HEADER_BYTES)).buffer);
  for (let i = 0; i < all.length; i++) {
    if (!Number.isFinite(all[i]!)) {
      throw new SplitLLMError('E_CHECKPOINT_CORRUPT', `${path} holds a non-finite weight at float ${i}: the checkpoint is corrupt`);
    }
  }
  const { dim: D, hiddenDim: H, nLayers: L, vocabSize: V } = h;
  const hd = D / h.nHeads;
  const kv = h.nKvHeads * hd;
  let off = 0;
  const take = (n: number): Float32Array => {
    const a = all.subarray(off, off + n);
    off += n;
    return a;
  };
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const put = (name: string, shape: number[], data: Float32Array) => tensors.set(name, { shape, data });
  put(W.embed, [V, D], take(V * D));
  const perLayer = (n: number, name: (i: number) => string, shape: number[]) => {
    for (let i = 0; i < L; i++) put(name(i), shape, take(n));
  };
  perLayer(D, W.attnNorm, [D]);
  perLayer(D * D, W.q, [D, D]);
  perLayer(kv * D, W.k, [kv, D]);
  perLayer(kv * D, W.v, [kv, D]);
  perLayer(D * D, W.o, [D, D]);
  perLayer(D, W.ffnNorm, [D]);
  perLayer(H * D, W.gate, [H, D]);
  perLayer(D * H, W.down, [D, H]);
  perLayer(H * D, W.up, [H, D]);
  put(W.norm, [D], take(D));
  take(h.seqLen * hd); // freq_cis_real + freq_cis_imag (seq_len · head_dim/2 each)
  if (!h.shared) put(W.lmHead, [V, D], take(V * D));

  const config: ModelConfig = {
    architecture: 'llama',
    dim: D,
    nLayers: L,
    nHeads: h.nHeads,
    nKvHeads: h.nKvHeads,
    headDim: hd,
    ffnDim: H,
    vocabSize: V,
    maxSeq: h.seqLen,
    ropeTheta: 10000,
    ropeStyle: 'interleaved',
    normEps: 1e-5,
    tiedEmbeddings: h.shared,
    qkvBias: false,
    bosId: 1,
    eosId: 2,
  };
  return {
    name: basename(path).replace(/\.bin$/, ''),
    config,
    weights: new MemoryWeights(tensors),
    tokenizerJson: llama2cToTokenizerJson(vocab, 1, 2),
    source: { format: 'llama2c-v0', checkpoint: basename(path), tokenizer: basename(tokenizerPath) },
    sha256: createHash('sha256').update(buf).digest('hex'),
  };
}

/**
 * llama2.c tokenizer files (tok*.bin) and their conversion to an equivalent Hugging Face tokenizer.json.
 *
 * tok*.bin layout: int32 max_token_length, then per token: float32 score, int32 byte length, UTF-8 bytes.
 * llama2.c's encode: prepend the " " piece (dummy prefix), map each code point to its piece (unknown
 * code points fall back to one byte token per UTF-8 byte, id = byte + 3), then repeatedly merge the
 * adjacent pair whose concatenation is a piece with the highest score (leftmost on ties).
 *
 * The equivalent tokenizer.json is a BPE model with byte fallback whose merge list holds every pair
 * (a, b) with a, b and a+b in the vocabulary, ranked by the score of a+b; spaces are written as "▁"
 * by the normalizer and restored by the decoder, as in Llama's own tokenizer.json.
 */
import { existsSync, readFileSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';

export interface Llama2cVocab {
  pieces: string[];
  scores: number[];
  maxTokenLength: number;
}

const BYTE_RE = /^<0x[0-9A-F]{2}>$/;

export function readLlama2cTokenizer(path: string): Llama2cVocab {
  if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `tokenizer file ${path} does not exist: pass --tokenizer with the model's tok*.bin`);
  const b = readFileSync(path);
  const bad = (why: string): never => {
    throw new SplitLLMError('E_TOKENIZER', `${path} is not a llama2.c tokenizer (${why}): pass the tok*.bin that came with the model`);
  };
  if (b.length < 4) bad('file too short');
  const maxTokenLength = b.readInt32LE(0);
  if (maxTokenLength <= 0 || maxTokenLength > 1024) bad(`max_token_length ${maxTokenLength} is implausible`);
  const pieces: string[] = [];
  const scores: number[] = [];
  const dec = new TextDecoder('utf-8', { fatal: false });
  let o = 4;
  while (o < b.length) {
    if (o + 8 > b.length) bad('truncated entry');
    const score = b.readFloatLE(o);
    const len = b.readInt32LE(o + 4);
    o += 8;
    if (len < 0 || len > maxTokenLength || o + len > b.length) bad(`entry ${pieces.length} has length ${len}`);
    scores.push(score);
    pieces.push(dec.decode(b.subarray(o, o + len)));
    o += len;
  }
  if (pieces.length < 259) bad(`only ${pieces.length} pieces; a llama2.c vocabulary has 3 specials and 256 byte pieces`);
  return { pieces, scores, maxTokenLength };
}

const SP = '\u2581';

/** Builds a tokenizer.json (Hugging Face `tokenizers` format) equivalent to llama2.c's encode/decode. */
export function llama2cToTokenizerJson(v: Llama2cVocab, bosId = 1, eosId = 2): Record<string, unknown> {
  const names = v.pieces.map((p, i) => {
    if (i === 0) return '<unk>';
    if (i === bosId) return '<s>';
    if (i === eosId) return '</s>';
    return p.replaceAll(' ', SP);
  });
  return sentencePieceTokenizerJson(names, v.scores, { bosId, special: (id) => id <= 2 || id === bosId || id === eosId });
}

export interface SentencePieceOptions {
  bosId: number;
  /** ids that never take part in a merge (unknown, control), besides the <0xXX> byte pieces */
  special: (id: number) => boolean;
  /** prepend "▁" to the text (SentencePiece's dummy prefix; llama2.c and Llama do) */
  addSpacePrefix?: boolean;
}

/**
 * A tokenizer.json for a SentencePiece-style BPE vocabulary with scores (pieces with "▁" for spaces,
 * <0xXX> byte pieces): llama2.c's tokenizers and GGUF's `llama` vocabularies. Merges rank by the merged
 * piece's score, as both encoders do.
 */
export function sentencePieceTokenizerJson(names: readonly string[], scores: readonly number[], o: SentencePieceOptions): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  names.forEach((n, i) => {
    if (!(n in vocab)) vocab[n] = i;
  });
  const bosName = names[o.bosId] ?? '<s>';
  const unkId = names.indexOf('<unk>');
  const mergeable = (id: number | undefined): id is number => id !== undefined && !o.special(id) && !BYTE_RE.test(names[id]!);
  const merges: { a: string; b: string; score: number; id: number; k: number }[] = [];
  names.forEach((n, id) => {
    if (!mergeable(id)) return;
    const cps = Array.from(n);
    for (let k = 1; k < cps.length; k++) {
      const a = cps.slice(0, k).join('');
      const b = cps.slice(k).join('');
      if (mergeable(vocab[a]) && mergeable(vocab[b])) merges.push({ a, b, score: scores[id] ?? 0, id, k });
    }
  });
  merges.sort((x, y) => y.score - x.score || x.id - y.id || x.k - y.k);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        ...(o.addSpacePrefix === false ? [] : [{ type: 'Prepend', prepend: SP }]),
        { type: 'Replace', pattern: { String: ' ' }, content: SP },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bosName, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bosName, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: bosName, type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { [bosName]: { id: bosName, ids: [o.bosId], tokens: [bosName] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SP }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(o.addSpacePrefix === false ? [] : [{ type: 'Strip', content: ' ', start: 1, stop: 0 }]),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unkId >= 0 ? '<unk>' : null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: merges.map((m) => [m.a, m.b]),
    },
  };
}

/**
 * Text tokenizer: a local tokenizer.json run by @huggingface/transformers (no hub access). BOS is
 * prepended here, not by the tokenizer's post-processor, so that every model family behaves alike.
 */
import { existsSync, readFileSync } from 'node:fs';
import { PreTrainedTokenizer } from '@huggingface/transformers';
import { SplitLLMError } from '../../shared/errors.js';

export interface TokenizerOptions {
  bosId: number;
  eosId: number;
}

export class TextTokenizer {
  private readonly tok: PreTrainedTokenizer;
  readonly vocabSize: number;

  constructor(
    readonly json: Record<string, unknown>,
    readonly opts: TokenizerOptions,
  ) {
    try {
      this.tok = new PreTrainedTokenizer(json, { clean_up_tokenization_spaces: false, add_bos_token: false });
    } catch (e) {
      throw new SplitLLMError('E_TOKENIZER', `tokenizer.json could not be loaded (${(e as Error).message}): re-import the model`);
    }
    let max = -1;
    for (const id of this.tok.get_vocab().values()) if (id > max) max = id;
    this.vocabSize = max + 1;
  }

  static load(path: string, opts: TokenizerOptions): TextTokenizer {
    if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `tokenizer ${path} does not exist: re-import the model`);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    } catch {
      throw new SplitLLMError('E_TOKENIZER', `${path} is not valid JSON: re-import the model`);
    }
    return new TextTokenizer(json, opts);
  }

  /** Token ids of `text`, BOS first unless `bos` is false. Empty text gives [BOS]. */
  encode(text: string, bos = true): number[] {
    const ids = text.length === 0 ? [] : (this.tok.encode(text, { add_special_tokens: false }) as number[]);
    return bos ? [this.opts.bosId, ...ids] : ids;
  }

  /** Text of `ids`; BOS/EOS are dropped, and a leading space after BOS is stripped as llama2.c does. */
  decode(ids: readonly number[]): string {
    const body = ids.filter((id) => id !== this.opts.bosId && id !== this.opts.eosId);
    if (body.length === 0) return '';
    return this.tok.decode(body, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }
}

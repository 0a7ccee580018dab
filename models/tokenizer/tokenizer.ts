/**
 * Text tokenizer: a local tokenizer.json run by @huggingface/transformers (no hub access). BOS is
 * prepended here, not by the tokenizer's post-processor, so that every model family behaves alike.
 */
import { existsSync, readFileSync } from 'node:fs';
import { PreTrainedTokenizer } from '@huggingface/transformers';
import { SplitLLMError } from '../../shared/errors.js';
import { Fields, failWith } from '../../shared/fields.js';

export interface TokenizerOptions {
  bosId: number;
  eosId: number;
  /** the package's tokenizer_config.json: chat template and special tokens */
  config?: TokenizerConfig;
}

/** One message of a conversation, as the OpenAI API and chat templates see it. */
export interface ChatMessage {
  role: string;
  content: string;
}

/** What splitllm keeps of a tokenizer_config.json: the chat template and the special tokens it names. */
export interface TokenizerConfig {
  /** a Jinja template, or named templates ("default", "tool_use", …) */
  chat_template?: string | Record<string, string>;
  bos_token?: string;
  eos_token?: string;
  unk_token?: string;
  pad_token?: string;
}

const SPECIAL_TOKENS = ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const;

/**
 * Checks a parsed tokenizer_config.json and keeps what chat templates need (E_TOKENIZER naming the
 * field). Special tokens may be strings or {content} objects, as Hugging Face writes both.
 */
export function parseTokenizerConfig(raw: unknown, where: string): TokenizerConfig {
  const f: Fields = Fields.of(raw, where, failWith('E_TOKENIZER'), 'a JSON object');
  const out: TokenizerConfig = {};
  const t = f.value('chat_template');
  if (typeof t === 'string') out.chat_template = t;
  else if (Array.isArray(t)) {
    const named: Record<string, string> = {};
    t.forEach((entry, i) => {
      const e = Fields.of(entry, `${where}: chat_template[${i}]`, (m) => f.fail(m));
      named[e.str('name', 256)] = e.str('template');
    });
    out.chat_template = named;
  } else if (t !== undefined && t !== null) f.fail('chat_template must be a string or a list of {name, template}');
  for (const k of SPECIAL_TOKENS) {
    const v = f.value(k);
    if (typeof v === 'string') out[k] = v;
    else if (v !== undefined && v !== null) out[k] = f.map(k).str('content', 256);
  }
  return out;
}

export class TextTokenizer {
  private readonly tok: PreTrainedTokenizer;
  readonly vocabSize: number;

  constructor(
    readonly json: Record<string, unknown>,
    readonly opts: TokenizerOptions,
  ) {
    try {
      this.tok = new PreTrainedTokenizer(json, { ...opts.config, clean_up_tokenization_spaces: false, add_bos_token: false });
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

  get hasChatTemplate(): boolean {
    return this.opts.config?.chat_template !== undefined;
  }

  /**
   * Token ids of a conversation rendered by the tokenizer's own chat template, with the BOS/EOS rules of
   * that template (it writes bos_token where it wants one; nothing else is added), as Hugging Face's
   * apply_chat_template does. `addGenerationPrompt` opens the assistant's turn.
   */
  chat(messages: ChatMessage[], addGenerationPrompt = true): number[] {
    if (!this.hasChatTemplate) {
      throw new SplitLLMError('E_CHAT_TEMPLATE', "this model has no chat template (tokenizer_config.json chat_template): use /v1/completions with a prompt, or import the model with its tokenizer_config.json");
    }
    let ids: unknown;
    try {
      ids = this.tok.apply_chat_template(messages, { tokenize: true, return_tensor: false, return_dict: false, add_generation_prompt: addGenerationPrompt });
    } catch (e) {
      throw new SplitLLMError('E_CHAT_TEMPLATE', `the model's chat template refused the conversation: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'number')) throw new SplitLLMError('E_RUNTIME', 'the chat template did not give token ids');
    return ids;
  }

  /** Text of `ids`; BOS/EOS are dropped, and a leading space after BOS is stripped as llama2.c does. */
  decode(ids: readonly number[]): string {
    const body = ids.filter((id) => id !== this.opts.bosId && id !== this.opts.eosId);
    if (body.length === 0) return '';
    return this.tok.decode(body, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }
}

import { SplitLLMError } from '../../shared/errors.js';
import { generate, Pipeline } from '../../models/runtime/pipeline.js';
import { weightEmitters, weightOptions } from '../weights.js';
import { generationOptions, intOption, modelOptions, requireString, samplingFrom, type Command, openModelOption, maxTokensOption } from '../common.js';

export const generateCommand: Command = {
  name: 'generate',
  summary:
    'Generates text locally. With --split K the model runs as two segments [0,K) and [K,L) in one process, which gives the same tokens.',
  usage: 'splitllm generate --model M [--tokenizer T] [--prompt P] [--max-tokens N] [--temperature 0] [--split K] [--json]',
  options: {
    ...modelOptions,
    ...generationOptions,
    split: { type: 'string', short: 's', description: 'split point K: run [0,K) then [K,L)', valueName: 'K' },
    threads: { type: 'string', description: 'onnxruntime intra-op threads' },
    ...weightOptions,
    json: { type: 'boolean', description: 'print {"tokens":[…],"text":…} at the end instead of streaming text' },
  },
  async run(values) {
    const pkg = await openModelOption(values);
    const split = intOption(values, 'split');
    const tok = pkg.tokenizer();
    const prompt = String(values['prompt'] ?? '');
    const promptIds = tok.encode(prompt, true);
    const maxTokens = maxTokensOption(values, pkg.config.maxSeq, promptIds.length);
    const weights = await weightEmitters(values, pkg, split);
    const pipeline = await Pipeline.create(pkg, split === undefined ? [] : [split], { threads: intOption(values, 'threads', undefined, 1), linearFor: weights.linearFor });
    const json = !!values['json'];
    const stream = new TextStream(tok, promptIds, prompt, json ? undefined : (s) => process.stdout.write(s));
    const t0 = performance.now();
    const out = await generate(pipeline, promptIds, { maxTokens, ...samplingFrom(values), onToken: (id) => stream.push(id) });
    const secs = (performance.now() - t0) / 1000;
    const text = stream.finish();
    if (json) {
      process.stdout.write(JSON.stringify({ tokens: out, text }) + '\n');
    } else {
      process.stdout.write('\n');
      process.stderr.write(`${out.length} tokens in ${secs.toFixed(2)}s (${(out.length / secs).toFixed(1)} tokens/s incl. prefill)\n`);
    }
    await pipeline.release();
    if (!Number.isFinite(secs)) throw new SplitLLMError('E_RUNTIME', 'timer failure');
  },
};

/** Text of the generated ids as it continues the prompt (decoded together so that spacing is right). */
export function decodeContinuation(tok: { decode(ids: readonly number[]): string }, promptIds: number[], gen: number[], prompt: string): string {
  if (!prompt) return tok.decode(gen);
  const full = tok.decode([...promptIds, ...gen]);
  const head = tok.decode(promptIds);
  return full.startsWith(head) ? full.slice(head.length) : tok.decode(gen);
}

/**
 * Streams generated text as tokens arrive: the prompt is written with the first token, and a token's
 * text is written once decoding it together with the rest cannot change it (multi-byte characters).
 */
export class TextStream {
  private readonly ids: number[] = [];
  private printed = '';

  constructor(
    private readonly tok: { decode(ids: readonly number[]): string },
    private readonly promptIds: number[],
    private readonly prompt: string,
    private readonly write?: (s: string) => void,
    /** ids that end a paragraph (generation that runs on past EOS): written as a blank line */
    private readonly breakIds: readonly number[] = [],
  ) {}

  private text(): string {
    const parts: number[][] = [[]];
    for (const id of this.ids) {
      if (this.breakIds.includes(id)) parts.push([]);
      else parts[parts.length - 1]!.push(id);
    }
    return [decodeContinuation(this.tok, this.promptIds, parts[0]!, this.prompt), ...parts.slice(1).map((p) => this.tok.decode(p))].join('\n\n');
  }

  push(id: number): void {
    if (this.ids.length === 0 && this.prompt) this.write?.(this.prompt);
    this.ids.push(id);
    const text = this.text();
    if (text.startsWith(this.printed)) {
      this.write?.(text.slice(this.printed.length));
      this.printed = text;
    }
  }

  /** Writes what is left and returns the whole continuation. */
  finish(): string {
    const text = this.text();
    if (this.ids.length === 0 && this.prompt) this.write?.(this.prompt);
    if (text.length > this.printed.length && text.startsWith(this.printed)) this.write?.(text.slice(this.printed.length));
    this.printed = text;
    return text;
  }
}

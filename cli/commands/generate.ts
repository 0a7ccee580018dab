import { generate, Pipeline } from '../../models/runtime/pipeline.js';
import { weightEmitters, weightOptions } from '../weights.js';
import { generationOptions, modelOptions, openModelOption, promptAndLength, readPrompt, samplingFrom } from '../common.js';
import { defineCommand, opt } from '../options.js';

export const generateCommand = defineCommand({
  name: 'generate',
  summary:
    'Generates text locally. With --split K the model runs as two segments [0,K) and [K,L) in one process, which gives the same tokens.',
  usage: 'splitllm generate [--model M] [--prompt P | --prompt-file F] [--max-tokens N] [--temperature 0] [--split K] [--json]',
  examples: [
    'splitllm generate --prompt "ROMEO:" --max-tokens 40',
    'splitllm generate --prompt-file scene.txt --truncate left --temperature 0.8 --top-k 40 --seed 7',
    'echo "JULIET:" | splitllm generate --prompt - --split 3 --json',
  ],
  options: {
    ...modelOptions,
    ...generationOptions,
    split: opt.int({ short: 's', description: 'split point K: run [0,K) then [K,L)', valueName: 'K' }),
    threads: opt.int({ min: 1, description: 'onnxruntime intra-op threads' }),
    ...weightOptions,
    json: opt.flag({ description: 'print {"tokens":[…],"text":…} at the end instead of streaming text' }),
  },
  async run(v) {
    const pkg = await openModelOption(v);
    const split = v.split;
    const tok = pkg.tokenizer();
    const prompt = readPrompt(v);
    const { ids: promptIds, maxTokens } = promptAndLength(tok, prompt, pkg.config.maxSeq, v);
    const weights = await weightEmitters(v, pkg, split);
    const pipeline = await Pipeline.create(pkg, split === undefined ? [] : [split], { threads: v.threads, linearFor: weights.linearFor });
    const stream = new TextStream(tok, promptIds, prompt, v.json ? undefined : (s) => process.stdout.write(s));
    const t0 = performance.now();
    const out = await generate(pipeline, promptIds, { maxTokens, ...samplingFrom(v), onToken: (id) => stream.push(id) });
    const secs = (performance.now() - t0) / 1000;
    const text = stream.finish();
    if (v.json) {
      process.stdout.write(JSON.stringify({ tokens: out, text }) + '\n');
    } else {
      process.stdout.write('\n');
      process.stderr.write(`${out.length} tokens in ${secs.toFixed(2)}s (${(out.length / secs).toFixed(1)} tokens/s incl. prefill)\n`);
    }
    await pipeline.release();
  },
});

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

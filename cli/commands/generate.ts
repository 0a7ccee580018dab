import { SplitLLMError } from '../../shared/errors.js';
import { openModel } from '../../models/package.js';
import { generate, Pipeline } from '../../models/runtime/pipeline.js';
import { weightEmitters, weightOptions } from '../weights.js';
import { generationOptions, intOption, modelOptions, requireString, samplingFrom, type Command } from '../common.js';

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
    const modelPath = requireString(values, 'model', 'generate');
    const pkg = await openModel(modelPath, { tokenizer: values['tokenizer'] as string | undefined });
    const split = intOption(values, 'split');
    const tok = pkg.tokenizer();
    const prompt = String(values['prompt'] ?? '');
    const promptIds = tok.encode(prompt, true);
    const maxTokens = intOption(values, 'max-tokens', 256)!;
    const weights = await weightEmitters(values, pkg, split);
    const pipeline = await Pipeline.create(pkg, split === undefined ? [] : [split], { threads: intOption(values, 'threads', undefined, 1), linearFor: weights.linearFor });
    const json = !!values['json'];
    const ids: number[] = [];
    let printed = '';
    if (!json && prompt) process.stdout.write(prompt);
    const t0 = performance.now();
    const out = await generate(pipeline, promptIds, {
      maxTokens,
      ...samplingFrom(values),
      onToken: (id) => {
        ids.push(id);
        if (json) return;
        const text = decodeContinuation(tok, promptIds, ids, prompt);
        if (text.startsWith(printed)) {
          process.stdout.write(text.slice(printed.length));
          printed = text;
        }
      },
    });
    const secs = (performance.now() - t0) / 1000;
    const text = decodeContinuation(tok, promptIds, out, prompt);
    if (json) {
      process.stdout.write(JSON.stringify({ tokens: out, text }) + '\n');
    } else {
      if (text.length > printed.length && text.startsWith(printed)) process.stdout.write(text.slice(printed.length));
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

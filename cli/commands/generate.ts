import { generate, Pipeline } from '../../models/runtime/pipeline.js';
import { weightEmitters, weightOptions } from '../weights.js';
import { generationOptions, modelOptions, openModelOption, promptOf, samplingFrom, tokenPrinter } from '../common.js';
import { defineCommand, opt } from '../options.js';

export const generateCommand = defineCommand({
  name: 'generate',
  summary:
    'Generates text locally. With --split K the model runs as two segments [0,K) and [K,L) in one process, which gives the same tokens.',
  usage: 'splitllm generate [--model M] [--prompt P | --prompt-file F | --prompt-ids 5,17,3] [--max-tokens N] [--temperature 0] [--split K] [--json]',
  examples: [
    'splitllm generate --prompt "ROMEO:" --max-tokens 40',
    'splitllm generate --prompt-file scene.txt --truncate left --temperature 0.8 --top-k 40 --seed 7',
    'echo "JULIET:" | splitllm generate --prompt - --split 3 --json',
    'splitllm generate --model models/gpt2-onnx --prompt-ids 5,17,3 --max-tokens 8 --json',
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
    const { text: prompt, ids: promptIds, maxTokens } = promptOf(pkg, v);
    const weights = await weightEmitters(v, pkg, split);
    const pipeline = await Pipeline.create(pkg, split === undefined ? [] : [split], { threads: v.threads, linearFor: weights.linearFor, headLinear: weights.headLinear, embedBits: weights.embedBits });
    const stream = tokenPrinter(pkg, promptIds, prompt, v.json ? undefined : (s) => process.stdout.write(s));
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

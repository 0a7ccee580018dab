/**
 * The incremental text stream: over real tokenizers (the default model's byte-level BPE, stories260K's
 * llama2.c pieces, a Llama-2 SentencePiece tokenizer.json) and sequences with multi-byte characters,
 * leading spaces and paragraph breaks, the streamed pieces concatenate to exactly the text decoding the
 * whole continuation gives, and a token late in a long generation decodes only a short window.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { decodeContinuation, TextStream } from '../models/tokenizer/text-stream.js';
import { TextTokenizer } from '../models/tokenizer/tokenizer.js';
import { rng } from '../shared/random.js';
import { FIXTURES } from './helpers/fixtures.js';
import { defaultModel, storiesModel } from './helpers/models.js';
import { haveFixtures } from './helpers/fixtures.js';

type Tok = { decode(ids: readonly number[]): string; encode(text: string, bos?: boolean): number[] };

async function tokenizers(): Promise<[string, Tok, number][]> {
  const out: [string, Tok, number][] = [['default model', (await defaultModel()).tokenizer(), 512]];
  if (haveFixtures) out.push(['stories260K', (await storiesModel()).tokenizer(), 512]);
  else process.stderr.write(`[splitllm tests] SKIPPED stories260K tokenizer: fixtures not found at ${FIXTURES}\n`);
  const llama = join(FIXTURES, 'onnx', 'ortgenai-tiny-random-llama-fp16', 'tokenizer.json');
  if (existsSync(llama)) out.push(['Llama-2 tokenizer.json', new TextTokenizer(JSON.parse(readFileSync(llama, 'utf8')) as Record<string, unknown>, { bosId: 1, eosId: 2 }), 32000]);
  else process.stderr.write(`[splitllm tests] SKIPPED Llama-2 tokenizer: ${llama} not found\n`);
  return out;
}

it('streamed pieces concatenate to the whole continuation, for real tokenizers, random ids and paragraph breaks', async () => {
  const texts = ['ROMEO:\nIs the day so young?', 'Once upon a time, über naïve café — 日本語 😀 ok.', '  two  spaces\tand tabs\n\nnew paragraph'];
  for (const [name, tok, vocab] of await tokenizers()) {
    const next = rng(7);
    const cases: { prompt: string; gen: number[]; breaks: number[] }[] = [];
    // real continuations (the tokenizer's own ids of a text), and random ids (any byte sequence)
    for (const t of texts) cases.push({ prompt: 'Say:', gen: tok.encode(t, false), breaks: [] });
    for (let i = 0; i < 6; i++) cases.push({ prompt: i % 2 ? '' : 'Hi', gen: Array.from({ length: 120 }, () => 3 + Math.floor(next() * (vocab - 3))), breaks: i > 3 ? [1, 2] : [] });
    for (const { prompt, gen, breaks } of cases) {
      const promptIds = prompt ? tok.encode(prompt, true) : [];
      let streamed = '';
      const s = new TextStream(tok, promptIds, prompt, (x) => (streamed += x), { echoPrompt: false, breakIds: breaks });
      for (const id of gen) s.push(id);
      const beforeFinish = streamed;
      const all = s.finish();
      expect(streamed, `${name}: ${JSON.stringify(prompt)} + ${gen.length} ids`).toBe(all);
      // what finish added is only what was held back (an incomplete character at the end)
      expect(all.startsWith(beforeFinish)).toBe(true);
      if (breaks.length === 0) expect(all).toBe(decodeContinuation(tok, promptIds, gen, prompt));
    }
  }
});

it('a token at position 2,000 decodes a window of a few ids, not the text so far', async () => {
  const tok = (await defaultModel()).tokenizer();
  let decoded = 0;
  const counting = { decode: (ids: readonly number[]) => ((decoded += ids.length), tok.decode(ids)) };
  const s = new TextStream(counting, tok.encode('ROMEO:', true), 'ROMEO:', () => undefined, { echoPrompt: false });
  const ids = tok.encode('Is the day so young? Ay, sad hours seem long. '.repeat(60), false).slice(0, 2000);
  for (const id of ids.slice(0, 1990)) s.push(id);
  decoded = 0;
  for (const id of ids.slice(1990)) s.push(id);
  // ten tokens: a few ids each (two decodes of the window), where decoding the whole text would be 20,000+
  expect(decoded).toBeLessThan(10 * 2 * 12);
});

import { beforeAll, expect, it } from 'vitest';
import { readLlama2cTokenizer, llama2cToTokenizerJson } from '../models/tokenizer/llama2c.js';
import { TextTokenizer } from '../models/tokenizer/tokenizer.js';
import { describeWithFixtures, STORIES_TOK } from './helpers/fixtures.js';
import { loadRefVocab, refEncode } from './helpers/llama2c-encode.js';

const STRINGS = [
  'Once upon a time, there was a little girl named Lily.',
  'hello world',
  'The cat sat on the mat.',
  '  leading spaces',
  'trailing spaces   ',
  'double  space inside',
  'a',
  ' ',
  'Tom and Sam were best friends. They liked to play with their toys!',
  '"Can I have it?" she asked. "No," said Mom.',
  'Numbers 1234567890 and symbols #$%^&*()_+-=[]{}|;:,.<>/?~`',
  'new\nlines\n\nand\ttabs',
  'Café au lait, naïve façade, résumé',
  'Grüße aus München — schön!',
  'Ελληνικά γράμματα',
  'Русский текст для проверки',
  '日本語のテキスト',
  '中文字符测试',
  '한국어 문장',
  'emoji 🙂🚀 and more 👩‍👩‍👧',
  'עברית ועוד',
  'العربية',
  'mixed ASCII and ünïcödé at the end ✓',
  'supercalifragilisticexpialidocious',
  "Lily's mom said, \"Lily, let's go to the park.\"",
  'the the the the the',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'ababababababababab abab',
  'One day, a big dog came. The dog was very happy and wagged its tail.',
  'x'.repeat(300),
  'Tab\tseparated\tvalues\tand a backslash \\ too',
  '<s> and </s> are plain text here',
  '\u0000 nul and \u007f del',
];

describeWithFixtures('llama2.c tokenizer → tokenizer.json', () => {
  let vocab: ReturnType<typeof readLlama2cTokenizer>;
  let tok: TextTokenizer;
  let ref: ReturnType<typeof loadRefVocab>;
  beforeAll(() => {
    vocab = readLlama2cTokenizer(STORIES_TOK);
    tok = new TextTokenizer(llama2cToTokenizerJson(vocab), { bosId: 1, eosId: 2 });
    ref = loadRefVocab(STORIES_TOK);
  });

  it('reads all 512 pieces', () => {
    expect(vocab.pieces.length).toBe(512);
    expect(tok.vocabSize).toBe(512);
  });

  it(`gives the same ids as llama2.c's encode on ${STRINGS.length} strings`, () => {
    expect(STRINGS.length).toBeGreaterThanOrEqual(30);
    for (const s of STRINGS) expect(tok.encode(s), JSON.stringify(s)).toEqual(refEncode(ref, s));
  });

  it('matches on every paragraph prefix of a story', () => {
    const story = "Once upon a time, in a big forest, there lived a little bunny named Ben. Ben loved to hop and jump. One day, he found a shiny red apple under a tree. \"Yum!\" said Ben.";
    for (let n = 1; n <= story.length; n += 7) expect(tok.encode(story.slice(0, n))).toEqual(refEncode(ref, story.slice(0, n)));
  });

  it('round-trips through decode', () => {
    for (const s of STRINGS) expect(tok.decode(tok.encode(s)), JSON.stringify(s)).toBe(s);
  });

  it('encodes the empty prompt as BOS alone', () => {
    expect(tok.encode('')).toEqual([1]);
    expect(tok.encode('', false)).toEqual([]);
  });
});

/**
 * An independent port of llama2.c's `encode` (run.c), used only to check the converted tokenizer.json:
 * dummy-prefix " " piece, one piece per UTF-8 code point with byte fallback (+3), then greedy merges of
 * the adjacent pair with the best-scoring concatenation, leftmost on ties.
 */
import { readFileSync } from 'node:fs';

export interface RefVocab {
  pieces: string[];
  scores: number[];
  lookup: Map<string, number>;
}

export function loadRefVocab(path: string): RefVocab {
  const b = readFileSync(path);
  let o = 4;
  const pieces: string[] = [];
  const scores: number[] = [];
  while (o < b.length) {
    scores.push(b.readFloatLE(o));
    const len = b.readInt32LE(o + 4);
    o += 8;
    pieces.push(b.subarray(o, o + len).toString('utf8'));
    o += len;
  }
  const lookup = new Map<string, number>();
  pieces.forEach((p, i) => {
    if (!lookup.has(p)) lookup.set(p, i);
  });
  return { pieces, scores, lookup };
}

export function refEncode(v: RefVocab, text: string, bos = true): number[] {
  const tokens: number[] = [];
  if (bos) tokens.push(1);
  if (text.length > 0) tokens.push(v.lookup.get(' ')!);
  for (const ch of text) {
    const id = v.lookup.get(ch);
    if (id !== undefined) tokens.push(id);
    else for (const byte of Buffer.from(ch, 'utf8')) tokens.push(byte + 3);
  }
  const start = bos ? 1 : 0;
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = start; i < tokens.length - 1; i++) {
      const merged = v.pieces[tokens[i]!]! + v.pieces[tokens[i + 1]!]!;
      const id = v.lookup.get(merged);
      if (id !== undefined && v.scores[id]! > bestScore) {
        bestScore = v.scores[id]!;
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  return tokens;
}

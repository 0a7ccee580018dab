/**
 * Perplexity under the project's protocol (../shared/fixtures/README.md): paragraphs split on blank
 * lines, stripped, empty ones dropped; each encoded with BOS; cut into windows of at most 256+1 ids
 * starting at 0, 256, 512, …; each window predicts ids 1..n-1 from its own prefix only;
 * ppl = exp(total NLL / predicted ids).
 */
import type { Pipeline } from '../runtime/pipeline.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';

export const PPL_WINDOW = 256;

export function paragraphs(text: string): string[] {
  return text
    .split(/\r?\n[ \t]*\r?\n/)
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
}

/** The id windows of the protocol for one text. */
export function pplWindows(tok: TextTokenizer, text: string, window = PPL_WINDOW): number[][] {
  const out: number[][] = [];
  for (const para of paragraphs(text)) {
    const ids = tok.encode(para, true);
    for (let s = 0; s + 1 < ids.length; s += window) out.push(ids.slice(s, s + window + 1));
  }
  return out;
}

/** Negative log-likelihood of ids[1..n) given logits rows [0..n-1). */
export function windowNll(logits: Float32Array, vocab: number, ids: readonly number[]): number {
  let nll = 0;
  for (let t = 0; t + 1 < ids.length; t++) {
    const off = t * vocab;
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) if (logits[off + v]! > max) max = logits[off + v]!;
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(logits[off + v]! - max);
    nll += max + Math.log(sum) - logits[off + ids[t + 1]!]!;
  }
  return nll;
}

export interface PplResult {
  ppl: number;
  tokens: number;
  nll: number;
  windows: number;
}

/**
 * Runs the protocol with `logitsOf(inputs)` returning logits [n-1, vocab] for a window's inputs (its
 * ids but the last, whose logits predict nothing), computed with no state carried over from other
 * windows. A window of 256+1 ids therefore needs 256 positions, not 257.
 */
export async function perplexity(
  windows: number[][],
  vocab: number,
  logitsOf: (ids: number[]) => Promise<Float32Array>,
  onProgress?: (done: number, total: number) => void,
): Promise<PplResult> {
  let nll = 0;
  let tokens = 0;
  for (let w = 0; w < windows.length; w++) {
    const ids = windows[w]!;
    nll += windowNll(await logitsOf(ids.slice(0, -1)), vocab, ids);
    tokens += ids.length - 1;
    onProgress?.(w + 1, windows.length);
  }
  return { ppl: Math.exp(nll / tokens), tokens, nll, windows: windows.length };
}

/** The protocol through a pipeline: each window runs from an empty cache, which it leaves unchanged. */
export function pipelinePerplexity(p: Pipeline, windows: number[][], onProgress?: (done: number, total: number) => void): Promise<PplResult> {
  return perplexity(windows, p.pkg.config.vocabSize, async (ids) => (await p.forward(ids, { keepCache: false })).data, onProgress);
}

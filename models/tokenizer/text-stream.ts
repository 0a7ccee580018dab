/**
 * Generated text as it streams: the continuation of a prompt decoded so that spacing and multi-byte
 * characters come out right, and stop strings matched on that text across token boundaries.
 */

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
 * Decoding is incremental — each token decodes a window of a few ids, not the whole text — so a token
 * costs the same at position 2,000 as at 20: the window starts a few ids back (the prompt's last ones for
 * the first tokens, so that spacing is what decoding the whole text gives) and moves on once its text is
 * written. `finish` decodes the whole text once and writes whatever is still held back.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private printed = '';

  private readonly breakIds: readonly number[];
  private readonly echoPrompt: boolean;
  /** the paragraph being decoded: context ids (the prompt's tail, for the first one) and its own */
  private seq: number[];
  /** window [prefix, read) is the text written last; [prefix, end) the text with the new ids */
  private prefix: number;
  private read: number;

  constructor(
    private readonly tok: { decode(ids: readonly number[]): string },
    private readonly promptIds: number[],
    private readonly prompt: string,
    private readonly write?: (s: string) => void,
    opts: {
      /** ids that end a paragraph (generation that runs on past EOS): written as a blank line */
      breakIds?: readonly number[];
      /** write the prompt before the first token (the CLI does; an API reply is the continuation only) */
      echoPrompt?: boolean;
    } = {},
  ) {
    this.breakIds = opts.breakIds ?? [];
    this.echoPrompt = opts.echoPrompt ?? true;
    // as decodeContinuation: the first paragraph is decoded after the prompt, when there is one
    this.seq = prompt ? promptIds.slice(-CONTEXT_IDS) : [];
    this.prefix = 0;
    this.read = this.seq.length;
  }

  private text(): string {
    const parts: number[][] = [[]];
    for (const id of this.ids) {
      if (this.breakIds.includes(id)) parts.push([]);
      else parts[parts.length - 1]!.push(id);
    }
    return [decodeContinuation(this.tok, this.promptIds, parts[0]!, this.prompt), ...parts.slice(1).map((p) => this.tok.decode(p))].join('\n\n');
  }

  private emit(s: string): void {
    if (!s) return;
    this.printed += s;
    this.write?.(s);
  }

  /** The text of the window's new ids: what decoding [prefix, end) adds to [prefix, read). */
  private pending(): string | undefined {
    const before = this.tok.decode(this.seq.slice(this.prefix, this.read));
    const now = this.tok.decode(this.seq.slice(this.prefix));
    return now.length > before.length && now.startsWith(before) ? now.slice(before.length) : undefined;
  }

  push(id: number): void {
    if (this.ids.length === 0 && this.prompt && this.echoPrompt) this.write?.(this.prompt);
    this.ids.push(id);
    if (this.breakIds.includes(id)) {
      // the paragraph ends: what it still held back, then the blank line; the next starts without context
      this.emit(this.pending() ?? '');
      this.emit('\n\n');
      this.seq = [];
      this.prefix = this.read = 0;
      return;
    }
    this.seq.push(id);
    const add = this.pending();
    // a character still incomplete (U+FFFD at the end) waits for the ids that finish it
    if (add === undefined || add.endsWith('\uFFFD')) return;
    this.emit(add);
    this.prefix = this.read;
    this.read = this.seq.length;
  }

  /** Writes what is left and returns the whole continuation. */
  finish(): string {
    const text = this.text();
    if (this.ids.length === 0 && this.prompt && this.echoPrompt) this.write?.(this.prompt);
    if (text.length > this.printed.length && text.startsWith(this.printed)) this.write?.(text.slice(this.printed.length));
    this.printed = text;
    return text;
  }
}

/** Ids of context a streaming decode window starts with (the prompt's last ones): enough for spacing and merges at the boundary. */
const CONTEXT_IDS = 4;

/**
 * Stop strings over streamed text (the OpenAI API's `stop`): text is released only once no stop string
 * can begin in it, and the first stop string found ends the text just before it, even when it spans
 * tokens.
 */
export class StopStrings {
  private text = '';
  private released = 0;
  /** set once a stop string was found: the text ends before it */
  stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  /** Takes more text; returns what may be released now (nothing more once stopped). */
  push(delta: string): string {
    if (this.stopped) return '';
    this.text += delta;
    let cut = -1;
    for (const s of this.stops) {
      // a stop string may start in the part held back, up to its length before the new text
      const at = this.text.indexOf(s, Math.max(0, this.released - s.length));
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.text = this.text.slice(0, cut);
      return this.release(cut);
    }
    // hold back the longest tail that could still become a stop string
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, this.text.length); k > hold; k--) {
        if (this.text.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return this.release(this.text.length - hold);
  }

  /** The rest of the text at the end of generation. */
  flush(): string {
    return this.release(this.text.length);
  }

  /** All text kept (cut at the stop string when one was found). */
  get all(): string {
    return this.text;
  }

  private release(to: number): string {
    if (to <= this.released) return '';
    const out = this.text.slice(this.released, to);
    this.released = to;
    return out;
  }
}

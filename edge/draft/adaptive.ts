/**
 * How many tokens to draft next, from what the session has seen: the acceptance rate α (each draft stands
 * with probability α given the ones before it stood: the geometric model, fitted by counting), the time of
 * a plain step t₀ (the round trip, the link's latency and one position of compute and transfer) and the
 * extra time of each drafted position c (its front run, its bytes over the link, its share of the cloud's
 * run), both measured on this session's own steps. A draft of k gives 1 + α + … + α^k tokens per round in
 * t₀ + k·c; k maximizes that rate, and 0 (a plain step) wins when acceptance collapses or drafts are
 * dear — then a probe of one draft every `probeEvery` steps keeps α current. Slow links (large t₀ against c)
 * draft longer; a low α drafts shorter or not at all.
 */
export class DraftLength {
  /** drafts that stood and rejections seen (decayed), the counts α is fitted from */
  private stood = 2;
  private rejected = 1;
  private plainMs: number | undefined;
  private perDraftMs: number | undefined;
  private sincePlain = 0;

  constructor(
    private readonly maxDraft: number,
    private readonly probeEvery = 8,
    private readonly decay = 0.95,
  ) {}

  get acceptance(): number {
    return this.stood / (this.stood + this.rejected);
  }

  /** expected tokens of a round that drafts k (the accepted drafts and the token after them) */
  static expectedTokens(alpha: number, k: number): number {
    return alpha >= 1 ? k + 1 : (1 - alpha ** (k + 1)) / (1 - alpha);
  }

  /** the draft length for the next step (0: a plain step) */
  next(): number {
    // without both timings, try the longest draft once, then a plain step once
    if (this.perDraftMs === undefined) return this.maxDraft;
    if (this.plainMs === undefined) return 0;
    const alpha = this.acceptance;
    let best = 0;
    let bestRate = 1 / this.plainMs;
    for (let k = 1; k <= this.maxDraft; k++) {
      const rate = DraftLength.expectedTokens(alpha, k) / (this.plainMs + k * this.perDraftMs);
      if (rate > bestRate) {
        best = k;
        bestRate = rate;
      }
    }
    if (best === 0 && ++this.sincePlain >= this.probeEvery) {
      this.sincePlain = 0;
      return 1;
    }
    return best;
  }

  /** a round that drafted `drafted` tokens (0: a plain step), of which `accepted` stood, took `ms` */
  observe(drafted: number, accepted: number, ms: number): void {
    const ema = (old: number | undefined, v: number) => (old === undefined ? v : 0.8 * old + 0.2 * v);
    if (drafted === 0) {
      this.plainMs = ema(this.plainMs, ms);
      return;
    }
    this.stood = this.stood * this.decay + accepted;
    this.rejected = this.rejected * this.decay + (accepted < drafted ? 1 : 0);
    const base = this.plainMs ?? ms / (1 + drafted / 4);
    this.perDraftMs = ema(this.perDraftMs, Math.max(0.01, (ms - base) / drafted));
  }
}

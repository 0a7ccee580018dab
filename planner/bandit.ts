/**
 * The online strategy: a bandit over feasible plans that learns from the per-token latency it observes
 * and nothing else. Thompson sampling on log-latency (so noise is relative, as on real links): each plan
 * keeps the mean of its observed log-latencies; a plan is drawn from N(mean, σ²/n) with σ pooled from all
 * observations, and the lowest draw runs. Every plan is tried once first. In a live session a change of
 * plan is a re-split, which the runtime performs by streaming the KV of the layers that move.
 */
import { rng } from '../shared/random.js';

export class LatencyBandit {
  private readonly n: number[];
  private readonly sum: number[];
  private readonly sumSq: number[];
  private readonly random: () => number;

  /** `plans`: the arms (feasible plans, or anything a caller maps an index back to) */
  constructor(
    readonly plans: readonly unknown[],
    seed = 1,
  ) {
    if (plans.length === 0) throw new Error('a bandit needs at least one feasible plan');
    this.n = plans.map(() => 0);
    this.sum = plans.map(() => 0);
    this.sumSq = plans.map(() => 0);
    this.random = rng(seed);
  }

  private gauss(): number {
    return Math.sqrt(-2 * Math.log(Math.max(this.random(), 1e-12))) * Math.cos(2 * Math.PI * this.random());
  }

  /** pooled standard deviation of log-latency (0.3 until there is enough data) */
  private sigma(): number {
    let n = 0;
    let ss = 0;
    for (let i = 0; i < this.n.length; i++) {
      if (this.n[i]! < 2) continue;
      const m = this.sum[i]! / this.n[i]!;
      ss += this.sumSq[i]! - this.n[i]! * m * m;
      n += this.n[i]! - 1;
    }
    return n >= 3 ? Math.max(0.02, Math.sqrt(ss / n)) : 0.3;
  }

  /** The index of the plan to run next. */
  choose(): number {
    const untried = this.n.findIndex((v) => v === 0);
    if (untried >= 0) return untried;
    const s = this.sigma();
    let best = 0;
    let bestDraw = Infinity;
    for (let i = 0; i < this.n.length; i++) {
      const draw = this.sum[i]! / this.n[i]! + (s / Math.sqrt(this.n[i]!)) * this.gauss();
      if (draw < bestDraw) {
        bestDraw = draw;
        best = i;
      }
    }
    return best;
  }

  /** Feedback: the mean per-token latency observed while plan `i` ran. */
  observe(i: number, latencyMs: number): void {
    const l = Math.log(Math.max(latencyMs, 1e-6));
    this.n[i]!++;
    this.sum[i]! += l;
    this.sumSq[i]! += l * l;
  }

  /** The plan the bandit currently believes best (most played). */
  best(): number {
    let b = 0;
    for (let i = 1; i < this.n.length; i++) if (this.n[i]! > this.n[b]!) b = i;
    return b;
  }
}

/**
 * The bandit in a live session: the arms are split points, a choice runs for `window` tokens, and the
 * mean per-token latency of that window is the feedback. The edge agent calls `step` after every token
 * and re-splits (streaming KV) when it returns another split.
 */
export class SplitBandit {
  private readonly bandit: LatencyBandit;
  private arm = 0;
  private sum = 0;
  private count = 0;
  /** arm chosen for each window, in order */
  readonly history: number[] = [];

  constructor(
    readonly splits: readonly number[],
    readonly window = 8,
    seed = 1,
  ) {
    this.bandit = new LatencyBandit(splits, seed);
    this.arm = this.bandit.choose();
    this.history.push(this.splits[this.arm]!);
  }

  /** The split to start with. */
  get first(): number {
    return this.splits[this.arm]!;
  }

  /** Feedback for one token; returns the split the next window should run at. */
  step(latencyMs: number): number {
    this.sum += latencyMs;
    if (++this.count < this.window) return this.splits[this.arm]!;
    this.bandit.observe(this.arm, this.sum / this.count);
    this.sum = 0;
    this.count = 0;
    this.arm = this.bandit.choose();
    this.history.push(this.splits[this.arm]!);
    return this.splits[this.arm]!;
  }

  /** The split the bandit believes best so far. */
  best(): number {
    return this.splits[this.bandit.best()]!;
  }
}

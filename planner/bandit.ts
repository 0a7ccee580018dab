/**
 * The online strategy: a bandit over feasible plans that learns from the per-token latency it observes
 * and nothing else. Thompson sampling on log-latency (so noise is relative, as on real links): each plan
 * keeps the mean of its observed log-latencies; a plan is drawn from N(mean, σ²/n) with σ pooled from all
 * observations, and the lowest draw runs. Every plan is tried once first. In a live session a change of
 * plan is a re-split, which the runtime performs by streaming the KV of the layers that move.
 */
import { rng } from '../shared/random.js';
import type { RankedPlan } from './types.js';

export class LatencyBandit {
  private readonly n: number[];
  private readonly sum: number[];
  private readonly sumSq: number[];
  private readonly random: () => number;

  constructor(
    readonly plans: RankedPlan[],
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

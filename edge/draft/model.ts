/**
 * A draft model (`--speculate model:PATH[@BITS]`): a small model package with the target's tokenizer, run
 * whole on the edge (embedding to head) at its own precision, drafts the next tokens one at a time.
 *
 * Each generation opens its own draft session: the draft model's KV cache holds the longest prefix of
 * the session's tokens it has seen, so after a verdict only the rejected drafts are cut (a length change)
 * and the accepted ones and the cloud's next token are fed. At temperature 0 a draft is the draft model's
 * argmax (q one-hot, nothing else is sent); when sampling, each draft is drawn from the draft model's
 * distribution under the session's settings, reduced to its most likely tokens with integer weights
 * (`draft.q`): the cloud's acceptance test uses that same q, so the output is the target's distribution.
 */
import { existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { DRAFT_Q_SCALE } from '../../shared/protocol/index.js';
import { linearFor } from '../../models/onnx/linear.js';
import type { BuiltSegment } from '../../models/onnx/segment.js';
import { cachedSegment, defaultCacheEvents } from '../../models/runtime/segment-cache.js';
import { openModel, type ModelPackage } from '../../models/package.js';
import { argmax, type Sampler } from '../../models/runtime/sampler.js';
import { SegmentRuntime, type SharedSession } from '../../models/runtime/segment-runtime.js';
import { drawSparse, sparseDistribution, type SparseDistribution } from '../../models/runtime/verify.js';
import type { DraftProposer, Proposal, ProposerContext, ProposerDefinition } from './proposer.js';

/** Tokens of the draft model's distribution sent with a sampled draft (the rest of its mass is dropped). */
export const DRAFT_SUPPORT = 16;

export class DraftModel implements DraftProposer {
  private users = 0;
  private closed = false;

  private constructor(
    readonly name: string,
    readonly pkg: ModelPackage,
    private readonly seg: BuiltSegment,
    private readonly shared: SharedSession,
  ) {}

  /** Opens the draft package at `path` for `target` (same vocabulary and tokenizer) at `bits` (32: float). */
  static async create(path: string, target: ModelPackage, bits = 32, threads?: number): Promise<DraftModel> {
    if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `draft model ${path} does not exist: pass a draft package, e.g. --speculate model:models/draft`);
    return DraftModel.fromPackage(await openModel(path), target, { bits, threads, name: `model:${path}${bits < 32 ? `@${bits}` : ''}` });
  }

  static async fromPackage(pkg: ModelPackage, target: ModelPackage, o: { bits?: number; threads?: number; name?: string } = {}): Promise<DraftModel> {
    const c = pkg.config;
    const t = target.config;
    const name = o.name ?? `model:${pkg.manifest.name}`;
    if (c.vocabSize !== t.vocabSize) {
      throw new SplitLLMError('E_USAGE', `${name}: the draft model has a vocabulary of ${c.vocabSize}, the model ${t.vocabSize}: a draft model must share the model's tokenizer`);
    }
    if (pkg.tokenizerJson && target.tokenizerJson && JSON.stringify(pkg.tokenizerJson['model']) !== JSON.stringify(target.tokenizerJson['model'])) {
      throw new SplitLLMError('E_USAGE', `${name}: the draft model has another tokenizer than the model: train the draft with the model's tokenizer`);
    }
    const bits = o.bits ?? 32;
    const seg = cachedSegment(pkg, 0, c.nLayers, { embed: true, head: true, ...(bits < 32 ? { linearFor: () => linearFor(bits, 32) } : {}) }, defaultCacheEvents);
    const shared = await SegmentRuntime.openSession(seg, { threads: o.threads });
    return new DraftModel(name, pkg, seg, shared);
  }

  /** Not used: a generation drafts through its own session (`open`). */
  propose(): Proposal {
    throw new SplitLLMError('E_RUNTIME', 'a draft model drafts through a session of its own (open)');
  }

  async open(): Promise<DraftProposer> {
    if (this.closed) throw new SplitLLMError('E_RUNTIME', 'the draft model was released');
    this.users++;
    const rt = SegmentRuntime.withSession(this.pkg.config, this.seg, this.shared, () => void this.leave());
    return new DraftSession(this.name, rt);
  }

  private async leave(): Promise<void> {
    this.users--;
    if (this.closed && this.users === 0) await this.shared.session.release();
  }

  async release(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.users === 0) await this.shared.session.release();
  }
}

/** One generation's drafting: the draft model's cache follows the session's tokens. */
class DraftSession implements DraftProposer {
  /** the tokens in the draft model's cache, in order */
  private readonly held: number[] = [];

  constructor(
    readonly name: string,
    private readonly rt: SegmentRuntime,
  ) {}

  async propose(history: readonly number[], k: number, sampler: Sampler): Promise<Proposal> {
    const c = this.rt.config;
    const room = Math.min(k, c.maxSeq - history.length);
    if (room <= 0 || history.length === 0) return { tokens: [] };
    // keep the longest prefix the cache shares with the history (rejected drafts go), but feed the last token again at least
    let keep = 0;
    while (keep < this.held.length && keep < history.length - 1 && this.held[keep] === history[keep]) keep++;
    this.rt.truncate(keep);
    this.held.length = keep;
    const fresh = history.slice(keep);
    let logits = (await this.rt.run(fresh, fresh.length)).data;
    this.held.push(...fresh);
    const V = c.vocabSize;
    const tokens: number[] = [];
    const q: SparseDistribution[] = [];
    for (let i = 0; i < room; i++) {
      const row = logits.length - V;
      let t: number;
      if (sampler.greedy) t = argmax(logits, row, V);
      else {
        const d = sparseDistribution(sampler.probabilities(logits, row, V), DRAFT_SUPPORT, DRAFT_Q_SCALE);
        t = drawSparse(d, sampler.uniform(), DRAFT_Q_SCALE);
        q.push(d);
      }
      tokens.push(t);
      if (i === room - 1) break;
      logits = (await this.rt.run([t], 1)).data;
      this.held.push(t);
    }
    return sampler.greedy ? { tokens } : { tokens, q };
  }

  async release(): Promise<void> {
    await this.rt.release();
  }
}

export const modelProposer: ProposerDefinition = {
  name: 'model',
  summary: 'a small draft model package with the same tokenizer, run whole on the edge (model:PATH, model:PATH@4 for 4-bit weights)',
  async create(arg: string | undefined, ctx?: ProposerContext) {
    if (!arg) throw new SplitLLMError('E_USAGE', '--speculate model needs the draft package: --speculate model:PATH (e.g. model:models/draft)');
    if (!ctx) throw new SplitLLMError('E_USAGE', '--speculate model needs the model: the draft must share its tokenizer');
    const at = arg.lastIndexOf('@');
    const given = at > 0 ? arg.slice(0, at) : arg;
    const path = ctx.baseDir && !isAbsolute(given) ? join(ctx.baseDir, given) : given;
    const bits = at > 0 ? Number(arg.slice(at + 1)) : 32;
    if (![2, 3, 4, 8, 16, 32].includes(bits)) throw new SplitLLMError('E_USAGE', `--speculate model:${arg}: the draft's weight bits must be one of 2, 3, 4, 8, 16, 32`);
    return DraftModel.create(path, ctx.pkg, bits, ctx.threads);
  },
};

/**
 * The edge agent's token loop: tokenizes locally, runs the front segment [0, split), encodes the hidden
 * state with the plan's codec, streams it to the cloud and receives token ids. The prompt's text is not
 * sent; its hidden states are, and a cloud holding the weights recovers the prompt from them (audit/privacy.ts
 * measures it). The connection and its resume policy live in connection.ts, the memory policy in
 * memory-policy.ts, the re-split exchange in resplit.ts.
 */
import { checkSplit, SplitLLMError } from '../shared/errors.js';
import { MAX_DRAFT, newSessionId, PROTOCOL_VERSION, type Ready, type SamplingParams, type TokenMsg, type Verified } from '../shared/protocol/index.js';
import type { DraftProposer } from './draft/proposer.js';
import { DraftLength } from './draft/adaptive.js';
import { Sampler } from '../models/runtime/sampler.js';
import type { SparseDistribution } from '../models/runtime/verify.js';
import type { Connector } from '../shared/transport/channel.js';
import type { ModelConfig } from '../models/manifest.js';
import type { ModelPackage } from '../models/package.js';
import type { TextTokenizer } from '../models/tokenizer/tokenizer.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { codecAtSplit, createCodec, type CodecEnv } from '../quantization/activations/registry.js';
import { wsConnector } from './connect-node.js';
import { CloudConnection, InterruptedWait, SessionLostError, type Deadlines, type ResumePolicy } from './connection.js';
import { edgeBytes, splitBeforeStep, splitWithinBudget, type FrontWeights } from './memory-policy.js';
import type { QuantizedBytes } from '../quantization/weights/memory.js';
import { resplitFront } from './resplit.js';

/**
 * Positions per prefill chunk when neither the caller nor the plan says: small enough to overlap, large
 * enough that a chunk's fixed costs (a run on each side, a frame) stay small. Measured (bench/ttft, default
 * model, 200-token prompt, 10 Mbit/s, 40 ms RTT): one message 127–139 ms fp16 / 90–93 ts-tabq, chunks of
 * 64 115 / 71–78, chunks of 32 109–112 / 68–71; on loopback chunks of 32 cost 2–3 ms more than one message.
 */
export const DEFAULT_PREFILL_CHUNK = 32;

/**
 * What the token loop needs of the model: its shape, the weights' hash the hello carries and the
 * tokenizer. A ModelPackage is one; the browser edge makes one from what the cloud serves (its front
 * segments come through `fronts`).
 */
export interface EdgeModel {
  readonly config: ModelConfig;
  readonly hash: string;
  tokenizer(): TextTokenizer;
}

/** One round of the token loop as it happened: the prompt's (`prefill`) or a decode step's. */
export interface StepTiming {
  prefill: boolean;
  /** tokens it produced (more than one when drafts stood) */
  tokens: number;
  edgeMs: number;
  networkMs: number;
  cloudMs: number;
  /** bytes it sent up, frames included */
  bytesUp: number;
}

export interface EdgeOptions {
  url: string;
  split: number;
  codec?: string;
  /** where a calibrated codec (`ts-tabq:cal=K`) finds its context: the model's calibration */
  codecEnv?: CodecEnv;
  prompt: string;
  maxTokens: number;
  sampling?: SamplingParams;
  /** token ids that end generation (default: the cloud's, EOS and BOS) */
  stopIds?: number[];
  token?: string;
  /** PEM certificates to trust for a wss:// cloud (self-signed or a private CA) */
  ca?: string | Buffer;
  linearFor?: (layer: number) => LinearEmitter;
  /** the front's token embedding at 8 or 4 bits (default 32: float; models/onnx/embedding.ts) */
  embedBits?: number;
  /** onnxruntime intra-op threads of the front segment built for this run (default: $SPLITLLM_THREADS, else the usable cores) */
  threads?: number;
  onToken?: (id: number) => void;
  /** told after every round (the prompt's and each step's), for live statistics */
  onStep?: (s: StepTiming) => void;
  /** move the split after this many generated tokens (KV of the moving layers is streamed) */
  resplits?: { afterTokens: number; split: number }[];
  /** codec of streamed KV (fp32: lossless) */
  kvCodec?: string;
  /**
   * memory budget of the edge in bytes (front weights + KV cache, as quantization/weights/memory.ts
   * accounts them): before the KV would outgrow it, the agent moves the split down on its own
   */
  edgeMemory?: number;
  /** KV bytes other sessions of this process hold now (the edge service): the budget is shared with them */
  othersHold?: () => number;
  /** told the KV bytes this session holds after each step */
  onHold?: (bytes: number) => void;
  /** weight bits of the front layers, for the memory accounting (default 32) */
  frontBits?: number;
  /** the front's weight strategy's accounting of a quantized linear, for the memory accounting (default: blockwise RTN) */
  quantizedBytes?: QuantizedBytes;
  /** weight bits the cloud runs the back layers at (default 32) and the quantization block */
  backBits?: number;
  /** the LM head's bits on the cloud (default 32) */
  headBits?: number;
  blockSize?: number;
  /**
   * positions per prefill chunk (default DEFAULT_PREFILL_CHUNK; the plan's, chosen by the planner's cost
   * model): the prompt leaves in chunks as the front segment produces them, each encoded by the codec on
   * its own, and the cloud runs each as it arrives, so edge compute, transfer and cloud compute overlap
   */
  prefillChunk?: number;
  /**
   * Speculative decoding: `proposer` drafts up to `maxDraft` tokens per step, the cloud verifies them in one
   * pass (docs/PROTOCOL.md, `draft`); the output is the one without speculation (exactly at temperature 0,
   * in distribution when sampling).
   */
  speculate?: { proposer: DraftProposer; maxDraft: number; /** a fixed draft length instead of the adaptive one (benches, tests) */ fixed?: boolean };
  /** reconnect and resume the session when the connection drops (default true) */
  resume?: boolean;
  /** how long one resume keeps retrying a cloud that does not answer (default 5 s) */
  retryWindowMs?: number;
  /** how long each wait for the cloud may take (connection.ts `Deadlines`; defaults DEFAULT_DEADLINES) */
  deadlines?: Deadlines;
  /**
   * when a resume reaches a cloud that no longer holds the session, rebuild it there by replaying the
   * prompt and the tokens so far through the front segment as one prefill (default true; greedy output
   * is unchanged; at most 3 per run)
   */
  failover?: boolean;
  /** opens the channel to the cloud (default: a WebSocket to `url` with `token`); called again for each resume */
  connect?: Connector;
  /** the session's id (default: 128 random bits, base64url); it stays the same across resumes and failovers */
  sessionId?: string;
  /**
   * called after every generated token with that token's round (edge + network + cloud, ms); a split
   * it returns other than the current one is moved to before the next step (the online planner)
   */
  adapt?: (info: { token: number; latencyMs: number; split: number }) => number | undefined;
  /** stops generation (Ctrl-C, a client gone), also in the middle of a wait for the cloud: the result holds what was generated, `interrupted` set */
  signal?: AbortSignal;
  /** the prompt's ids (BOS first) when the caller has tokenized it (e.g. truncated); default: `prompt` encoded */
  promptIds?: number[];
  /**
   * front segments [0, K) with an empty cache, e.g. runtimes over shared sessions (the edge service);
   * default: built for this run from `linearFor` and released after it
   */
  fronts?: FrontSource;
  /** called after each re-split with the new split and the KV bytes moved */
  onResplit?: (info: { from: number; to: number; bytes: number; atToken: number }) => void;
}

/** Gives a front segment [0, split) with an empty KV cache; the run releases it when done with it. */
export type FrontSource = (split: number) => Promise<SegmentRuntime>;

/** Why generation ended: a stop token (or the cloud's limit), the token budget, or the caller's signal. */
export type FinishReason = 'stop' | 'length' | 'interrupted';

export interface EdgeStats {
  tokens: number;
  seconds: number;
  tokensPerSec: number;
  bytesUp: number;
  bytesDown: number;
  bytesUpPerToken: number;
  bytesDownPerToken: number;
  /** mean per-token milliseconds */
  edgeMs: number;
  networkMs: number;
  cloudMs: number;
  /** the prompt's round: positions sent and milliseconds from start to the first token (connect included) */
  prefill: { tokens: number; firstTokenMs: number };
  /** decode steps only (prefill excluded), means per step */
  decode: {
    steps: number;
    edgeMs: number;
    networkMs: number;
    cloudMs: number;
    /** codec payload bytes of one position's hidden state */
    payloadBytes: number;
    /** bytes sent up per step, framing included */
    wireBytes: number;
  };
  /** largest edge memory (front weights + KV, accounted) during the run */
  peakEdgeBytes: number;
  resplits: { from: number; to: number; bytes: number; atToken: number }[];
  /** times the connection dropped and the session was resumed */
  resumes: number;
  /** times the session was rebuilt on a cloud that had lost it, and the positions replayed for that */
  failovers: number;
  replayedPositions: number;
  /** each failover: tokens generated before it, positions replayed, and ms of that round (loss detected, reconnect, replay and the owed token) */
  failoverEvents: { atToken: number; replayed: number; ms: number }[];
  /** generation was stopped by the caller's signal before it ended */
  interrupted: boolean;
  finish: FinishReason;
  /** the split the session started at (the memory policy may start below the one asked for) and ended at */
  split: { start: number; end: number };
  /** with speculation: draft steps, tokens drafted and accepted, tokens per round trip after the prompt */
  speculation?: { proposer: string; draftSteps: number; drafted: number; accepted: number; acceptance: number; tokensPerRound: number };
}

export async function runEdge(pkg: ModelPackage | EdgeModel, o: EdgeOptions): Promise<{ tokens: number[]; stats: EdgeStats }> {
  const c = pkg.config;
  checkSplit(o.split, c.nLayers);
  const kvCodec = createCodec(o.kvCodec ?? 'fp32');
  const ids = o.promptIds ?? pkg.tokenizer().encode(o.prompt, true);
  if (ids.length + o.maxTokens > c.maxSeq) {
    throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `prompt (${ids.length} tokens) plus --max-tokens ${o.maxTokens} passes the model's maximum sequence of ${c.maxSeq}: lower --max-tokens`);
  }
  // the memory policy's view of the front: the package's stored embedding type (the browser edge's
  // fronts come float32 from the server), the front's precisions and strategy
  const shape = 'weights' in pkg ? pkg.memoryShape : c;
  const fw: FrontWeights = { bits: o.frontBits ?? 32, blockSize: o.blockSize, embedBits: o.embedBits, quantized: o.quantizedBytes };
  // the memory policy at the start: the prompt and its first answer must fit
  // what this session may take of the budget: the rest is the KV other sessions hold
  const budget = (): number | undefined => (o.edgeMemory === undefined ? undefined : o.edgeMemory - (o.othersHold?.() ?? 0));
  const atStart = budget();
  let split = atStart === undefined ? o.split : splitWithinBudget(shape, fw, atStart, ids.length + 1, o.split);
  const startSplit = split;
  let codec = codecAtSplit(o.codec ?? 'fp32', split, o.codecEnv);
  const own = 'weights' in pkg ? pkg : undefined;
  const fronts: FrontSource | undefined = o.fronts ?? (own && ((k) => SegmentRuntime.create(own, 0, k, { embed: true, head: false, linearFor: o.linearFor, embedBits: o.embedBits, threads: o.threads })));
  if (!fronts) throw new SplitLLMError('E_USAGE', 'a model without its weights here (the browser edge) runs its front segments through `fronts`');
  let front = await fronts(split);
  let finish: FinishReason = 'length';
  const resplits = [...(o.resplits ?? [])].sort((a, b) => a.afterTokens - b.afterTokens);
  const moves: EdgeStats['resplits'] = [];
  let peak = 0;
  let link: CloudConnection;
  const connect = o.connect ?? wsConnector(o.url, o.token, { ca: o.ca, handshakeTimeoutMs: o.deadlines?.connectMs });
  const policy: ResumePolicy = { ...o.deadlines, resume: o.resume, retryWindowMs: o.retryWindowMs, signal: o.signal };
  try {
    link = await CloudConnection.open(connect, policy, o.sessionId);
  } catch (e) {
    await front.release();
    throw e;
  }
  const out: number[] = [];
  let failovers = 0;
  let replayed = 0;
  const failoverEvents: EdgeStats['failoverEvents'] = [];
  /** a failover of the round in flight, its ms filled in when the owed token came */
  let pendingFailover: EdgeStats['failoverEvents'][number] | undefined;
  // bytes of the links before a failover
  let earlierIn = 0;
  let earlierOut = 0;
  let earlierResumes = 0;
  let edgeMs = 0;
  let cloudMs = 0;
  let roundMs = 0;
  const dec = { steps: 0, edgeMs: 0, roundMs: 0, cloudMs: 0, payloadBytes: 0, wireBytes: 0 };
  const spec = o.speculate;
  const specStats = { draftSteps: 0, drafted: 0, accepted: 0 };
  const draftLength = spec && !spec.fixed ? new DraftLength(Math.min(spec.maxDraft, MAX_DRAFT)) : undefined;
  // drafts are drawn with the session's settings from a stream of their own (the cloud's decides acceptance)
  const draftSampler = new Sampler({ ...o.sampling, seed: (o.sampling?.seed ?? 0x5eed) ^ 0x9e3779b9 });
  // a proposer with state per generation (a draft model's cache) opens its own for this one
  let drafter: DraftProposer | undefined;
  let firstTokenMs = 0;
  const t0 = performance.now();
  try {
    drafter = spec && !spec.proposer.draftWithFront ? ((await spec.proposer.open?.()) ?? spec.proposer) : undefined;
    /**
     * Sends the hello and returns what awaits its ready: the prompt's prefill goes right behind the hello
     * (the cloud handles one message at a time, so it sees them in order), and the front prefill runs
     * while the hello is on its round trip. A refused hello is answered with an error before any token.
     */
    const start = (maxTokens: number): ((position: number) => Promise<void>) => {
      // the edge draws the resume secret: a link that drops before the ready comes can still be resumed
      link.secret = newSessionId();
      link.send({ type: 'hello', version: PROTOCOL_VERSION, modelHash: pkg.hash, split, codec: codec.spec, maxTokens, sampling: o.sampling, stopIds: o.stopIds, backBits: o.backBits, headBits: o.headBits, blockSize: o.blockSize, resumeSecret: link.secret });
      const on = link;
      return (position) => on.awaitReady(position, (ready) => confirm(on, ready));
    };
    const confirm = (on: CloudConnection, ready: Ready) => {
      if (ready.split !== split || ready.length !== 0) throw new SplitLLMError('E_PROTOCOL', `the cloud answered hello with split ${ready.split} and ${ready.length} positions, expected split ${split} and 0`);
      if (ready.session !== on.session) throw new SplitLLMError('E_PROTOCOL', `the cloud opened session ${ready.session.slice(0, 8)}… instead of the edge's ${on.session.slice(0, 8)}…: is it a splitllm cloud of this version?`);
      if (ready.resumeSecret !== undefined) on.secret = ready.resumeSecret;
    };
    /** The session is gone where the link now leads: rebuild it there from what the edge holds, and await the token it owed. */
    const failover = async (lost: unknown): Promise<TokenMsg> => {
      if (!(lost instanceof SessionLostError) || o.failover === false || failovers >= 3) throw lost;
      failovers++;
      const fed = [...ids, ...out];
      front.reset();
      const h = await front.run(fed, fed.length);
      replayed += fed.length;
      pendingFailover = { atToken: out.length, replayed: fed.length, ms: 0 };
      earlierIn += link.bytesIn;
      earlierOut += link.bytesOut;
      earlierResumes += link.resumes;
      link.close();
      // the same id: a balancer routes it where the resume went, to the replica now serving it
      link = await CloudConnection.open(connect, policy, link.session, true);
      const ready = start(o.maxTokens - out.length);
      link.sendKept({ type: 'prefill', tokens: fed.length }, codec.encode(h.data, fed.length, c.dim), 0);
      await ready(front.length);
      return link.awaitToken(front.length);
    };
    let awaitReady: ((position: number) => Promise<void>) | undefined = start(o.maxTokens);
    /** the last token, not yet given to onToken (it is, once the next step has gone out) */
    let owed: number | undefined;
    let input: number[] = ids;
    /**
     * runs positions through the front segment (the memory policy told what it holds) and encodes their
     * hidden states; `ran`: the states of positions the front already ran (early-exit drafting)
     */
    const feed = async (part: number[], ran?: Float32Array): Promise<Uint8Array> => {
      const h = ran ? { data: ran } : await front.run(part, part.length);
      const holding = edgeBytes(shape, fw, split, front.length);
      peak = Math.max(peak, holding);
      o.onHold?.(holding - edgeBytes(shape, fw, split, 0));
      return codec.encode(h.data, part.length, c.dim);
    };
    const chunk = Math.max(1, Math.floor(o.prefillChunk ?? DEFAULT_PREFILL_CHUNK));
    for (;;) {
      const e0 = performance.now();
      const isStep = input !== ids;
      let payload: Uint8Array;
      let sent = 0;
      // speculation: drafts to follow the token being fed, within the budget and the model's positions
      let drafts: number[] = [];
      let drafted: Float32Array | undefined;
      let q: SparseDistribution[] | undefined;
      if (isStep && spec) {
        const want = draftLength ? draftLength.next() : spec.maxDraft;
        const room = Math.min(want, MAX_DRAFT, o.maxTokens - out.length - 1, c.maxSeq - front.length - 2);
        if (room > 0 && spec.proposer.draftWithFront) {
          // early exit: the drafts come with the front's states of the fed positions
          const enc = codec;
          const r = await spec.proposer.draftWithFront(front, input[0]!, room, (h) => enc.decode(enc.encode(h, 1, c.dim)).x, draftSampler);
          drafts = r.drafts;
          drafted = r.hidden;
        } else if (room > 0 && drafter) {
          const r = await drafter.propose([...ids, ...out], room, draftSampler);
          drafts = r.tokens.slice(0, room);
          q = r.q?.slice(0, drafts.length);
        }
      }
      const fedInput = drafts.length ? [...input, ...drafts] : input;
      if (isStep) payload = await feed(fedInput, drafted);
      else {
        // the prompt in chunks, each sent as soon as it is encoded; the last one is answered by the first token
        const sent0 = link.bytesOut;
        for (let at = 0; ; at += chunk) {
          const part = ids.slice(at, at + chunk);
          payload = await feed(part);
          const more = at + chunk < ids.length;
          link.sendKept({ type: 'prefill', tokens: part.length, ...(more ? { more } : {}) }, payload, at);
          if (!more) break;
        }
        sent = link.bytesOut - sent0;
      }
      const e1 = performance.now();
      edgeMs += e1 - e0;
      // stopped while the front ran: no step goes out for a token nobody will read
      if (isStep && o.signal?.aborted) {
        if (owed !== undefined) o.onToken?.(owed);
        finish = 'interrupted';
        break;
      }
      if (isStep) {
        const sent0 = link.bytesOut;
        if (drafts.length) link.sendKept({ type: 'draft', tokens: fedInput.length, token: input[0]!, drafts, ...(spec?.proposer.exit ? { exit: true } : {}), ...(q ? { q } : {}) }, payload, front.length - fedInput.length);
        else link.sendKept({ type: 'step', token: input[0]! }, payload, front.length - 1);
        sent = link.bytesOut - sent0;
      }
      // the token before this step is handed on while the cloud works on this one (text decoding and
      // stop strings off the critical path); a stop it finds ends the loop without awaiting the answer
      if (owed !== undefined) {
        o.onToken?.(owed);
        owed = undefined;
        if (o.signal?.aborted) {
          finish = 'interrupted';
          break;
        }
      }
      const ready = awaitReady;
      awaitReady = undefined;
      let answer: TokenMsg | Verified;
      try {
        answer = await (drafts.length
          ? link.awaitVerified(front.length)
          : ready
            ? ready(front.length).then(() => link.awaitToken(front.length))
            : link.awaitToken(front.length)
        ).catch(failover);
      } catch (e) {
        // the signal ended the wait itself: what was generated stands
        if (!(e instanceof InterruptedWait)) throw e;
        finish = 'interrupted';
        break;
      }
      // what came back: one token, or the drafts that stood and the token after them
      let got: number[];
      let done: boolean;
      let stopped: boolean;
      if (answer.type === 'verified') {
        if (answer.accepted > drafts.length || answer.ids.length > answer.accepted + 1 || answer.ids.some((id, i) => i < answer.accepted && id !== drafts[i])) {
          throw new SplitLLMError('E_PROTOCOL', `the cloud's verdict (${answer.accepted} of ${drafts.length} drafts, ids ${answer.ids.join(',')}) does not match the draft sent`);
        }
        // the front's cache keeps the fed token and the drafts that stood, as the cloud's does
        front.truncate(front.length - fedInput.length + 1 + answer.accepted);
        specStats.draftSteps++;
        specStats.drafted += drafts.length;
        specStats.accepted += answer.accepted;
        draftLength?.observe(drafts.length, answer.accepted, performance.now() - e0);
        got = answer.ids;
        done = answer.done;
        stopped = answer.done && out.length + got.length < o.maxTokens && got.length <= answer.accepted;
      } else {
        got = answer.id >= 0 ? [answer.id] : [];
        done = answer.done;
        stopped = answer.id < 0;
        if (isStep) draftLength?.observe(0, 0, performance.now() - e0);
      }
      const t = { cloudMs: answer.cloudMs };
      for (const id of got) {
        if (id >= c.vocabSize) throw new SplitLLMError('E_PROTOCOL', `the cloud sent token ${id}, outside the model's vocabulary of ${c.vocabSize}: is it serving another model?`);
      }
      const e2 = performance.now();
      if (pendingFailover) {
        pendingFailover.ms = e2 - e1;
        failoverEvents.push(pendingFailover);
        pendingFailover = undefined;
      }
      roundMs += e2 - e1;
      cloudMs += t.cloudMs;
      if (isStep) {
        dec.steps++;
        dec.edgeMs += e1 - e0;
        dec.roundMs += e2 - e1;
        dec.cloudMs += t.cloudMs;
        dec.payloadBytes += payload.byteLength;
        dec.wireBytes += sent;
      } else firstTokenMs = e2 - t0;
      o.onStep?.({ prefill: !isStep, tokens: got.length, edgeMs: e1 - e0, networkMs: e2 - e1 - t.cloudMs, cloudMs: t.cloudMs, bytesUp: sent });
      out.push(...got);
      const last = done || out.length >= o.maxTokens || o.signal?.aborted || got.length === 0;
      // every token but the newest is final now; the newest is handed on once the next step is out
      got.forEach((id, i) => {
        if (i < got.length - 1 || last) o.onToken?.(id);
        else owed = id;
      });
      if (last) {
        // the cloud ends with id -1 (or a verdict cut) on a stop token; a full budget or sequence is 'length'
        finish = o.signal?.aborted ? 'interrupted' : stopped ? 'stop' : 'length';
        break;
      }
      input = [got[got.length - 1]!];
      const want = o.adapt?.({ token: out.length, latencyMs: e2 - e0, split });
      if (want !== undefined && want !== split) {
        if (!Number.isInteger(want) || want < 0 || want > c.nLayers) throw new SplitLLMError('E_SPLIT_RANGE', `adapt asked for split ${want}: use 0..${c.nLayers}`);
        resplits.unshift({ afterTokens: out.length, split: want });
      }
      // the memory policy before each step: move the split down before the KV would outgrow the budget
      const now = budget();
      const down = now === undefined ? undefined : splitBeforeStep(shape, fw, now, split, front.length);
      if (down !== undefined) resplits.unshift({ afterTokens: out.length, split: down });
      while (resplits.length && resplits[0]!.afterTokens <= out.length) {
        const to = resplits.shift()!.split;
        if (to === split) continue;
        const moved = await resplitFront(pkg, link, front, to, kvCodec, fronts);
        front = moved.front;
        const info = { from: split, to, bytes: moved.bytes, atToken: out.length };
        moves.push(info);
        o.onResplit?.(info);
        split = to;
        codec = codecAtSplit(o.codec ?? 'fp32', split, o.codecEnv);
      }
    }
    link.send({ type: 'close' });
  } finally {
    link.close();
    await front.release();
    if (drafter && drafter !== spec?.proposer) await drafter.release?.();
  }
  const seconds = (performance.now() - t0) / 1000;
  const n = Math.max(1, out.length);
  return {
    tokens: out,
    stats: {
      tokens: out.length,
      seconds,
      tokensPerSec: out.length / seconds,
      bytesUp: link.bytesOut + earlierOut,
      bytesDown: link.bytesIn + earlierIn,
      bytesUpPerToken: (link.bytesOut + earlierOut) / n,
      bytesDownPerToken: (link.bytesIn + earlierIn) / n,
      edgeMs: edgeMs / n,
      networkMs: (roundMs - cloudMs) / n,
      cloudMs: cloudMs / n,
      prefill: { tokens: ids.length, firstTokenMs },
      decode: {
        steps: dec.steps,
        edgeMs: dec.edgeMs / Math.max(1, dec.steps),
        networkMs: (dec.roundMs - dec.cloudMs) / Math.max(1, dec.steps),
        cloudMs: dec.cloudMs / Math.max(1, dec.steps),
        payloadBytes: dec.payloadBytes / Math.max(1, dec.steps),
        wireBytes: dec.wireBytes / Math.max(1, dec.steps),
      },
      peakEdgeBytes: peak,
      resplits: moves,
      resumes: link.resumes + earlierResumes,
      failovers,
      replayedPositions: replayed,
      failoverEvents,
      interrupted: finish === 'interrupted',
      finish,
      split: { start: startSplit, end: split },
      ...(spec
        ? {
            speculation: {
              proposer: spec.proposer.name,
              draftSteps: specStats.draftSteps,
              drafted: specStats.drafted,
              accepted: specStats.accepted,
              acceptance: specStats.drafted ? specStats.accepted / specStats.drafted : 0,
              tokensPerRound: Math.max(0, out.length - 1) / Math.max(1, dec.steps),
            },
          }
        : {}),
    },
  };
}

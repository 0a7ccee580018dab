/**
 * The edge as a long-lived library object: the model, its front segments (built once, one shared
 * onnxruntime session per split) and the plan stay loaded, and each request runs the token loop
 * (`runEdge`) in a cloud session of its own. The edge service (service.ts) and the CLI are thin layers
 * on it; apps can use it directly:
 *
 *   const agent = await EdgeAgent.create({ model: await openModel('models/default'), cloud: 'ws://127.0.0.1:8080', split: 2 });
 *   for await (const piece of agent.stream({ prompt: 'ROMEO:', maxTokens: 40 })) process.stdout.write(piece);
 */
import type { DraftProposer } from './draft/proposer.js';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { checkSplit, SplitLLMError } from '../shared/errors.js';
import { newSessionId, type SamplingParams } from '../shared/protocol/index.js';
import type { Connector, FrameChannel } from '../shared/transport/channel.js';
import type { ModelPackage } from '../models/package.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import { cachedSegment, defaultCacheEvents } from '../models/runtime/segment-cache.js';
import { calibrationContexts } from '../models/calibration-file.js';
import { SharedSegments } from '../models/runtime/shared-segments.js';
import { StopStrings, TextStream } from '../models/tokenizer/text-stream.js';
import type { ChatMessage } from '../models/tokenizer/tokenizer.js';
import type { CodecEnv } from '../quantization/activations/codec.js';
import type { QuantizedBytes } from '../quantization/weights/memory.js';
import { runEdge, type EdgeStats, type FinishReason } from './agent.js';
import type { Deadlines } from './connection.js';
import { wsConnector } from './connect-node.js';

export interface EdgeAgentOptions {
  model: ModelPackage;
  /** the cloud's session URL (ws://HOST:PORT/v1/session; a bare ws://HOST:PORT gets the path added) */
  cloud: string;
  token?: string;
  /** PEM certificates to trust for a wss:// cloud (self-signed or a private CA) */
  ca?: string | Buffer;
  /** split point: this device runs layers [0, split) */
  split: number;
  /** hidden-state codec (default fp32); a bare 'ts-tabq' is each split's calibrated codec (an error for a model without a calibration) */
  codec?: string;
  codecEnv?: CodecEnv;
  /** the plan's weights: emitters of the front layers and the bits the memory policy and the cloud use */
  linearFor?: (layer: number) => LinearEmitter;
  /** the fronts' token embedding at 8 or 4 bits (default 32) */
  embedBits?: number;
  frontBits?: number;
  /** the front's weight strategy's accounting of a quantized linear (memory policy; default blockwise RTN) */
  quantizedBytes?: QuantizedBytes;
  backBits?: number;
  /** the LM head's bits on the cloud (default 32) */
  headBits?: number;
  blockSize?: number;
  /** prompt positions per prefill message (default DEFAULT_PREFILL_CHUNK) */
  prefillChunk?: number;
  /** speculative decoding for every request (a proposer the requests share; adaptive draft length per request) */
  speculate?: { proposer: DraftProposer; maxDraft: number };
  kvCodec?: string;
  /** memory the model may take on this device (front weights + the KV of every open request) */
  edgeMemory?: number;
  /** longest sequence (prompt + reply) a request may reach (default: the model's, or the plan's) */
  maxSeq?: number;
  /** requests served at once, each with its own cloud session (default 4); more are refused with E_BUSY */
  maxConcurrent?: number;
  /** onnxruntime intra-op threads per front session */
  threads?: number;
  /** opens a channel to the cloud (default: a WebSocket to `cloud` with `token`) */
  connect?: Connector;
  /** how long each wait for the cloud may take (connection.ts; defaults DEFAULT_DEADLINES) */
  deadlines?: Deadlines;
  /**
   * keep one connection to the cloud open and unused, so that a request does not wait for the TCP,
   * TLS and WebSocket handshakes (default true; it takes one of the cloud's connection slots)
   */
  spareConnection?: boolean;
}

export interface GenerateRequest {
  /** plain text continued as is (BOS first), or … */
  prompt?: string;
  /** … a conversation rendered by the model's chat template, or … */
  messages?: ChatMessage[];
  /** … token ids (BOS first) */
  promptIds?: number[];
  /** default: what is left of the context after the prompt */
  maxTokens?: number;
  sampling?: SamplingParams;
  /** strings that end the text (matched on the decoded text, across tokens); the text ends before them */
  stop?: string[];
  signal?: AbortSignal;
}

export interface GenerateResult {
  text: string;
  /** generated token ids (all that the cloud sent, also past a stop string) */
  tokens: number[];
  promptTokens: number;
  /** 'stop': a stop token or stop string; 'length': max tokens or the context; 'interrupted': the signal */
  finishReason: FinishReason;
  stats: EdgeStats;
  /** the split the request ended at (the plan's, unless the memory policy moved it) */
  split: number;
  codec: string;
}

/** A connection opened ahead of a request, for the session id chosen with it. */
interface Spare {
  session: string;
  channel: Promise<FrameChannel | undefined>;
  taken: boolean;
}

export class EdgeAgent {
  private readonly fronts: SharedSegments<number>;
  private active = 0;
  private readonly held = new Map<number, number>();
  private nextId = 0;
  private readonly url: string;
  /** a connection opened ahead for the next request's session (its id chosen with it) */
  private spare: Spare | undefined;
  private closed = false;
  /** the stop of every request running now: `interruptAll` ends them */
  private readonly running = new Set<AbortController>();
  readonly maxConcurrent: number;
  readonly maxSeq: number;
  /** the codec contexts: the options', else the package's calibration.json (a bare ts-tabq is its calibrated codec) */
  private readonly codecEnv: CodecEnv;

  private constructor(readonly options: EdgeAgentOptions) {
    const pkg = options.model;
    const c = pkg.config;
    checkSplit(options.split, c.nLayers);
    this.url = /\/v1\/session$/.test(options.cloud) ? options.cloud : options.cloud.replace(/\/$/, '') + '/v1/session';
    this.maxConcurrent = options.maxConcurrent ?? 4;
    this.maxSeq = Math.min(options.maxSeq ?? c.maxSeq, c.maxSeq);
    this.codecEnv = options.codecEnv ?? calibrationContexts({}, pkg);
    this.fronts = new SharedSegments(
      c,
      (k) => String(k),
      (k) => cachedSegment(pkg, 0, k, { embed: true, head: false, linearFor: options.linearFor, embedBits: options.embedBits }, defaultCacheEvents),
      { threads: options.threads },
    );
  }

  /** An agent with the plan's front segment built and its session open (the first request starts warm). */
  static async create(options: EdgeAgentOptions): Promise<EdgeAgent> {
    const agent = new EdgeAgent(options);
    await (await agent.fronts.runtime(options.split)).release();
    agent.refill();
    return agent;
  }

  private get baseConnector(): Connector {
    return this.options.connect ?? wsConnector(this.url, this.options.token, { ca: this.options.ca, handshakeTimeoutMs: this.options.deadlines?.connectMs });
  }

  /** Opens the spare connection in the background, for a session id chosen now (a cloud that is down just leaves none). */
  private refill(): void {
    if (this.closed || this.options.spareConnection === false) {
      this.spare = undefined;
      return;
    }
    const session = newSessionId();
    this.spare = { session, channel: this.baseConnector(session).catch(() => undefined), taken: false };
  }

  /**
   * Takes the spare for a new request (its id becomes the session's) and opens the next one: replaced
   * before any await, so that concurrent requests each take a different one and none leaks.
   */
  private takeSpare(): Spare | undefined {
    const spare = this.spare;
    this.refill();
    return spare;
  }

  /** The connector of one request: its first connection is the spare when that is still open, every other a new one. */
  private connectorFor(spare: Spare | undefined): Connector {
    return async (session) => {
      if (spare && !spare.taken && session === spare.session) {
        spare.taken = true;
        const ch = await spare.channel;
        if (ch?.open) return ch;
        ch?.close();
      }
      return this.baseConnector(session);
    };
  }

  get model(): ModelPackage {
    return this.options.model;
  }

  /** requests running now */
  get busy(): number {
    return this.active;
  }

  /** Token ids of a request's prompt (BOS first for text; the chat template's own rules for messages). */
  promptIds(req: Pick<GenerateRequest, 'prompt' | 'messages' | 'promptIds'>): number[] {
    const tok = this.model.tokenizer();
    if (req.promptIds) return req.promptIds;
    if (req.messages) return tok.chat(req.messages);
    return tok.encode(req.prompt ?? '', true);
  }

  /** Generates a reply; `onText` gets the text as it streams (stop strings already held back and cut). */
  async generate(req: GenerateRequest, onText?: (delta: string) => void): Promise<GenerateResult> {
    const c = this.model.config;
    const ids = this.promptIds(req);
    const room = this.maxSeq - ids.length;
    if (room < 1) {
      throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `the prompt is ${ids.length} tokens, the context holds ${this.maxSeq}: shorten the prompt`);
    }
    const maxTokens = req.maxTokens ?? room;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new SplitLLMError('E_BAD_ARGUMENT', `max tokens must be a positive integer, got ${maxTokens}`);
    if (maxTokens > room) {
      throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `the prompt (${ids.length} tokens) plus max tokens ${maxTokens} passes the context of ${this.maxSeq}: ask for at most ${room}`);
    }
    if (this.active >= this.maxConcurrent) {
      throw new SplitLLMError('E_BUSY', `the edge is serving its limit of ${this.maxConcurrent} requests: retry shortly or raise --max-concurrent`);
    }
    this.active++;
    const id = this.nextId++;
    const tok = this.model.tokenizer();
    const stops = new StopStrings(req.stop ?? []);
    const stop = new AbortController();
    this.running.add(stop);
    const onAbort = () => stop.abort();
    req.signal?.addEventListener('abort', onAbort);
    if (req.signal?.aborted) stop.abort();
    const prompt = req.messages ? tok.decode(ids) : (req.prompt ?? '');
    const stream = new TextStream(
      tok,
      ids,
      prompt,
      (s) => {
        const out = stops.push(s);
        if (out) onText?.(out);
        if (stops.stopped) stop.abort();
      },
      { echoPrompt: false },
    );
    const o = this.options;
    const spare = this.takeSpare();
    try {
      const r = await runEdge(this.model, {
        url: this.url,
        split: o.split,
        codec: o.codec,
        codecEnv: this.codecEnv,
        prompt,
        promptIds: ids,
        maxTokens,
        sampling: req.sampling,
        token: o.token,
        deadlines: o.deadlines,
        connect: this.connectorFor(spare),
        sessionId: spare?.session,
        linearFor: o.linearFor,
        frontBits: o.frontBits,
        embedBits: o.embedBits,
        quantizedBytes: o.quantizedBytes,
        backBits: o.backBits,
        headBits: o.headBits,
        blockSize: o.blockSize,
        prefillChunk: o.prefillChunk,
        speculate: o.speculate,
        kvCodec: o.kvCodec,
        edgeMemory: o.edgeMemory,
        fronts: (k) => this.fronts.runtime(k),
        othersHold: () => this.heldExcept(id),
        onHold: (bytes) => this.held.set(id, bytes),
        onToken: (t) => stream.push(t),
        signal: stop.signal,
      });
      stream.finish();
      const rest = stops.flush();
      if (rest) onText?.(rest);
      const finishReason: FinishReason = stops.stopped ? 'stop' : r.stats.finish;
      return { text: stops.all, tokens: r.tokens, promptTokens: ids.length, finishReason, stats: r.stats, split: r.stats.split.end, codec: o.codec ?? 'fp32' };
    } finally {
      // a request that failed before it connected leaves its spare unused
      if (spare && !spare.taken) {
        spare.taken = true;
        void spare.channel.then((ch) => ch?.close());
      }
      req.signal?.removeEventListener('abort', onAbort);
      this.running.delete(stop);
      this.held.delete(id);
      this.active--;
    }
  }

  /** Ends every running request now, in the middle of a wait too (a drain past its timeout): each returns what it generated, finish 'interrupted'. */
  interruptAll(): number {
    for (const stop of this.running) stop.abort();
    return this.running.size;
  }

  /**
   * Streams a reply as text pieces; the generator's return value is the whole result. Breaking out of
   * the loop cancels the generation (and its cloud session).
   */
  async *stream(req: GenerateRequest): AsyncGenerator<string, GenerateResult, undefined> {
    const pieces: string[] = [];
    let wake: (() => void) | undefined;
    const cancel = new AbortController();
    const onAbort = () => cancel.abort();
    req.signal?.addEventListener('abort', onAbort);
    let done = false;
    const run = this.generate({ ...req, signal: cancel.signal }, (s) => {
      pieces.push(s);
      wake?.();
    }).finally(() => {
      done = true;
      wake?.();
    });
    run.catch(() => undefined); // raised below, where the consumer awaits
    try {
      for (;;) {
        while (pieces.length) yield pieces.shift()!;
        if (done) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      while (pieces.length) yield pieces.shift()!;
      return await run;
    } finally {
      req.signal?.removeEventListener('abort', onAbort);
      if (!done) {
        cancel.abort();
        await run.catch(() => undefined);
      }
    }
  }

  /** Whether the cloud answers its health check now (readiness); over https with the agent's CA. */
  cloudReachable(timeoutMs = 2000): Promise<boolean> {
    const health = new URL(this.url.replace(/^ws/, 'http').replace(/\/v1\/session$/, '/healthz'));
    const get = health.protocol === 'https:' ? httpsGet : httpGet;
    return new Promise((resolve) => {
      const req = get(health, { timeout: timeoutMs, ...(this.options.ca ? { ca: this.options.ca } : {}) }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
    });
  }

  private heldExcept(id: number): number {
    let n = 0;
    for (const [k, b] of this.held) if (k !== id) n += b;
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    const spare = this.spare;
    this.spare = undefined;
    (await spare?.channel)?.close();
    await this.fronts.close();
  }
}

/**
 * The edge agent: tokenizes locally, runs the front segment [0, split), encodes the hidden state with the
 * plan's codec, streams it to the cloud and receives token ids. The prompt text never leaves this process.
 */
import WebSocket from 'ws';
import { SplitLLMError } from '../shared/errors.js';
import { decodeFrame, encodeFrame, PROTOCOL_VERSION, type Frame, type Message, type SamplingParams, type TokenMsg } from '../shared/protocol/messages.js';
import { decodeLayerKv, encodeLayerKv } from '../quantization/kv/stream.js';
import type { ModelPackage } from '../models/package.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { codecAtSplit, createCodec, type CodecEnv } from '../quantization/activations/registry.js';
import { segmentBytes } from '../quantization/weights/memory.js';

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
  linearFor?: (layer: number) => LinearEmitter;
  onToken?: (id: number) => void;
  /** move the split after this many generated tokens (KV of the moving layers is streamed) */
  resplits?: { afterTokens: number; split: number }[];
  /** codec of streamed KV (fp32: lossless) */
  kvCodec?: string;
  /**
   * memory budget of the edge in bytes (front weights + KV cache, as quantization/weights/memory.ts
   * accounts them): before the KV would outgrow it, the agent moves the split down on its own
   */
  edgeMemory?: number;
  /** weight bits of the front layers, for the memory accounting (default 32) */
  frontBits?: number;
  /** weight bits the cloud runs the back layers at (default 32) and the quantization block */
  backBits?: number;
  blockSize?: number;
  /** reconnect and resume the session when the connection drops (default true) */
  resume?: boolean;
  /** test hook: drop the connection right after sending the step that follows these token counts */
  dropAfterTokens?: number[];
  /**
   * called after every generated token with that token's round (edge + network + cloud, ms); a split
   * it returns other than the current one is moved to before the next step (the online planner)
   */
  adapt?: (info: { token: number; latencyMs: number; split: number }) => number | undefined;
  /** called after each re-split with the new split and the KV bytes moved */
  onResplit?: (info: { from: number; to: number; bytes: number; atToken: number }) => void;
}

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
}

/** A WebSocket whose binary frames are awaited one at a time. */
class FrameSocket {
  private queue: Frame[] = [];
  private waiting: ((f: Frame) => void) | undefined;
  private failure: Error | undefined;
  /** WebSocket close code once closed */
  closeCode = 0;
  bytesIn = 0;
  bytesOut = 0;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      this.bytesIn += data.length;
      const frame = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(frame);
      } else this.queue.push(frame);
    });
    ws.on('close', (code, reason) => {
      this.closeCode = code;
      this.failure ??= new SplitLLMError('E_CONNECTION', `the cloud closed the connection (${code}${reason.length ? `: ${reason.toString()}` : ''})`);
      if (this.waiting) this.waiting({ header: { type: 'error', code: 'closed', message: this.failure.message }, payload: new Uint8Array(0) });
    });
  }
  static open(url: string, token?: string): Promise<FrameSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      ws.once('open', () => resolve(new FrameSocket(ws)));
      ws.once('error', (e) => reject(new SplitLLMError('E_CONNECTION', `cannot reach the cloud at ${url} (${e.message}): start 'splitllm cloud' or check --cloud`)));
    });
  }
  send(m: Message, payload?: Uint8Array): void {
    const f = encodeFrame(m, payload);
    this.bytesOut += f.length;
    this.ws.send(f);
  }
  nextFrame(): Promise<Frame> {
    const f = this.queue.shift();
    if (f) return Promise.resolve(f);
    if (this.failure) return Promise.resolve({ header: { type: 'error', code: 'closed', message: this.failure.message }, payload: new Uint8Array(0) });
    return new Promise((resolve) => (this.waiting = resolve));
  }
  async expect<T extends Message['type']>(type: T): Promise<Extract<Message, { type: T }>> {
    const m = (await this.nextFrame()).header;
    if (m.type === 'error') throw new SplitLLMError('E_PROTOCOL', `cloud: ${m.code}: ${m.message}`);
    if (m.type !== type) throw new SplitLLMError('E_PROTOCOL', `expected ${type} from the cloud, got ${m.type}`);
    return m as Extract<Message, { type: T }>;
  }
  close(): void {
    this.ws.close();
  }
}

export async function runEdge(pkg: ModelPackage, o: EdgeOptions): Promise<{ tokens: number[]; stats: EdgeStats }> {
  const c = pkg.config;
  if (!Number.isInteger(o.split) || o.split < 0 || o.split > c.nLayers) {
    throw new SplitLLMError('E_SPLIT_RANGE', `split ${o.split} is out of range for a model with ${c.nLayers} layers: use 0..${c.nLayers}`);
  }
  let codec = codecAtSplit(o.codec ?? 'fp32', o.split, o.codecEnv);
  const kvCodec = createCodec(o.kvCodec ?? 'fp32');
  let front = await SegmentRuntime.create(pkg, 0, o.split, { embed: true, head: false, linearFor: o.linearFor });
  let split = o.split;
  const resplits = [...(o.resplits ?? [])].sort((a, b) => a.afterTokens - b.afterTokens);
  const ids = pkg.tokenizer().encode(o.prompt, true);
  if (ids.length + o.maxTokens > c.maxSeq) {
    throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `prompt (${ids.length} tokens) plus --max-tokens ${o.maxTokens} passes the model's maximum sequence of ${c.maxSeq}: lower --max-tokens`);
  }
  const bitsOf = () => o.frontBits ?? 32;
  const edgeBytes = (k: number, positions: number): number => {
    const b = segmentBytes(c, 0, k, { embed: true, head: false, bitsOf });
    return b.total + positions * b.kvPerToken;
  };
  if (o.edgeMemory !== undefined && edgeBytes(split, ids.length + 1) > o.edgeMemory) {
    let k = split;
    while (k > 0 && edgeBytes(k, ids.length + 1) > o.edgeMemory) k--;
    if (edgeBytes(k, ids.length + 1) > o.edgeMemory) {
      throw new SplitLLMError('E_BAD_ARGUMENT', `the edge budget of ${o.edgeMemory} bytes cannot hold the prompt at any split: raise --edge-memory`);
    }
    await front.release();
    front = await SegmentRuntime.create(pkg, 0, k, { embed: true, head: false, linearFor: o.linearFor });
    split = k;
    codec = codecAtSplit(o.codec ?? 'fp32', split, o.codecEnv);
  }
  const moves: EdgeStats['resplits'] = [];
  let peak = 0;
  let sock = await FrameSocket.open(o.url, o.token);
  let bytesUp = 0;
  let bytesDown = 0;
  let sessionId = '';
  let last: { header: Message; payload: Uint8Array } | undefined;
  let resumes = 0;
  const sendKept = (header: Message, payload: Uint8Array) => {
    last = { header, payload };
    sock.send(header, payload);
  };
  const reconnect = async (): Promise<void> => {
    bytesUp += sock.bytesOut;
    bytesDown += sock.bytesIn;
    sock.close();
    sock = await FrameSocket.open(o.url, o.token);
    sock.send({ type: 'resume', session: sessionId, position: front.length });
    const r = await sock.expect('ready');
    resumes++;
    if (r.length < front.length && last) sock.send(last.header, last.payload); // the cloud never got the last step
  };
  const awaitToken = async (): Promise<TokenMsg> => {
    for (;;) {
      const m = (await sock.nextFrame()).header;
      if (m.type === 'token') return m;
      // only a dropped link is resumed (abnormal closure, going away, server restart); a refusal is final
      if (m.type === 'error' && m.code === 'closed' && [1001, 1006, 1011, 1012, 1013].includes(sock.closeCode) && o.resume !== false && resumes < 5) {
        await reconnect();
        continue;
      }
      if (m.type === 'error') throw new SplitLLMError('E_PROTOCOL', `cloud: ${m.code}: ${m.message}`);
      throw new SplitLLMError('E_PROTOCOL', `expected token from the cloud, got ${m.type}`);
    }
  };
  const out: number[] = [];
  let edgeMs = 0;
  let cloudMs = 0;
  let roundMs = 0;
  const dec = { steps: 0, edgeMs: 0, roundMs: 0, cloudMs: 0, payloadBytes: 0, wireBytes: 0 };
  let firstTokenMs = 0;
  const t0 = performance.now();
  try {
    sock.send({ type: 'hello', version: PROTOCOL_VERSION, modelHash: pkg.hash, split, codec: codec.spec, maxTokens: o.maxTokens, sampling: o.sampling, stopIds: o.stopIds, backBits: o.backBits, blockSize: o.blockSize });
    sessionId = (await sock.expect('ready')).session;
    let input: number[] = ids;
    for (;;) {
      const e0 = performance.now();
      const h = await front.run(input, input.length);
      peak = Math.max(peak, edgeBytes(split, front.length));
      const payload = codec.encode(h.data, input.length, c.dim);
      const e1 = performance.now();
      edgeMs += e1 - e0;
      const isStep = input !== ids;
      const sent0 = sock.bytesOut;
      if (isStep) sendKept({ type: 'step', token: input[0]! }, payload);
      else sendKept({ type: 'prefill', tokens: ids.length }, payload);
      const sent = sock.bytesOut - sent0;
      if (o.dropAfterTokens?.includes(out.length)) sock.ws.terminate();
      const t: TokenMsg = await awaitToken();
      const e2 = performance.now();
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
      if (t.id >= 0) {
        out.push(t.id);
        o.onToken?.(t.id);
      }
      if (t.done || out.length >= o.maxTokens) break;
      input = [t.id];
      const want = o.adapt?.({ token: out.length, latencyMs: e2 - e0, split });
      if (want !== undefined && want !== split) {
        if (!Number.isInteger(want) || want < 0 || want > c.nLayers) throw new SplitLLMError('E_SPLIT_RANGE', `adapt asked for split ${want}: use 0..${c.nLayers}`);
        resplits.unshift({ afterTokens: out.length, split: want });
      }
      if (o.edgeMemory !== undefined && edgeBytes(split, front.length + 2) > o.edgeMemory) {
        // the next step would outgrow the budget (with one position of slack): move the split down
        let to = split - 1;
        while (to > 0 && edgeBytes(to, front.length + 2) > o.edgeMemory) to--;
        if (edgeBytes(to, front.length + 2) > o.edgeMemory) {
          throw new SplitLLMError('E_BAD_ARGUMENT', `the edge budget of ${o.edgeMemory} bytes cannot hold even the embedding and ${front.length + 2} positions: raise --edge-memory`);
        }
        resplits.unshift({ afterTokens: out.length, split: to });
      }
      while (resplits.length && resplits[0]!.afterTokens <= out.length) {
        const to = resplits.shift()!.split;
        if (to === split) continue;
        const r0 = sock.bytesOut + sock.bytesIn;
        const keep = front.exportKV(0, Math.min(split, to));
        if (to < split) {
          for (const kv of front.exportKV(to, split)) {
            sock.send({ type: 'kv', layer: kv.layer, length: kv.length }, encodeLayerKv(kvCodec, kv, c.nKvHeads, c.headDim));
          }
        }
        sock.send({ type: 'resplit', split: to, kvCodec: kvCodec.spec });
        for (;;) {
          const m = await sock.nextFrame();
          if (m.header.type === 'kv') keep.push(decodeLayerKv(m.payload, m.header.layer, m.header.length, c.nKvHeads, c.headDim));
          else if (m.header.type === 'ready') break;
          else if (m.header.type === 'error') throw new SplitLLMError('E_PROTOCOL', `cloud: ${m.header.code}: ${m.header.message}`);
          else throw new SplitLLMError('E_PROTOCOL', `expected kv or ready from the cloud, got ${m.header.type}`);
        }
        const next = await SegmentRuntime.create(pkg, 0, to, { embed: true, head: false, linearFor: o.linearFor });
        next.importKV(keep);
        await front.release();
        front = next;
        const info = { from: split, to, bytes: sock.bytesOut + sock.bytesIn - r0, atToken: out.length };
        moves.push(info);
        o.onResplit?.(info);
        split = to;
        codec = codecAtSplit(o.codec ?? 'fp32', split, o.codecEnv);
      }
    }
    sock.send({ type: 'close' });
  } finally {
    sock.close();
    await front.release();
  }
  const seconds = (performance.now() - t0) / 1000;
  const n = Math.max(1, out.length);
  return {
    tokens: out,
    stats: {
      tokens: out.length,
      seconds,
      tokensPerSec: out.length / seconds,
      bytesUp: bytesUp + sock.bytesOut,
      bytesDown: bytesDown + sock.bytesIn,
      bytesUpPerToken: (bytesUp + sock.bytesOut) / n,
      bytesDownPerToken: (bytesDown + sock.bytesIn) / n,
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
      resumes,
    },
  };
}

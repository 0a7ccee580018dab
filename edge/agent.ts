/**
 * The edge agent: tokenizes locally, runs the front segment [0, split), encodes the hidden state with the
 * plan's codec, streams it to the cloud and receives token ids. The prompt text never leaves this process.
 */
import WebSocket from 'ws';
import { SplitLLMError } from '../shared/errors.js';
import { decodeFrame, encodeFrame, PROTOCOL_VERSION, type Message, type SamplingParams, type TokenMsg } from '../shared/protocol/messages.js';
import type { ModelPackage } from '../models/package.js';
import type { LinearEmitter } from '../models/onnx/segment.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { createCodec } from '../quantization/activations/registry.js';

export interface EdgeOptions {
  url: string;
  split: number;
  codec?: string;
  prompt: string;
  maxTokens: number;
  sampling?: SamplingParams;
  token?: string;
  linearFor?: (layer: number) => LinearEmitter;
  onToken?: (id: number) => void;
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
}

/** A WebSocket whose binary frames are awaited one at a time. */
class FrameSocket {
  private queue: Message[] = [];
  private waiting: ((m: Message) => void) | undefined;
  private failure: Error | undefined;
  bytesIn = 0;
  bytesOut = 0;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      this.bytesIn += data.length;
      const { header } = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(header);
      } else this.queue.push(header);
    });
    ws.on('close', (code, reason) => {
      this.failure ??= new SplitLLMError('E_CONNECTION', `the cloud closed the connection (${code}${reason.length ? `: ${reason.toString()}` : ''})`);
      if (this.waiting) this.waiting({ type: 'error', code: 'closed', message: this.failure.message });
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
  next(): Promise<Message> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    if (this.failure) return Promise.resolve({ type: 'error', code: 'closed', message: this.failure.message });
    return new Promise((resolve) => (this.waiting = resolve));
  }
  async expect<T extends Message['type']>(type: T): Promise<Extract<Message, { type: T }>> {
    const m = await this.next();
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
  const codec = createCodec(o.codec ?? 'fp32');
  const front = await SegmentRuntime.create(pkg, 0, o.split, { embed: true, head: false, linearFor: o.linearFor });
  const ids = pkg.tokenizer().encode(o.prompt, true);
  if (ids.length + o.maxTokens > c.maxSeq) {
    throw new SplitLLMError('E_SEQUENCE_TOO_LONG', `prompt (${ids.length} tokens) plus --max-tokens ${o.maxTokens} passes the model's maximum sequence of ${c.maxSeq}: lower --max-tokens`);
  }
  const sock = await FrameSocket.open(o.url, o.token);
  const out: number[] = [];
  let edgeMs = 0;
  let cloudMs = 0;
  let roundMs = 0;
  const t0 = performance.now();
  try {
    sock.send({ type: 'hello', version: PROTOCOL_VERSION, modelHash: pkg.hash, split: o.split, codec: codec.spec, maxTokens: o.maxTokens, sampling: o.sampling });
    await sock.expect('ready');
    let input: number[] = ids;
    for (;;) {
      const e0 = performance.now();
      const h = await front.run(input, input.length);
      const payload = codec.encode(h.data, input.length, c.dim);
      const e1 = performance.now();
      edgeMs += e1 - e0;
      if (input === ids) sock.send({ type: 'prefill', tokens: ids.length }, payload);
      else sock.send({ type: 'step', token: input[0]! }, payload);
      const t: TokenMsg = await sock.expect('token');
      roundMs += performance.now() - e1;
      cloudMs += t.cloudMs;
      if (t.id >= 0) {
        out.push(t.id);
        o.onToken?.(t.id);
      }
      if (t.done || out.length >= o.maxTokens) break;
      input = [t.id];
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
      bytesUp: sock.bytesOut,
      bytesDown: sock.bytesIn,
      bytesUpPerToken: sock.bytesOut / n,
      bytesDownPerToken: sock.bytesIn / n,
      edgeMs: edgeMs / n,
      networkMs: (roundMs - cloudMs) / n,
      cloudMs: cloudMs / n,
    },
  };
}

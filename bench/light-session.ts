/**
 * A light cloud client for memory and soak measurements: hello, a prefill of zero-valued fp32 hidden
 * states, its token, then close or drop the connection — no edge model runs. Used by bench/cloud-soak
 * and the cloud memory test.
 */
import WebSocket from 'ws';
import type { ModelPackage } from '../models/package.js';
import { createCodec } from '../quantization/activations/registry.js';
import { encodeFrame, parseCloudFrame, PROTOCOL_VERSION, type CloudMessage, type EdgeMessage } from '../shared/protocol/index.js';

const fp32 = createCodec('fp32');

/** One session at split 2 on `url` (a /v1/session URL, with its query if any): `positions` prefilled, then closed or dropped. */
export function lightSession(url: string, pkg: ModelPackage, positions: number, end: 'close' | 'drop'): Promise<void> {
  const D = pkg.config.dim;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const send = (m: EdgeMessage, payload?: Uint8Array) => ws.send(encodeFrame(m, payload));
    ws.on('error', reject);
    ws.on('open', () => send({ type: 'hello', version: PROTOCOL_VERSION, modelHash: pkg.hash, split: 2, codec: 'fp32', maxTokens: 1, stopIds: [] }));
    ws.on('message', (d: Buffer) => {
      const m: CloudMessage = parseCloudFrame(new Uint8Array(d)).header;
      if (m.type === 'ready') send({ type: 'prefill', tokens: positions }, fp32.encode(new Float32Array(positions * D), positions, D));
      else if (m.type === 'token') {
        if (end === 'close') send({ type: 'close' });
        else ws.terminate();
        resolve();
      } else reject(new Error(JSON.stringify(m)));
    });
  });
}

/** What one light decode session saw: ms from each step's send to its token. */
export interface DecodeTimes {
  stepMs: number[];
  /** performance.now() when the first step went out and when the last token came */
  decodeStart: number;
  decodeEnd: number;
}

/**
 * One session at `split` that prefills `positions` random hidden states and then runs `steps` decode
 * steps, each a random fp32 hidden state sent as soon as the token before it came (a stand-in for an
 * edge whose front segment costs nothing). Resolves with each step's round-trip time.
 */
export function lightDecode(url: string, pkg: ModelPackage, split: number, positions: number, steps: number, seed = 1): Promise<DecodeTimes> {
  const D = pkg.config.dim;
  let s = seed >>> 0 || 1;
  const noise = (n: number) => Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 2);
  // a handful of payloads, reused: the client stays light
  const payloads = Array.from({ length: 4 }, () => fp32.encode(noise(D), 1, D));
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const send = (m: EdgeMessage, payload?: Uint8Array) => ws.send(encodeFrame(m, payload));
    const stepMs: number[] = [];
    let sentAt = 0;
    let decodeStart = 0;
    let n = 0;
    const step = () => {
      sentAt = performance.now();
      if (!decodeStart) decodeStart = sentAt;
      send({ type: 'step', token: 0 }, payloads[n % payloads.length]);
    };
    ws.on('error', reject);
    ws.on('open', () => send({ type: 'hello', version: PROTOCOL_VERSION, modelHash: pkg.hash, split, codec: 'fp32', maxTokens: steps + 1, stopIds: [] }));
    ws.on('message', (d: Buffer) => {
      const m: CloudMessage = parseCloudFrame(new Uint8Array(d)).header;
      if (m.type === 'ready') send({ type: 'prefill', tokens: positions }, fp32.encode(noise(positions * D), positions, D));
      else if (m.type === 'token') {
        if (sentAt) stepMs.push(performance.now() - sentAt);
        if (n++ < steps) return step();
        send({ type: 'close' });
        resolve({ stepMs, decodeStart, decodeEnd: performance.now() });
      } else reject(new Error(JSON.stringify(m)));
    });
  });
}

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

/** KV cache ⇄ `kv` frames: each layer's keys and values as two codec messages of [KV·length, headDim]. */
import { decodeMessage } from '../activations/registry.js';
import type { Codec } from '../activations/codec.js';
import { packKv, unpackKv } from '../../shared/protocol/frame.js';
import { protocolError } from '../../shared/protocol/errors.js';

export interface LayerKvData {
  layer: number;
  key: Float32Array;
  value: Float32Array;
  length: number;
}

export function encodeLayerKv(codec: Codec, kv: LayerKvData, kvHeads: number, headDim: number): Uint8Array {
  const rows = kvHeads * kv.length;
  return packKv(codec.encode(kv.key, rows, headDim), codec.encode(kv.value, rows, headDim));
}

export function decodeLayerKv(payload: Uint8Array, layer: number, length: number, kvHeads: number, headDim: number): LayerKvData {
  const { key, value } = unpackKv(payload);
  // a message claiming more than the layer's [heads × length, headDim] is refused before its values are allocated
  const maxValues = kvHeads * length * headDim;
  const k = decodeMessage(key, { maxValues });
  const v = decodeMessage(value, { maxValues });
  for (const d of [k, v]) {
    if (d.dim !== headDim || d.tokens !== kvHeads * length) {
      throw protocolError('bad_tensor', `kv of layer ${layer} is [${d.tokens}, ${d.dim}], expected [${kvHeads * length}, ${headDim}]`);
    }
  }
  return { layer, key: k.x, value: v.x, length };
}

/**
 * The re-split exchange on the edge (docs/PROTOCOL.md, "Re-split"): moving the split down hands the KV
 * of layers [to, split) to the cloud first, each frame sent once the one before has drained; moving it up
 * takes the KV of layers [split, to) from the cloud. Both end with the cloud's `ready` at the new split
 * and a new front segment holding the KV the edge now owns.
 */
import { SplitLLMError } from '../shared/errors.js';
import type { EdgeModel } from './agent.js';
import type { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import type { Codec } from '../quantization/activations/codec.js';
import { decodeLayerKv, encodeLayerKv } from '../quantization/kv/stream.js';
import type { CloudConnection } from './connection.js';

export interface ResplitResult {
  front: SegmentRuntime;
  /** KV bytes moved both ways, framing included */
  bytes: number;
}

export async function resplitFront(pkg: EdgeModel, link: CloudConnection, front: SegmentRuntime, to: number, kvCodec: Codec, fronts: (split: number) => Promise<SegmentRuntime>): Promise<ResplitResult> {
  const c = pkg.config;
  const split = front.to;
  const r0 = link.bytesOut + link.bytesIn;
  const keep = front.exportKV(0, Math.min(split, to));
  if (to < split) {
    for (const kv of front.exportKV(to, split)) {
      link.send({ type: 'kv', layer: kv.layer, length: kv.length }, encodeLayerKv(kvCodec, kv, c.nKvHeads, c.headDim));
      await link.drain();
    }
  }
  link.send({ type: 'resplit', split: to, kvCodec: kvCodec.spec });
  const wanted = new Set<number>();
  for (let l = split; l < to; l++) wanted.add(l);
  for (;;) {
    // the cloud may build the back segment of the new split first: the ready's deadline
    const ev = await link.next(`the KV and ready of the re-split to ${to}`, link.readyMs);
    if (ev.kind === 'close') throw new SplitLLMError('E_CONNECTION', `the cloud closed the connection during a re-split (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`);
    const m = ev.frame.header;
    if (m.type === 'kv') {
      if (!wanted.delete(m.layer)) throw new SplitLLMError('E_PROTOCOL', `the cloud sent KV of layer ${m.layer}, which does not move to the edge (moving: ${split}..${to - 1})`);
      if (m.length !== front.length) throw new SplitLLMError('E_PROTOCOL', `the cloud sent KV of layer ${m.layer} at ${m.length} positions, the edge holds ${front.length}`);
      try {
        keep.push(decodeLayerKv(ev.frame.payload, m.layer, m.length, c.nKvHeads, c.headDim));
      } catch (e) {
        if (e instanceof SplitLLMError) throw new SplitLLMError('E_PROTOCOL', `the cloud sent KV of layer ${m.layer} that does not decode: ${e.message}`);
        throw e;
      }
      continue;
    }
    const ready = link.expectFrame(ev.frame, 'ready').header;
    if (ready.split !== to) throw new SplitLLMError('E_PROTOCOL', `the cloud answered the re-split to ${to} with split ${ready.split}`);
    if (wanted.size) throw new SplitLLMError('E_PROTOCOL', `the cloud did not send the KV of layer(s) ${[...wanted].join(', ')} before ready`);
    break;
  }
  const next = await fronts(to);
  next.importKV(keep, front.length);
  await front.release();
  return { front: next, bytes: link.bytesOut + link.bytesIn - r0 };
}

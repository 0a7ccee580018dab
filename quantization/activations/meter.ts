/** Runs hidden states through a codec exactly as the wire would (encode → bytes → decode) and counts bits. */
import type { Codec, DecodeOptions } from './codec.js';
import { decodeMessage } from './registry.js';

export class WireMeter {
  bytes = 0;
  values = 0;
  messages = 0;

  constructor(
    readonly codec: Codec,
    private readonly decodeOptions: DecodeOptions = {},
  ) {}

  roundTrip(x: Float32Array, tokens: number, dim: number): Float32Array {
    const bytes = this.codec.encode(x, tokens, dim);
    this.bytes += bytes.length;
    this.values += tokens * dim;
    this.messages++;
    return decodeMessage(bytes, this.decodeOptions).x;
  }

  /** Bits per value over everything sent so far, every header included. */
  get bitsPerValue(): number {
    return this.values === 0 ? 0 : (8 * this.bytes) / this.values;
  }
}

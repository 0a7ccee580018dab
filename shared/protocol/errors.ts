/**
 * Wire error codes (sent in `error` frames, docs/PROTOCOL.md) and the one error type the protocol layer
 * throws. A `ProtocolError` carries its wire code and whether the connection closes after it, so a
 * server answers it on that session without guessing from ad-hoc properties.
 */
import { SplitLLMError } from '../errors.js';

/** Stable wire error codes, and whether the connection closes after each. */
export const WIRE_CODES = {
  bad_frame: false,
  bad_msgpack: false,
  unknown_type: false,
  bad_message: false,
  bad_version: true,
  bad_model: true,
  bad_hello: true,
  unknown_session: false,
  step_before_prefill: false,
  bad_tensor: false,
  nan_tensor: false,
  token_limit: false,
  bad_draft: false,
  bad_resplit: false,
  unauthorized: true,
  busy: true,
  hello_timeout: true,
  expired_session: true,
  session_in_use: true,
  too_many_errors: true,
  internal: true,
} as const satisfies Record<string, boolean>;

export type WireCode = keyof typeof WIRE_CODES;

export class ProtocolError extends SplitLLMError {
  readonly wireCode: WireCode;
  /** the connection closes after this error is answered */
  readonly closes: boolean;
  constructor(wireCode: WireCode, message: string, opts: { closes?: boolean; cause?: unknown } = {}) {
    super('E_PROTOCOL', message, { cause: opts.cause });
    this.name = 'ProtocolError';
    this.wireCode = wireCode;
    this.closes = opts.closes ?? WIRE_CODES[wireCode];
  }
}

export function protocolError(code: WireCode, message: string, opts?: { closes?: boolean }): ProtocolError {
  return new ProtocolError(code, message, opts);
}

/**
 * Typed errors for everything a user can cause. Each carries a stable code (used by the CLI's exit
 * path, the wire protocol's `error` message and the tests) and a one-line message that names the
 * problem and what to do about it.
 */
export type ErrorCode =
  | 'E_USAGE'
  | 'E_FILE_NOT_FOUND'
  | 'E_FILE_READ'
  | 'E_CHECKPOINT_CORRUPT'
  | 'E_CHECKPOINT_TRUNCATED'
  | 'E_UNKNOWN_ARCHITECTURE'
  | 'E_BAD_CONFIG'
  | 'E_BAD_PACKAGE'
  | 'E_UNSUPPORTED_FORMAT'
  | 'E_TOKENIZER'
  | 'E_CHAT_TEMPLATE'
  | 'E_VOCAB_MISMATCH'
  | 'E_SPLIT_RANGE'
  | 'E_SEQUENCE_TOO_LONG'
  | 'E_BAD_ARGUMENT'
  | 'E_RUNTIME'
  | 'E_CODEC_SPEC'
  | 'E_CODEC_INPUT'
  | 'E_CODEC_CORRUPT'
  | 'E_CODEC_NONFINITE'
  | 'E_CODEC_LIMIT'
  | 'E_CODEC_CONTEXT'
  | 'E_PROTOCOL'
  | 'E_CONNECTION'
  | 'E_TIMEOUT'
  | 'E_BUSY';

export class SplitLLMError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    // keep the message on one line: it is printed as is by the CLI and sent on the wire
    super(message.replace(/\s*\n\s*/g, ' '), options);
    this.name = 'SplitLLMError';
    this.code = code;
  }
}

export function isSplitLLMError(e: unknown): e is SplitLLMError {
  return e instanceof SplitLLMError;
}

/** Throws E_SPLIT_RANGE unless `split` is a split of a model with `nLayers` layers (0..nLayers). */
export function checkSplit(split: number, nLayers: number): void {
  if (!Number.isInteger(split) || split < 0 || split > nLayers) {
    throw new SplitLLMError('E_SPLIT_RANGE', `split ${split} is out of range for a model with ${nLayers} layers: use 0..${nLayers}`);
  }
}

/** Throws E_BAD_ARGUMENT unless `cond` holds. */
export function check(cond: unknown, code: ErrorCode, message: string): asserts cond {
  if (!cond) throw new SplitLLMError(code, message);
}

import { SplitLLMError } from '../../shared/errors.js';

/** The typed error `f` throws; any other outcome fails the test. */
export function userErrorOf(f: () => unknown): SplitLLMError {
  try {
    f();
  } catch (e) {
    if (e instanceof SplitLLMError) return e;
    throw e;
  }
  throw new Error('expected a SplitLLMError');
}

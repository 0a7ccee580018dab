/** Locates ../shared/fixtures (or $SPLITLLM_FIXTURES); suites that need it skip with a visible message. */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe } from 'vitest';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURES = process.env['SPLITLLM_FIXTURES'] ?? resolve(REPO, '..', 'shared', 'fixtures');
export const STORIES_BIN = join(FIXTURES, 'stories260K', 'stories260K.bin');
export const STORIES_TOK = join(FIXTURES, 'stories260K', 'tok512.bin');
export const CORPUS = join(FIXTURES, 'corpus');
export const haveFixtures = existsSync(STORIES_BIN) && existsSync(STORIES_TOK);

/** `describe` that runs only when the shared fixtures are present, and says so when they are not. */
export function describeWithFixtures(name: string, fn: () => void): void {
  if (!haveFixtures) {
    process.stderr.write(`[splitllm tests] SKIPPED "${name}": fixtures not found at ${FIXTURES} (set SPLITLLM_FIXTURES)\n`);
    describe.skip(`${name} (fixtures missing at ${FIXTURES})`, fn);
    return;
  }
  describe(name, fn);
}

export const REFERENCE_TEXT =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.';

import { openModel, type ModelPackage } from '../../models/package.js';
import { STORIES_BIN, STORIES_TOK } from './fixtures.js';

let stories: Promise<ModelPackage> | undefined;
/** stories260K imported in memory (once per test file). */
export function storiesModel(): Promise<ModelPackage> {
  stories ??= openModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  return stories;
}

import { openModel, type ModelPackage } from '../../models/package.js';
import { DEFAULT_MODEL_DIR } from '../../models/default-model.js';
import { STORIES_BIN, STORIES_TOK } from './fixtures.js';

let stories: Promise<ModelPackage> | undefined;
/** stories260K imported in memory (once per test file). */
export function storiesModel(): Promise<ModelPackage> {
  stories ??= openModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  return stories;
}

let defaultPkg: Promise<ModelPackage> | undefined;
/** The project's own trained model, models/default (in every clone: no fixtures needed). */
export function defaultModel(): Promise<ModelPackage> {
  defaultPkg ??= openModel(DEFAULT_MODEL_DIR);
  return defaultPkg;
}

/** The 'tiny' synthetic preset written as a package folder `dir` (seeded), opened from disk: it has a segment cache. */
export async function tinyPackageOnDisk(dir: string, seed: number): Promise<ModelPackage> {
  const { writePackage, ModelPackage: Pkg } = await import('../../models/package.js');
  const { syntheticModel } = await import('../../models/importers/synthetic.js');
  await writePackage(dir, syntheticModel('tiny', seed));
  return Pkg.load(dir);
}

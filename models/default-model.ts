/** Where the project's own trained model lives: models/default at the repository's root. */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// this file runs compiled from dist/models/ and, under vitest, from models/: two depths below the root
const candidates = ['../models/default', '../../models/default'].map((p) => fileURLToPath(new URL(p, import.meta.url)));

export const DEFAULT_MODEL_DIR = candidates.find((d) => existsSync(`${d}/manifest.json`)) ?? candidates[1]!;
/** The default model's draft model (speculative decoding: `--speculate model:models/draft`), beside it. */
export const DEFAULT_DRAFT_DIR = DEFAULT_MODEL_DIR.replace(/default$/, 'draft');
/** The accuracy profile measured for the default model, shipped beside it. */
export const ACCURACY_PROFILE_FILE = 'accuracy-profile.json';
/** where `plan` keeps the accuracy estimate it made for a model without a profile */
export const ACCURACY_ESTIMATE_FILE = 'accuracy-estimate.json';

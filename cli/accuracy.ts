/**
 * An accuracy profile measured (or estimated) on a calibration text, as `profile accuracy` and `plan`
 * (for a model without a profile) make it: the text's windows, the model's calibration, the default
 * codec list without the calibrated ts-tabq where there is no calibration, progress on stderr.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { SplitLLMError } from '../shared/errors.js';
import { pplWindows } from '../models/eval/ppl.js';
import type { ModelPackage } from '../models/package.js';
import { DEFAULT_PROFILE_CODECS, estimateAccuracy, measureAccuracy, type AccuracyData } from '../planner/measure-accuracy.js';
import { accuracyProfile } from '../planner/profiles.js';
import type { AccuracyProfile } from '../planner/types.js';
import { ACCURACY_ESTIMATE_FILE, ACCURACY_PROFILE_FILE } from '../models/default-model.js';
import { calibrationContexts } from './calibration-io.js';
import { modelPath, progress, readJsonFile } from './common.js';

/** Fewest predicted tokens for an accuracy profile: over fewer, ppl changes of a few tenths of a percent are noise. */
export const MIN_PREDICTED = 500;
/** Windows an estimate runs by default (then as many more as it takes to predict MIN_PREDICTED tokens). */
export const ESTIMATE_WINDOWS = 2;
/** Windows a measured profile runs by default. */
const PROFILE_WINDOWS = 60;

export interface AccuracyRequest {
  estimate: boolean;
  bits: number[];
  codecs: string[];
  calibration?: string;
  windows?: number;
  splits?: number[];
  blockSizes?: number[];
  /** no progress lines (--json) */
  quiet?: boolean;
  /** the command named in messages */
  command?: string;
}

export async function accuracyOnText(pkg: ModelPackage, textPath: string, r: AccuracyRequest): Promise<AccuracyData> {
  const say = (m: string) => {
    if (!r.quiet) process.stderr.write(m + '\n');
  };
  const command = r.command ?? 'profile accuracy';
  if (/eval/i.test(textPath)) process.stderr.write(`warning: ${textPath} looks like an evaluation text; profile on calibration data only\n`);
  const all = pplWindows(pkg.tokenizer(), readFileSync(textPath, 'utf8')).map((w) => w.slice(0, pkg.config.maxSeq + 1));
  const predictedIn = (ws: number[][]) => ws.reduce((n, w) => n + w.length - 1, 0);
  let windows: number[][];
  if (r.windows !== undefined) windows = all.slice(0, r.windows);
  else if (r.estimate) {
    // a few windows, and more while they predict too few tokens
    let n = Math.min(ESTIMATE_WINDOWS, all.length);
    while (n < all.length && predictedIn(all.slice(0, n)) < MIN_PREDICTED) n++;
    windows = all.slice(0, n);
  } else windows = all.slice(0, PROFILE_WINDOWS);
  const predicted = predictedIn(windows);
  if (predicted < MIN_PREDICTED) {
    const more = r.windows !== undefined && r.windows < all.length ? ' (or more --windows)' : '';
    throw new SplitLLMError('E_BAD_ARGUMENT', `${textPath} gives ${predicted} predicted tokens in ${windows.length} windows; an accuracy profile needs at least ${MIN_PREDICTED}: use a longer calibration text${more}`);
  }
  const contexts = calibrationContexts({ ...(r.calibration ? { calibration: r.calibration } : {}) }, pkg);
  // the default list's bare 'ts-tabq' (the calibrated codec) is left out for a model without a calibration
  let codecs = r.codecs;
  if (!contexts.calibrated && codecs.includes('ts-tabq') && JSON.stringify(codecs) === JSON.stringify(DEFAULT_PROFILE_CODECS)) {
    codecs = codecs.filter((c) => c !== 'ts-tabq');
    say(`${command}: ${pkg.manifest.name} has no calibration, so the calibrated ts-tabq is left out (run 'splitllm calibrate' first to profile it)`);
  }
  const opts = {
    bits: r.bits,
    codecs,
    contexts,
    ...(r.splits ? { splits: r.splits } : {}),
    ...(r.blockSizes ? { blockSizes: r.blockSizes } : {}),
    onProgress: progress(`${command}: ${r.estimate ? 'estimating' : 'measuring'} (runs of a window through a layer)`, { quiet: r.quiet === true, everyMs: process.stderr.isTTY ? 250 : 15_000 }),
  };
  say(`${command}: ${r.estimate ? 'estimating' : 'measuring'} on ${windows.length} windows (${predicted} predicted tokens) of ${textPath}`);
  if (!r.estimate) return measureAccuracy(pkg, windows, opts);
  const data = await estimateAccuracy(pkg, windows, opts);
  return { ...data, estimate: { ...data.estimate!, text: textIdentity(textPath) } };
}

/** A text file's name and sha256 (an estimate says what it was made on; `plan` reuses one made on the same text). */
export function textIdentity(path: string): { name: string; sha256: string } {
  return { name: basename(path), sha256: createHash('sha256').update(readFileSync(path)).digest('hex') };
}

/**
 * The accuracy profile `plan` and `demo` use: --accuracy-profile, else the model's own, else the estimate
 * kept beside it (made on the same text when --text is given), else one estimated now on --text and kept.
 */
export async function planningAccuracy(pkg: ModelPackage, v: { model?: string; 'accuracy-profile'?: string; text?: string; json: boolean }, command: string): Promise<AccuracyProfile> {
  const named = v['accuracy-profile'];
  if (named) return accuracyProfile(readJsonFile(named, 'accuracy profile'), named, pkg.hash);
  // a package folder holds its profile (a checkpoint file opened directly has no folder of its own)
  const dir = pkg.dir;
  const own = dir ? join(dir, ACCURACY_PROFILE_FILE) : undefined;
  if (own && existsSync(own)) return accuracyProfile(readJsonFile(own, 'accuracy profile'), own, pkg.hash);
  const kept = dir ? join(dir, ACCURACY_ESTIMATE_FILE) : undefined;
  const say = (m: string) => process.stderr.write(`${command}: ${m}\n`);
  if (kept && existsSync(kept)) {
    let prior: AccuracyProfile | undefined;
    try {
      prior = accuracyProfile(readJsonFile(kept, 'accuracy estimate'), kept, pkg.hash);
    } catch (e) {
      if (!(e instanceof SplitLLMError)) throw e;
      say(`${kept} is unusable (${e.message}): estimating again`);
    }
    const text = v.text ? textIdentity(v.text) : undefined;
    if (prior && (!text || prior.estimate?.text?.sha256 === text.sha256)) {
      say(`no accuracy profile: using the estimate in ${kept} (made on ${prior.estimate?.text?.name ?? 'a calibration text'}; 'splitllm profile accuracy' measures every configuration)`);
      return prior;
    }
  }
  if (!v.text) {
    const where = own ? `at ${own}` : `(${modelPath(v)} is not a package folder: 'splitllm import' it to keep profiles beside it)`;
    throw new SplitLLMError('E_FILE_NOT_FOUND', `no accuracy profile for this model ${where}: give --text CALIB.txt and ${command} estimates one (minutes at 1B), or measure one with 'splitllm profile accuracy --text CALIB.txt --out F' and pass --accuracy-profile F`);
  }
  const data = await accuracyOnText(pkg, v.text, { estimate: true, bits: [4, 8, 32], codecs: DEFAULT_PROFILE_CODECS, quiet: v.json, command });
  const file = { format: 'splitllm-profile', kind: 'accuracy', data };
  let wrote = false;
  if (kept) {
    try {
      writeFileSync(kept, JSON.stringify(file, null, 2) + '\n');
      wrote = true;
    } catch (e) {
      say(`cannot keep the estimate in ${kept} (${e instanceof Error ? e.message : String(e)}): the next plan estimates again`);
    }
  }
  const est = data.estimate!;
  say(`no accuracy profile: estimated one in ${est.seconds.toFixed(0)} s on ${est.tokens} tokens of ${v.text} (splits ${est.splits.join(',')} measured, the rest from the front's and the back's changes; 'splitllm profile accuracy' measures every configuration)${wrote ? `, kept in ${kept}` : ''}`);
  return accuracyProfile(file, kept ?? 'the estimate', pkg.hash);
}

/** Reads and writes calibration.json (the statistics and codec choices of 'splitllm calibrate'), next to a package or anywhere. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SplitLLMError } from '../shared/errors.js';
import { CalibrationContexts, parseCalibration, type Calibration } from '../quantization/activations/calibration.js';

export const CALIBRATION_FILE = 'calibration.json';

export function loadCalibration(path: string, modelHash?: string): Calibration {
  if (!existsSync(path)) throw new SplitLLMError('E_FILE_NOT_FOUND', `calibration ${path} does not exist: run 'splitllm calibrate' first`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new SplitLLMError('E_BAD_CONFIG', `${path} is not valid JSON: run 'splitllm calibrate' again`);
  }
  const c = parseCalibration(raw, path);
  if (modelHash && c.model !== modelHash) {
    throw new SplitLLMError('E_BAD_CONFIG', `${path} was made for another model (${c.model.slice(0, 12)}…, this one is ${modelHash.slice(0, 12)}…): calibrate this model`);
  }
  return c;
}

/** The package's calibration, when it has one. */
export function packageCalibration(dir: string | undefined, modelHash: string): Calibration | undefined {
  if (!dir) return undefined;
  const p = join(dir, CALIBRATION_FILE);
  return existsSync(p) ? loadCalibration(p, modelHash) : undefined;
}

export function saveCalibration(path: string, c: Calibration): void {
  writeFileSync(path, JSON.stringify(c, null, 2) + '\n');
}

/** The calibration --calibration names, or the package's; undefined when there is none. */
export function calibrationOf(v: { calibration?: string }, pkg: { dir?: string; hash: string }): Calibration | undefined {
  return v.calibration ? loadCalibration(v.calibration, pkg.hash) : packageCalibration(pkg.dir, pkg.hash);
}

/** The codec contexts of that calibration (empty when there is none). */
export function calibrationContexts(v: { calibration?: string }, pkg: { dir?: string; hash: string }): CalibrationContexts {
  return new CalibrationContexts(calibrationOf(v, pkg));
}

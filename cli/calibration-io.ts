/** calibration.json for the CLI: the file functions (models/calibration-file.ts) and the option that names one. */
import { opt } from './options.js';

export { CALIBRATION_FILE, calibrationContexts, calibrationOf, loadCalibration, packageCalibration, saveCalibration } from '../models/calibration-file.js';

/** Option every command that codes hidden states takes. */
export const calibrationOption = {
  calibration: opt.string({ description: 'calibration file for calibrated codecs (ts-tabq:cal=K)', valueName: 'FILE', defaultText: 'calibration.json in the package' }),
};

/** splitllm command-line entry: dispatches subcommands, prints typed errors on one line. */
import { isSplitLLMError } from '../shared/errors.js';
import { dispatch, firstSentence, type CliCommand } from './options.js';
import { auditCommand } from './commands/audit.js';
import { calibrateCommand } from './commands/calibrate.js';
import { cloudCommand } from './commands/cloud.js';
import { demoCommand } from './commands/demo.js';
import { edgeCommand } from './commands/edge.js';
import { evalCommand } from './commands/eval.js';
import { generateCommand } from './commands/generate.js';
import { importCommand } from './commands/import.js';
import { planCommand } from './commands/plan.js';
import { profileCommand } from './commands/profile.js';
import { quantizeCommand } from './commands/quantize.js';
import { setBuildReporting } from '../models/runtime/segment-cache.js';

const commands: CliCommand[] = [demoCommand, importCommand, generateCommand, evalCommand, calibrateCommand, quantizeCommand, cloudCommand, edgeCommand, profileCommand, planCommand, auditCommand];

function mainHelp(): string {
  return [
    'usage: splitllm <command> [options]',
    '',
    'Runs a language model split between an edge device and a cloud server.',
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(12)} ${firstSentence(c.summary)}`),
    '',
    'examples:',
    '  splitllm demo',
    '  splitllm cloud --port 8080 &',
    '  splitllm edge --cloud ws://127.0.0.1:8080 --split 2 --prompt "ROMEO:"',
    '',
    "Run 'splitllm <command> --help' for a command's options.",
  ].join('\n');
}

/**
 * A message as one line a terminal shows as text: control characters (C0, DEL, C1 — a terminal's escape
 * sequences, line breaks) written as \xNN. Messages carry text from outside (a cloud's error, a file's
 * contents): an escape sequence must not reach the terminal.
 */
export function printable(message: string): string {
  return message.replace(/[\u0000-\u001f\u007f-\u009f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Exit codes: 0 ok, 1 error the user can fix (typed), 2 usage error, 3 no feasible plan, 70 internal error, 130 interrupted. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  // --json output is for scripts: no progress lines beside it
  if (argv.includes('--json')) setBuildReporting(false);
  try {
    if (name === '--help' || name === '-h' || name === 'help') {
      process.stdout.write(mainHelp() + '\n');
      return 0;
    }
    if (name === '--version') {
      process.stdout.write('splitllm 0.1.0\n');
      return 0;
    }
    return await dispatch(commands, name, rest, 'splitllm', mainHelp);
  } catch (e) {
    if (isSplitLLMError(e)) {
      process.stderr.write(`splitllm: error [${e.code}]: ${printable(e.message)}\n`);
      return e.code === 'E_USAGE' ? 2 : 1;
    }
    const err = e instanceof Error ? e : undefined;
    process.stderr.write(`splitllm: internal error: ${printable(err?.message ?? String(e))}\n`);
    if (process.env['SPLITLLM_DEBUG']) process.stderr.write(`${err?.stack}\n`);
    return 70;
  }
}

/** splitllm command-line entry: dispatches subcommands, prints typed errors on one line. */
import { isSplitLLMError } from '../shared/errors.js';
import { runCommand, type Command } from './common.js';
import { calibrateCommand } from './commands/calibrate.js';
import { cloudCommand } from './commands/cloud.js';
import { demoCommand } from './commands/demo.js';
import { edgeCommand } from './commands/edge.js';
import { evalCommand, runEval } from './commands/eval.js';
import { generateCommand } from './commands/generate.js';
import { importCommand } from './commands/import.js';
import { planCommand } from './commands/plan.js';
import { profileCommand, runProfile } from './commands/profile.js';
import { quantizeCommand, runQuantize } from './commands/quantize.js';

const commands: Command[] = [demoCommand, importCommand, generateCommand, evalCommand, calibrateCommand, quantizeCommand, cloudCommand, edgeCommand, profileCommand, planCommand];

function mainHelp(): string {
  return [
    'usage: splitllm <command> [options]',
    '',
    'Runs a language model split between an edge device and a cloud server.',
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(12)} ${c.summary.split('. ')[0]!.replace(/\.$/, '')}`),
    '',
    "Run 'splitllm <command> --help' for a command's options.",
  ].join('\n');
}

/** Exit codes: 0 ok, 1 error the user can fix (typed), 2 usage error, 3 no feasible plan, 70 internal error. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  try {
    if (!name || name === '--help' || name === '-h' || name === 'help') {
      process.stdout.write(mainHelp() + '\n');
      return name ? 0 : 2;
    }
    if (name === '--version') {
      process.stdout.write('splitllm 0.1.0\n');
      return 0;
    }
    if (name === 'eval') return await runEval(rest);
    if (name === 'quantize') return await runQuantize(rest);
    if (name === 'profile') return await runProfile(rest);
    const cmd = commands.find((c) => c.name === name);
    if (!cmd) {
      process.stderr.write(`splitllm: unknown command "${name}": run 'splitllm --help' for the list\n`);
      return 2;
    }
    return await runCommand(cmd, rest);
  } catch (e) {
    if (isSplitLLMError(e)) {
      process.stderr.write(`splitllm: error [${e.code}]: ${e.message}\n`);
      return e.code === 'E_USAGE' ? 2 : 1;
    }
    const err = e as Error;
    process.stderr.write(`splitllm: internal error: ${err?.message ?? String(e)}\n`);
    if (process.env['SPLITLLM_DEBUG']) process.stderr.write(`${err?.stack}\n`);
    return 70;
  }
}

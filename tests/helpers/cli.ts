import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from './fixtures.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI (bin/splitllm.js → dist/) as a user would. */
export function cli(args: string[], opts: { timeoutMs?: number; env?: Record<string, string>; input?: string } = {}): CliResult {
  const r = spawnSync(process.execPath, [join(REPO, 'bin', 'splitllm.js'), ...args], {
    cwd: REPO,
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 120_000,
    env: { ...process.env, ...opts.env },
    input: opts.input,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the built CLI without blocking this process's event loop (for servers the test itself runs). */
export function cliAsync(
  args: string[],
  opts: {
    timeoutMs?: number;
    env?: Record<string, string>;
    onStdout?: (chunk: string, kill: (signal: NodeJS.Signals) => void) => void;
    signalAfterMs?: [NodeJS.Signals, number];
    /** sends the signal this resolves with (an event the test waits for, not a timer) */
    signalWhen?: Promise<NodeJS.Signals>;
  } = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(REPO, 'bin', 'splitllm.js'), ...args], { cwd: REPO, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      opts.onStdout?.(d.toString(), (sig) => child.kill(sig));
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    if (opts.signalAfterMs) setTimeout(() => child.kill(opts.signalAfterMs![0]), opts.signalAfterMs[1]);
    void opts.signalWhen?.then((sig) => child.exitCode === null && child.kill(sig));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/**
 * The thread policy of onnxruntime sessions (models/runtime/threads.ts): pool sizes from the cores this
 * process may use (affinity set by taskset), the option > $SPLITLLM_THREADS > cores precedence, and the
 * spinning modes as onnxruntime session config entries.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { spinConfig, threadPolicy, usableCores } from '../models/runtime/threads.js';
import { REPO } from './helpers/fixtures.js';

const haveTaskset = spawnSync('sh', ['-c', 'command -v taskset'], { encoding: 'utf8' }).status === 0;
if (!haveTaskset) process.stderr.write('[splitllm tests] SKIPPED "usable cores under taskset": taskset not on PATH\n');

describe('thread policy', () => {
  it('sizes pools from the cores the process may use: taskset -c 0 gives 1', () => {
    expect(usableCores()).toBeGreaterThanOrEqual(1);
    if (!haveTaskset) return;
    const script = `import { usableCores } from ${JSON.stringify(join(REPO, 'dist', 'models', 'runtime', 'threads.js'))}; console.log(usableCores());`;
    const r = spawnSync('taskset', ['-c', '0', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('1');
  });

  it('the option wins over $SPLITLLM_THREADS, which wins over the cores; $SPLITLLM_SPIN overrides the mode, unknown values are ignored', () => {
    const cores = usableCores();
    expect(threadPolicy(undefined, 'turns', {})).toEqual({ intraOpThreads: cores, spin: 'turns', source: 'cores' });
    expect(threadPolicy(undefined, 'turns', { SPLITLLM_THREADS: '3' })).toEqual({ intraOpThreads: 3, spin: 'turns', source: 'env' });
    expect(threadPolicy(2, 'alone', { SPLITLLM_THREADS: '3' })).toEqual({ intraOpThreads: 2, spin: 'alone', source: 'option' });
    for (const bad of ['0', '-1', '1.5', 'lots']) expect(threadPolicy(undefined, 'turns', { SPLITLLM_THREADS: bad }).source, bad).toBe('cores');
    expect(threadPolicy(1, 'alone', { SPLITLLM_SPIN: 'off' }).spin).toBe('off');
    expect(threadPolicy(1, 'turns', { SPLITLLM_SPIN: 'alone' }).spin).toBe('alone');
    expect(threadPolicy(1, 'turns', { SPLITLLM_SPIN: 'yes' }).spin).toBe('turns');
  });

  it('spinning modes map to onnxruntime config entries: turns spins within a run and stops when it returns', () => {
    expect(spinConfig('turns')).toEqual({ session: { intra_op: { allow_spinning: '1' }, inter_op: { allow_spinning: '0' }, force_spinning_stop: '1' } });
    expect(spinConfig('alone')).toEqual({ session: { intra_op: { allow_spinning: '1' }, inter_op: { allow_spinning: '0' } } });
    expect(spinConfig('off')).toEqual({ session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } });
  });
});

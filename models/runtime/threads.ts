/**
 * The thread policy of onnxruntime sessions on Node. onnxruntime left to itself sizes its intra-op pool
 * from the machine's cores (not the ones this process may use), may pin workers to cores outside the
 * process's affinity, and keeps idle workers spinning — which, when sessions take turns (edge and cloud
 * in one process, a cloud serving many sessions, an edge waiting on the network), burns the cores the
 * other session needs. So every session gets an explicit pool size (from the option, else
 * $SPLITLLM_THREADS, else the cores this process may use) and a spinning mode:
 *   - `turns` (the default): workers spin within a run (cheap hand-offs between its ops) and stop when
 *     the run returns (onnxruntime's session.force_spinning_stop), so the next session gets the cores;
 *   - `alone`: workers keep spinning between runs — a whole-model `generate`, the only session there is;
 *   - `off`: workers never spin (every op pays a wake-up).
 * $SPLITLLM_SPIN=alone|turns|off overrides the owner's choice.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { SpinMode } from './backend.js';

/** CPUs the cgroup quota allows (cgroup v2 cpu.max, else v1 cfs quota/period), or undefined when unlimited. */
function cgroupCpus(): number | undefined {
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  const v2 = read('/sys/fs/cgroup/cpu.max');
  if (v2) {
    const [quota, period] = v2.split(/\s+/);
    if (quota && quota !== 'max' && Number(period) > 0) return Number(quota) / Number(period);
    return undefined;
  }
  const q = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'));
  const p = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us'));
  return q > 0 && p > 0 ? q / p : undefined;
}

/** The cores this process may use: its CPU affinity (what `taskset` sets), capped by a cgroup CPU quota (containers). */
export function usableCores(): number {
  const affinity = availableParallelism();
  const quota = cgroupCpus();
  return Math.max(1, Math.min(affinity, quota === undefined ? affinity : Math.ceil(quota)));
}

const SPIN_MODES: readonly SpinMode[] = ['alone', 'turns', 'off'];

export interface ThreadPolicy {
  intraOpThreads: number;
  spin: SpinMode;
  /** where the thread count came from */
  source: 'option' | 'env' | 'cores';
}

/** The pool size and spinning of a session: `threads` if given, else $SPLITLLM_THREADS, else the usable cores. */
export function threadPolicy(threads?: number, mode: SpinMode = 'turns', env: NodeJS.ProcessEnv = process.env): ThreadPolicy {
  const asked = SPIN_MODES.find((m) => m === env['SPLITLLM_SPIN']);
  const spin = asked ?? mode;
  if (threads !== undefined && Number.isInteger(threads) && threads > 0) return { intraOpThreads: threads, spin, source: 'option' };
  const fromEnv = Number(env['SPLITLLM_THREADS']);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return { intraOpThreads: fromEnv, spin, source: 'env' };
  return { intraOpThreads: usableCores(), spin, source: 'cores' };
}

/** onnxruntime session config entries (SessionOptions.extra) for a spinning mode. */
export function spinConfig(spin: SpinMode): { session: Record<string, unknown> } {
  return {
    session: {
      intra_op: { allow_spinning: spin === 'off' ? '0' : '1' },
      inter_op: { allow_spinning: '0' },
      ...(spin === 'turns' ? { force_spinning_stop: '1' } : {}),
    },
  };
}

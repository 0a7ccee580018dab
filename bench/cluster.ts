/**
 * A scale-out cluster on loopback, as deploy/ describes it: N `splitllm cloud` processes (the CLI, as
 * an operator runs it) behind a real HAProxy running the repository's deploy/haproxy/haproxy.cfg, its
 * addresses filled in through the environment. Used by the HAProxy test and by bench/scale-out. Each
 * replica's JSON log lines are parsed as they come, so a caller can tell which replica holds a session.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest folder above this file with a package.json (from the sources and from dist/). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}
const ROOT = repoRoot();
export const HAPROXY_CFG = join(ROOT, 'deploy', 'haproxy', 'haproxy.cfg');

/** The haproxy binary (on PATH, or Debian's /usr/sbin/haproxy), or undefined (the caller skips with a visible message). */
export function findHaproxy(): string | undefined {
  const r = spawnSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8' });
  const path = r.stdout.trim();
  if (r.status === 0 && path) return path;
  return existsSync('/usr/sbin/haproxy') ? '/usr/sbin/haproxy' : undefined;
}

/** A free TCP port on loopback (bound, then released). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

export type LogLine = Record<string, unknown>;

export interface Replica {
  name: string;
  /** http://127.0.0.1:PORT */
  http: string;
  port: number;
  child: ChildProcess;
  /** every JSON log line so far */
  logs: LogLine[];
  exited: Promise<number | null>;
  /** the Prometheus text of /metrics */
  metrics(): Promise<string>;
}

/** Starts `splitllm cloud` on a given port with JSON logs; resolves once it prints its address. */
export async function startReplica(name: string, port: number, args: string[] = [], env: Record<string, string> = {}): Promise<Replica> {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'splitllm.js'), 'cloud', '--port', String(port), '--json', '--log-level', 'info', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogLine[] = [];
  let partial = '';
  child.stderr!.on('data', (d: Buffer) => {
    const text = partial + d.toString();
    const lines = text.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) {
      if (!l.startsWith('{')) continue;
      try {
        logs.push(JSON.parse(l) as LogLine);
      } catch {
        // a line that is not JSON (a human message) is not a log record
      }
    }
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let out = '';
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`replica ${name} did not start within 60 s`)), 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) {
        clearTimeout(timer);
        res();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      rej(new Error(`replica ${name} exited with ${code} before it listened`));
    });
  });
  const http = `http://127.0.0.1:${port}`;
  return { name, http, port, child, logs, exited, metrics: async () => (await fetch(`${http}/metrics`)).text() };
}

export interface Balancer {
  /** ws://127.0.0.1:PORT/v1/session */
  url: string;
  child: ChildProcess;
  stderr: () => string;
  stop(): Promise<void>;
}

/** Runs HAProxy with deploy/haproxy/haproxy.cfg, the three server addresses and the bind address filled in. */
export async function startBalancer(haproxy: string, replicaPorts: number[]): Promise<Balancer> {
  if (replicaPorts.length === 0 || replicaPorts.length > 3) throw new Error('the repository config names three servers: give 1 to 3 replica ports');
  const port = await freePort();
  // servers the config names but the run does not use point at a port nobody listens on: checked down, never chosen
  const unused = await freePort();
  const env: Record<string, string> = { SPLITLLM_LB_BIND: `127.0.0.1:${port}` };
  for (let i = 0; i < 3; i++) env[`SPLITLLM_CLOUD${i + 1}`] = `127.0.0.1:${replicaPorts[i] ?? unused}`;
  const check = spawnSync(haproxy, ['-c', '-q', '-f', HAPROXY_CFG], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`haproxy -c refused ${HAPROXY_CFG}: ${check.stderr}`);
  // -db: stay in the foreground
  const child = spawn(haproxy, ['-db', '-f', HAPROXY_CFG], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-200_000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  // ready once it answers on its port (the health checks of the replicas start with it)
  for (let i = 0; ; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/livez`);
      break;
    } catch {
      if (i > 100 || child.exitCode !== null) throw new Error(`haproxy did not start: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  // servers the run does not use must be checked down before a session hashes to them (HAProxy says so on stderr)
  for (let i = replicaPorts.length + 1; i <= 3; i++) {
    for (let t = 0; !err.includes(`clouds/cloud${i} is DOWN`); t++) {
      if (t > 200) throw new Error(`haproxy did not mark the unused server cloud${i} down within 10 s: ${err.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url: `ws://127.0.0.1:${port}/v1/session`,
    child,
    stderr: () => err,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Which replica holds each session now: the last replica that logged its open or resume, unless it logged its close after. */
export function holders(replicas: Replica[]): Map<string, Replica> {
  const at = new Map<string, { r: Replica; time: number; closed: boolean }>();
  for (const r of replicas) {
    for (const l of r.logs) {
      const ev = l.event;
      if ((ev !== 'session_open' && ev !== 'session_resume' && ev !== 'session_close') || typeof l.session !== 'string') continue;
      const time = typeof l.time === 'number' ? l.time : 0;
      const prev = at.get(l.session);
      if (!prev || prev.time <= time) at.set(l.session, { r, time, closed: ev === 'session_close' });
    }
  }
  return new Map([...at].filter(([, v]) => !v.closed).map(([s, v]) => [s, v.r]));
}

/** Sessions a replica logged as `event` (session_open, session_resume, …), in order. */
export function logged(r: Replica, event: string): string[] {
  return r.logs.filter((l) => l.event === event && typeof l.session === 'string').map((l) => String(l.session));
}

/** Stops every process of the cluster that still runs. */
export async function stopAll(replicas: Replica[], balancer?: Balancer): Promise<void> {
  for (const r of replicas) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  await Promise.all(replicas.map((r) => r.exited));
  await balancer?.stop();
}

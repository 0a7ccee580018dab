/**
 * Scale-out behind a real balancer: three `splitllm cloud` replicas behind HAProxy running the
 * repository's deploy/haproxy/haproxy.cfg on loopback, 12 edge sessions through it. Every connection of
 * a session reaches the replica that holds it (the replicas' metrics and logs); SIGKILL of the replica
 * holding the most sessions, mid-generation, and SIGTERM (drain) of another: every session finishes with
 * exactly the tokens of local greedy generation, and no error reaches any client.
 */
import { describe, expect, it } from 'vitest';
import { findHaproxy, freePort, holders, logged, startBalancer, startReplica, stopAll, type Balancer, type Replica } from '../bench/cluster.js';
import { runEdge, type EdgeStats } from '../edge/agent.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import type { FrameChannel } from '../shared/transport/channel.js';
import { droppingConnector, withSend } from './helpers/channels.js';
import { defaultModel } from './helpers/models.js';

const haproxy = findHaproxy();
if (!haproxy) process.stderr.write('[splitllm tests] SKIPPED "deploy: HAProxy": no haproxy on PATH (apt-get install -y haproxy; .ci/run installs it)\n');
const describeWithHaproxy = haproxy ? describe : describe.skip;

const PROMPTS = [
  'Once upon a time',
  'The little dog',
  'One day, a girl named Lily',
  'Tom and Sam went to the park',
  'The sun was shining',
  'A big red ball',
  'Mom said',
  'The cat sat on',
  'There was a tree',
  'Ben liked to play',
  'The bird flew',
  'In the morning',
];
const TOKENS = 96;

/** A connector whose frames to the cloud leave `delayMs` late (a slow link): the generation lasts long enough to be cut mid-way. */
function slowed(inner: (session?: string) => Promise<FrameChannel>, delayMs: number): (session?: string) => Promise<FrameChannel> {
  return async (session) => {
    const ch = await inner(session);
    return withSend(ch, (frame) => void setTimeout(() => ch.send(frame), delayMs));
  };
}

const until = async (what: string, cond: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> => {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

const counter = (text: string, name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 'NaN');

describeWithHaproxy('deploy: three replicas behind HAProxy (deploy/haproxy/haproxy.cfg)', () => {
  it('12 sessions: resumes stay on their replica; SIGKILL of one replica and a drain of another mid-generation; every session ends with the local greedy tokens', async () => {
    const pkg = await defaultModel();
    const pipeline = await Pipeline.create(pkg);
    const tok = pkg.tokenizer();
    const local: number[][] = [];
    for (const p of PROMPTS) local.push(await generate(pipeline, tok.encode(p, true), { maxTokens: TOKENS, stopIds: [] }));

    const replicas: Replica[] = [];
    let lb: Balancer | undefined;
    try {
      const ports = [await freePort(), await freePort(), await freePort()];
      // one intra-op thread each: three servers and the edges share two cores
      for (let i = 0; i < 3; i++) replicas.push(await startReplica(`cloud${i + 1}`, ports[i]!, ['--drain-timeout', '300ms', '--idle-ms', '30s'], { SPLITLLM_THREADS: '1' }));
      lb = await startBalancer(haproxy!, ports);
      const url = lb.url;

      // 12 sessions; the even ones drop their own link after 3 and 6 tokens (a resume through the balancer)
      const progress = PROMPTS.map(() => 0);
      const runs = PROMPTS.map((prompt, i) =>
        runEdge(pkg, {
          url,
          split: 2,
          prompt,
          maxTokens: TOKENS,
          stopIds: [],
          connect: slowed(i % 2 === 0 ? droppingConnector(url, [3, 6]) : droppingConnector(url, []), 15),
          onToken: () => void progress[i]!++,
        }).then(
          (r) => ({ ok: true as const, tokens: r.tokens, stats: r.stats }),
          (e: unknown) => ({ ok: false as const, message: e instanceof Error ? e.message : String(e) }),
        ),
      );

      // 1. while every replica lives: the first connection and every resume of a session reach one replica
      await until('every session past 10 tokens', () => progress.every((n) => n >= 10));
      const metrics = await Promise.all(replicas.map((r) => r.metrics()));
      const opened = replicas.map((r) => logged(r, 'session_open'));
      const resumed = replicas.map((r) => logged(r, 'session_resume'));
      expect(opened.flat().sort()).toHaveLength(12);
      expect(new Set(opened.flat()).size).toBe(12);
      for (let i = 0; i < 3; i++) {
        // each resume a replica served was of a session it opened, and its counters agree with its log
        for (const s of resumed[i]!) expect(opened[i], `resume of ${s} on ${replicas[i]!.name}`).toContain(s);
        expect(counter(metrics[i]!, 'splitllm_sessions_total')).toBe(opened[i]!.length);
        expect(counter(metrics[i]!, 'splitllm_resumes_total')).toBe(resumed[i]!.length);
      }
      expect(resumed.flat()).toHaveLength(12); // 6 sessions × 2 drops
      const spread = opened.map((o) => o.length);
      process.stderr.write(`[haproxy] sessions per replica ${JSON.stringify(spread)}, resumes per replica ${JSON.stringify(resumed.map((r) => r.length))}\n`);

      // 2. SIGKILL the replica that holds the most sessions, mid-generation
      const held = holders(replicas);
      const victim = [...replicas].sort((a, b) => [...held.values()].filter((r) => r === b).length - [...held.values()].filter((r) => r === a).length)[0]!;
      const onVictim = [...held].filter(([, r]) => r === victim).map(([s]) => s);
      const killedAt = [...progress];
      victim.child.kill('SIGKILL');
      await victim.exited;
      process.stderr.write(`[haproxy] SIGKILL ${victim.name} holding ${onVictim.length} sessions at tokens ${JSON.stringify(killedAt)}\n`);

      // 3. once those sessions run elsewhere, drain (SIGTERM) a live replica that holds sessions still generating
      await until('every session past 50 tokens', () => progress.every((n) => n >= Math.min(50, TOKENS)));
      const now = holders(replicas.filter((r) => r !== victim));
      const live = replicas.filter((r) => r !== victim);
      const drained = [...live].sort((a, b) => [...now.values()].filter((r) => r === b).length - [...now.values()].filter((r) => r === a).length)[0]!;
      const onDrained = [...now].filter(([, r]) => r === drained).map(([s]) => s);
      drained.child.kill('SIGTERM');
      expect(await drained.exited).toBe(0);
      process.stderr.write(`[haproxy] SIGTERM ${drained.name} holding ${onDrained.length} sessions: exited 0\n`);

      const outcomes = await Promise.all(runs);
      const errors = outcomes.filter((o) => !o.ok);
      expect(errors, JSON.stringify(errors)).toEqual([]);
      const stats: EdgeStats[] = [];
      outcomes.forEach((o, i) => {
        if (!o.ok) return;
        expect(o.tokens, `session ${i} (${PROMPTS[i]})`).toEqual(local[i]);
        stats.push(o.stats);
      });
      const failovers = stats.reduce((n, s) => n + s.failovers, 0);
      const replayed = stats.reduce((n, s) => n + s.replayedPositions, 0);
      const events = stats.flatMap((s) => s.failoverEvents);
      expect(failovers).toBeGreaterThanOrEqual(onVictim.length);
      expect(events).toHaveLength(failovers);
      const ms = events.map((e) => e.ms).sort((a, b) => a - b);
      process.stderr.write(
        `[haproxy] 12/12 sessions equal local greedy generation; failovers ${failovers}, replayed positions ${replayed}, resumes ${stats.reduce((n, s) => n + s.resumes, 0)}; ` +
          `failover round ms min ${ms[0]?.toFixed(0)} median ${ms[Math.floor(ms.length / 2)]?.toFixed(0)} max ${ms[ms.length - 1]?.toFixed(0)}; events ${JSON.stringify(events.map((e) => [e.atToken, e.replayed, Math.round(e.ms)]))}\n`,
      );
      // the survivor served what the other two left
      const survivor = live.find((r) => r !== drained)!;
      expect(logged(survivor, 'session_open').length).toBeGreaterThan(opened[replicas.indexOf(survivor)]!.length);
    } finally {
      await stopAll(replicas, lb);
    }
  }, 180_000);
});

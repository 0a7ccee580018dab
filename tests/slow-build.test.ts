/**
 * Builds that take long (a back half of a 0.5B model takes minutes on 2 cores), simulated with the test
 * hook $SPLITLLM_TEST_SLOW_BUILD_MS on a tiny package: the cloud builds off the event loop (a worker
 * thread) and its hello timer stops when the hello comes, so the session that asked completes while
 * /healthz answers and SIGTERM is heard; the edge builds its front before it connects. The hello timeout
 * is shortened below the build's delay instead of the build lengthened past 10 s: the same order of
 * events, in less time.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tinyPackageOnDisk } from './helpers/models.js';
import { afterAll, expect, it } from 'vitest';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { cliAsync } from './helpers/cli.js';
import { REPO } from './helpers/fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-slowbuild-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const tinyPackage = (name: string): Promise<ModelPackage> => tinyPackageOnDisk(join(tmp, name), 21);

/** A cloud process on the package, its stderr (JSON log lines) collected, the url once it listens. */
async function cloudProcess(dir: string, env: Record<string, string>, args: string[] = []) {
  const child = spawn(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'cloud', '--model', dir, '--port', '0', '--json', '--hello-timeout', '1s', '--log-level', 'info', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  while (!out.includes('\n')) {
    if (child.exitCode !== null) throw new Error(`cloud exited: ${err}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  const url = (JSON.parse(out) as { url: string }).url;
  return { child, url, exited, err: () => err, http: url.replace('ws', 'http').replace('/v1/session', '') };
}

const until = async (what: () => boolean): Promise<void> => {
  while (!what()) await new Promise((r) => setTimeout(r, 25));
};

it('a cloud whose back build outlasts the hello timeout completes the session that asked, answering /healthz meanwhile', async () => {
  const pkg = await tinyPackage('cloud');
  const local = await generate(await Pipeline.create(ModelPackage.fromImported(syntheticModel('tiny', 21))), [1, 40, 41, 42], { maxTokens: 12, stopIds: [] });
  const cloud = await cloudProcess(pkg.dir!, { SPLITLLM_TEST_SLOW_BUILD_MS: '3000' });
  try {
    const run = runEdge(pkg, { url: cloud.url, split: 2, promptIds: [1, 40, 41, 42], prompt: '', maxTokens: 12, stopIds: [] });
    // the build has started (and is 3 s from done; the hello timeout is 1 s): the server still answers
    await until(() => cloud.err().includes('"event":"segment_build"'));
    const health = await fetch(`${cloud.http}/healthz`);
    expect(health.status).toBe(200);
    const r = await run;
    expect(r.tokens).toEqual(local);
    expect(cloud.err()).not.toMatch(/hello_timeout/);
  } finally {
    cloud.child.kill('SIGTERM');
    expect(await cloud.exited).toBe(0);
  }
});

it('a cloud building a back segment stops on SIGTERM without finishing the build', async () => {
  const pkg = await tinyPackage('sigterm');
  const cloud = await cloudProcess(pkg.dir!, { SPLITLLM_TEST_SLOW_BUILD_MS: '600000' }, ['--drain-timeout', '1s']);
  const run = runEdge(pkg, { url: cloud.url, split: 2, promptIds: [1, 40], prompt: '', maxTokens: 4, stopIds: [], retryWindowMs: 0 }).catch((e: unknown) => e);
  await until(() => cloud.err().includes('"event":"segment_build"'));
  expect((await fetch(`${cloud.http}/healthz`)).status).toBe(200);
  cloud.child.kill('SIGTERM');
  expect(await cloud.exited).toBe(0);
  expect(await run).toBeInstanceOf(Error);
  // the waiting hello counts as an idle connection closed, not as a session that finished or moved
  expect(cloud.err()).toMatch(/stopped: 0 session\(s\) finished, 0 told to move, 1 idle connection\(s\) closed/);
  expect(cloud.err()).not.toMatch(/"code":"internal"/);
  // the back build never finished: the package's segment cache holds the edge's front [0, 2) alone
  const segments = join(pkg.dir!, 'segments');
  const ranges = readdirSync(segments)
    .filter((n) => !n.startsWith('.'))
    .map((n) => JSON.parse(readFileSync(join(segments, n, 'entry.json'), 'utf8')) as { from: number; to: number })
    .map((e) => `${e.from}-${e.to}`);
  expect(ranges).toEqual(['0-2']);
});

it('an edge whose front build outlasts the cloud hello timeout builds before it connects and completes', async () => {
  const pkg = await tinyPackage('edge');
  const local = await generate(await Pipeline.create(ModelPackage.fromImported(syntheticModel('tiny', 21))), [1, 40, 41, 42], { maxTokens: 12, stopIds: [] });
  const cloud = await startCloud(pkg, { port: 0, helloTimeoutMs: 1000 });
  try {
    const r = await cliAsync(['edge', '--model', pkg.dir!, '--cloud', cloud.url, '--split', '2', '--prompt-ids', '1,40,41,42', '--max-tokens', '12', '--json'], {
      env: { SPLITLLM_TEST_SLOW_BUILD_MS: '3000', SPLITLLM_SEGMENT_CACHE: 'off' },
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toEqual(local);
  } finally {
    await cloud.close();
  }
});

it('a back build that fails answers the session that asked with the error, and the server keeps serving', async () => {
  const pkg = await tinyPackage('fails');
  const cloud = await cloudProcess(pkg.dir!, {});
  try {
    // the worker opens the package again: without its manifest it cannot
    const { renameSync } = await import('node:fs');
    renameSync(join(pkg.dir!, 'manifest.json'), join(pkg.dir!, 'manifest.json.away'));
    const failed = await runEdge(pkg, { url: cloud.url, split: 2, promptIds: [1, 40], prompt: '', maxTokens: 4, stopIds: [], retryWindowMs: 0 }).catch((e: unknown) => e);
    expect(String(failed)).toMatch(/has no manifest\.json: it is not a splitllm model package/);
    expect((await fetch(`${cloud.http}/healthz`)).status).toBe(200);
    // with the file back, the next session builds and completes
    renameSync(join(pkg.dir!, 'manifest.json.away'), join(pkg.dir!, 'manifest.json'));
    const r = await runEdge(pkg, { url: cloud.url, split: 2, promptIds: [1, 40], prompt: '', maxTokens: 4, stopIds: [] });
    expect(r.tokens).toHaveLength(4);
    expect(cloud.child.exitCode).toBeNull();
  } finally {
    cloud.child.kill('SIGTERM');
    expect(await cloud.exited).toBe(0);
  }
});

it('browser-edge segment builds run one at a time with 4 waiting: 7 concurrent requests for unbuilt segments get 5 built and 2 refused with 503 busy, and /healthz answers meanwhile', async () => {
  const pkg = await tinyPackage('web-queue');
  const cloud = await cloudProcess(pkg.dir!, { SPLITLLM_TEST_SLOW_BUILD_MS: '1500' }, ['--web-edge']);
  try {
    const keys = [32, 16, 8, 4].flatMap((bits) => [1, 2].map((split) => `split=${split}&bits=${bits}`)).slice(0, 7);
    const answers = keys.map((q) => fetch(`${cloud.http}/edge/segment?${q}`).then(async (r) => ({ status: r.status, retry: r.headers.get('retry-after'), body: r.status === 200 ? '' : await r.text() })));
    // the refusals come at once, while the first build still runs
    const health = await fetch(`${cloud.http}/healthz`);
    expect(health.status).toBe(200);
    const got = await Promise.all(answers);
    expect(got.filter((a) => a.status === 200)).toHaveLength(5);
    const refused = got.filter((a) => a.status === 503);
    expect(refused).toHaveLength(2);
    for (const r of refused) {
      expect(r.retry).toBe('5');
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'busy', message: expect.stringMatching(/building 5 front segments already: retry in a few seconds/) } });
    }
  } finally {
    cloud.child.kill('SIGTERM');
    await cloud.exited;
  }
});

it('the cloud runs without the package\'s tokenizer: it never reads text (a package copied to the cloud without tokenizer.json serves a session)', async () => {
  const pkg = await tinyPackage('no-tokenizer');
  const local = await generate(await Pipeline.create(pkg), [1, 40], { maxTokens: 4, stopIds: [] });
  const { renameSync } = await import('node:fs');
  renameSync(join(pkg.dir!, 'tokenizer.json'), join(pkg.dir!, 'tokenizer.json.away'));
  const cloud = await cloudProcess(pkg.dir!, {});
  try {
    const r = await runEdge(pkg, { url: cloud.url, split: 2, promptIds: [1, 40], prompt: '', maxTokens: 4, stopIds: [] });
    expect(r.tokens).toEqual(local);
  } finally {
    cloud.child.kill('SIGTERM');
    expect(await cloud.exited).toBe(0);
  }
});

/**
 * A model of the size people deploy, end to end as a user runs it: random bf16 weights in the exact
 * Qwen2.5-0.5B layout (bench/shapes.ts, 24 layers, vocabulary 151,936, 988 MB), imported by the CLI
 * (streamed: the package keeps bf16), then split generation with a 4-bit front and an 8-bit back as two
 * processes (the cloud builds its back in a worker into the package's segment cache, the edge its front),
 * then local generation with the same weights, which loads both segments from the cache and gives the same
 * tokens. Memory and bytes are asserted, never time.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { cliWithPeakRss } from '../bench/common.js';
import { writeShapeModel } from '../bench/shapes.js';
import { cliAsync } from './helpers/cli.js';
import { REPO } from './helpers/fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-scale-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

it('Qwen2.5-0.5B layout: import keeps bf16 in bounded memory; a 4-bit front and 8-bit back as two processes = local generation, from cached segments', async () => {
  const src = join(tmp, 'qwen2.5-0.5b');
  const checkpoint = writeShapeModel('qwen2.5-0.5b', src, { seed: 5 });
  expect(checkpoint).toBe(988_065_536); // the published checkpoint: 988,097,824 bytes with its header
  const pkg = join(tmp, 'pkg');
  const imp = await cliWithPeakRss(['import', src, '--out', pkg, '--json']);
  expect(imp.code, imp.stderr).toBe(0);
  const packageBytes = statSync(join(pkg, 'model.safetensors')).size;
  expect(packageBytes).toBeGreaterThan(checkpoint);
  expect(packageBytes).toBeLessThan(checkpoint * 1.05);
  // a few tensors' worth, not the model (2.15 GB when import widened to float32)
  expect(imp.peakRss).toBeLessThan(600e6);

  const cloud = spawn(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'cloud', '--model', pkg, '--port', '0', '--json', '--log-level', 'warn'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  cloud.stdout.on('data', (d: Buffer) => (out += d.toString()));
  cloud.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => cloud.once('exit', (code) => r(code)));
  try {
    while (!out.includes('\n')) {
      if (cloud.exitCode !== null) throw new Error(`cloud exited: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const url = (JSON.parse(out) as { url: string }).url;
    const weights = ['--split', '12', '--front-bits', '4', '--back-bits', '8'];
    const prompt = ['--prompt', 'The quick brown fox jumps over the lazy dog.', '--max-tokens', '24'];
    const edge = await cliAsync(['edge', '--model', pkg, '--cloud', url, ...weights, ...prompt, '--json'], { timeoutMs: 900_000 });
    expect(edge.code, edge.stderr).toBe(0);
    const split = JSON.parse(edge.stdout) as { tokens: number[]; stats: { bytesUpPerToken: number } };
    expect(split.tokens).toHaveLength(24);
    // both halves were built once, into the package
    const entries = (): string[] => readdirSync(join(pkg, 'segments')).filter((n) => !n.startsWith('.'));
    const ranges = entries().map((n) => (JSON.parse(readFileSync(join(pkg, 'segments', n, 'entry.json'), 'utf8')) as { from: number; to: number; layers: string[] }));
    expect(ranges.map((e) => `${e.from}-${e.to}:${e.layers[0]}`).sort()).toEqual(['0-12:nbits4b32', '12-24:nbits8b32']);
    const local = await cliAsync(['generate', '--model', pkg, ...weights, ...prompt, '--json'], { timeoutMs: 900_000 });
    expect(local.code, local.stderr).toBe(0);
    expect((JSON.parse(local.stdout) as { tokens: number[] }).tokens).toEqual(split.tokens);
    // local generation loaded the same two segments instead of building others
    expect(entries()).toHaveLength(2);
  } finally {
    cloud.kill('SIGTERM');
    expect(await exited).toBe(0);
  }
}, 1_200_000);

/**
 * The segment cache (models/runtime/segment-cache.ts): a package's built segments are written once to
 * its folder as ONNX + external data and loaded from there; corrupt or stale entries are rebuilt; a
 * segment past the size that protobuf holds goes to external data whether or not a folder was given.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tinyPackageOnDisk } from './helpers/models.js';
import { afterAll, describe, expect, it } from 'vitest';
import { syntheticModel } from '../models/importers/synthetic.js';
import { buildSegment } from '../models/onnx/segment.js';
import { linearFor } from '../models/onnx/linear.js';
import { ModelPackage } from '../models/package.js';
import { cachedSegment, segmentCacheDir, type SegmentCacheEvents } from '../models/runtime/segment-cache.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import { maxAbsDiff } from '../shared/tensor.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-segcache-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const tinyPackage = (name: string): Promise<ModelPackage> => tinyPackageOnDisk(join(tmp, name), 9);

function recorder(): SegmentCacheEvents & { log: string[] } {
  const log: string[] = [];
  return { log, hit: (d) => log.push(`hit ${d}`), building: (d) => log.push(`build ${d ?? '(memory)'}`), warn: (m) => log.push(`warn ${m}`) };
}

async function hiddenOf(pkg: ModelPackage, seg: ReturnType<typeof buildSegment>): Promise<Float32Array> {
  const rt = await SegmentRuntime.fromBuilt(pkg.config, seg);
  const out = await rt.run([1, 40, 77, 120, 5], 5);
  rt.release();
  return out.data;
}

describe('the segment cache', () => {
  it('builds a segment once into the package folder, loads it on the next start, and computes the same', async () => {
    const pkg = await tinyPackage('a');
    const ev = recorder();
    const opts = { embed: true, head: false, linearFor: () => linearFor(4, 32) };
    const first = cachedSegment(pkg, 0, 2, opts, ev);
    expect(first.model).toBeUndefined();
    expect(first.modelPath).toMatch(new RegExp(`^${join(pkg.dir!, 'segments')}/[0-9a-f]{32}/segment_0_2\\.onnx$`));
    expect(existsSync(`${first.modelPath}.data`)).toBe(true);
    const second = cachedSegment(pkg, 0, 2, opts, ev);
    expect(second.modelPath).toBe(first.modelPath);
    expect(second.weightBytes).toBe(first.weightBytes);
    expect(ev.log.map((l) => l.split(' ')[0])).toEqual(['build', 'hit']);
    // the cached file computes what a segment built in memory computes
    const inMemory = buildSegment(pkg.config, pkg.weights, 0, 2, opts);
    expect(inMemory.model).toBeDefined();
    expect(maxAbsDiff(await hiddenOf(pkg, second), await hiddenOf(pkg, inMemory))).toBe(0);
    // another precision, another range, another head: other entries
    cachedSegment(pkg, 0, 2, { embed: true, head: false, linearFor: () => linearFor(8, 32) }, ev);
    cachedSegment(pkg, 2, 4, { embed: false, head: true }, ev);
    cachedSegment(pkg, 2, 4, { embed: false, head: true, headLinear: linearFor(8, 32) }, ev);
    expect(readdirSync(join(pkg.dir!, 'segments')).filter((n) => !n.startsWith('.'))).toHaveLength(4);
    // SegmentRuntime.create goes through the cache
    const rt = await SegmentRuntime.create(pkg, 0, 2, opts);
    rt.release();
    expect(rt.segment.modelPath).toBe(first.modelPath);
  });

  it('a corrupt data file, a truncated model or a bad entry is rebuilt with a warning, never run', async () => {
    const pkg = await tinyPackage('b');
    const opts = { embed: true, head: false };
    const seg = cachedSegment(pkg, 0, 3, opts);
    const want = await hiddenOf(pkg, seg);
    const data = `${seg.modelPath!}.data`;
    const bytes = readFileSync(data);
    bytes[bytes.length >> 1]! ^= 0x40;
    writeFileSync(data, bytes);
    let ev = recorder();
    const again = cachedSegment(pkg, 0, 3, opts, ev);
    expect(ev.log[0]).toMatch(/^warn cached segment .* is unusable \(segment_0_3\.onnx\.data does not match its recorded sha256\): rebuilding it$/);
    expect(ev.log[1]).toMatch(/^build /);
    expect(maxAbsDiff(await hiddenOf(pkg, again), want)).toBe(0);
    writeFileSync(again.modelPath!, readFileSync(again.modelPath!).subarray(0, 100));
    ev = recorder();
    cachedSegment(pkg, 0, 3, opts, ev);
    expect(ev.log[0]).toMatch(/segment_0_3\.onnx does not match its recorded sha256/);
    const entry = join(again.modelPath!, '..', 'entry.json');
    writeFileSync(entry, '{"key": 3}');
    ev = recorder();
    const third = cachedSegment(pkg, 0, 3, opts, ev);
    expect(ev.log[0]).toMatch(/unusable \(.*entry\.json: /);
    expect(maxAbsDiff(await hiddenOf(pkg, third), want)).toBe(0);
  });

  it('SPLITLLM_SEGMENT_CACHE=off builds in memory; a folder named there holds the entries by weights hash; models opened in memory are not cached', async () => {
    const pkg = await tinyPackage('c');
    const prev = process.env['SPLITLLM_SEGMENT_CACHE'];
    try {
      process.env['SPLITLLM_SEGMENT_CACHE'] = 'off';
      expect(segmentCacheDir(pkg)).toBeUndefined();
      expect(cachedSegment(pkg, 0, 1, {}).model).toBeDefined();
      const elsewhere = join(tmp, 'elsewhere');
      process.env['SPLITLLM_SEGMENT_CACHE'] = elsewhere;
      expect(segmentCacheDir(pkg)).toBe(join(elsewhere, pkg.hash.slice(0, 16)));
      expect(cachedSegment(pkg, 0, 1, {}).modelPath).toContain(elsewhere);
    } finally {
      if (prev === undefined) delete process.env['SPLITLLM_SEGMENT_CACHE'];
      else process.env['SPLITLLM_SEGMENT_CACHE'] = prev;
    }
    const memory = ModelPackage.fromImported(syntheticModel('tiny', 9));
    expect(segmentCacheDir(memory)).toBeUndefined();
    const ev = recorder();
    expect(cachedSegment(memory, 0, 1, {}, ev).model).toBeDefined();
    expect(ev.log).toEqual(['build (memory)']);
  });

  it('past the inline limit a segment built without a folder goes to external data in a temporary folder, removed once loaded', async () => {
    const pkg = ModelPackage.fromImported(syntheticModel('tiny', 9));
    const inline = buildSegment(pkg.config, pkg.weights, 0, 2, { embed: true, head: false });
    const big = buildSegment(pkg.config, pkg.weights, 0, 2, { embed: true, head: false, externalDataThreshold: 1000 });
    expect(big.model).toBeUndefined();
    const dir = big.temporaryDir!;
    expect(existsSync(`${big.modelPath!}.data`)).toBe(true);
    expect(maxAbsDiff(await hiddenOf(pkg, big), await hiddenOf(pkg, inline))).toBe(0);
    expect(existsSync(dir)).toBe(false);
  });
});

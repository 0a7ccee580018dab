/** Files from disk are parsed at one boundary each: manifest, calibration, profiles, safetensors headers. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ACCURACY_PROFILE_FILE, DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { parseManifest } from '../models/package.js';
import { SafetensorsFile } from '../models/safetensors.js';
import { parseCalibration } from '../quantization/activations/calibration.js';
import { accuracyProfile, computeProfile } from '../planner/profiles.js';
import { userErrorOf } from './helpers/errors.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-files-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const json = (file: string): Record<string, unknown> => JSON.parse(readFileSync(join(DEFAULT_MODEL_DIR, file), 'utf8'));


describe('manifest.json', () => {
  const manifest = json('manifest.json');
  it('the default model parses to the same manifest', () => {
    expect(parseManifest(manifest, 'm')).toEqual(manifest);
  });
  it.each([
    [{ weights: '../../etc/passwd' }, /weights "\.\.\/\.\.\/etc\/passwd" must be a file name inside the package/],
    [{ tokenizer: '/abs/tokenizer.json' }, /tokenizer .* must be a file name/],
    [{ weightsSha256: 'xyz' }, /weightsSha256 must be 64 hex digits/],
    [{ version: 2 }, /is not a version-1 splitllm manifest/],
    [{ name: 7 }, /name must be a string, got 7/],
  ])('refuses %j', (over, message) => {
    const e = userErrorOf(() => parseManifest({ ...manifest, ...over }, 'pkg/manifest.json'));
    expect(e.code).toBe('E_BAD_PACKAGE');
    expect(e.message).toMatch(/^pkg\/manifest\.json: /);
    expect(e.message).toMatch(message);
  });
  it('a config field of the wrong type is E_BAD_CONFIG naming it', () => {
    const config = { ...(manifest['config'] as object), nHeads: 6.5 };
    expect(userErrorOf(() => parseManifest({ ...manifest, config }, 'm')).message).toMatch(/m: nHeads must be an integer, got 6\.5/);
  });
});

describe('calibration.json', () => {
  const cal = json('calibration.json');
  it('the default calibration parses to the same content', () => {
    expect(parseCalibration(cal, 'c')).toEqual(cal);
  });
  it.each([
    [(c: any) => (c.splits['1'].context.center = 'x'), /c\.splits\.1\.context: center must be an array/],
    [(c: any) => (c.splits['1'].stats.topChannels = [[1, 2, 3]]), /topChannels\[0\] must be \[channel, max \|x\|\]/],
    [(c: any) => (c.splits['1'].choice.codec = 5), /choice: codec must be a string/],
    [(c: any) => (c.splits['x1'] = c.splits['1']), /split key "x1" is not a layer index/],
    [(c: any) => (c.splits['1'].context.hist.width = 0), /width must be positive/],
    [(c: any) => (c.format = 'other'), /is not a splitllm calibration file/],
  ])('refuses a broken field (%#)', (edit, message) => {
    const c = structuredClone(cal);
    edit(c);
    const e = userErrorOf(() => parseCalibration(c, 'c'));
    expect(e.code).toBe('E_BAD_CONFIG');
    expect(e.message).toMatch(message);
    expect(e.message).toMatch(/run 'splitllm calibrate' again$/);
  });
});

describe('profiles', () => {
  const acc = json(ACCURACY_PROFILE_FILE);
  const model = (acc['data'] as { model: string }).model;
  it('the default accuracy profile parses to the same tables', () => {
    expect(accuracyProfile(acc, 'a', model)).toEqual({ model, weights: (acc['data'] as any).weights, codecs: (acc['data'] as any).codecs, heads: (acc['data'] as any).heads, embeds: (acc['data'] as any).embeds, speculation: (acc['data'] as any).speculation, blocks: (acc['data'] as any).blocks });
    // the shipped profile has the quantized configurations at blocks 64 and 128 too (the planner chooses the block)
    expect(Object.keys((acc['data'] as any).blocks)).toEqual(['64', '128']);
  });
  it('a speculation entry with an acceptance past 1 or without a proposer is refused', () => {
    const entry = { proposer: 'ngram', acceptance: 0.5, coverage: 0.1, draftMsPerToken: 0 };
    const bad = (e: unknown) => userErrorOf(() => accuracyProfile({ ...acc, data: { ...(acc['data'] as object), speculation: [e] } }, 'a.json', model)).message;
    expect(bad({ ...entry, acceptance: 1.5 })).toMatch(/a\.json: speculation\[0\]: acceptance 1\.5 is outside 0\.\.1/);
    expect(bad({ ...entry, proposer: undefined })).toMatch(/speculation\[0\]: proposer must be/);
    expect(bad('ngram')).toMatch(/speculation\[0\]: must be a map/);
  });
  it('a codec entry without numbers and a compute profile with a string latency are refused', () => {
    const data = { ...(acc['data'] as object), codecs: { '0/fp16': { pplIncrease: 'low' } } };
    expect(userErrorOf(() => accuracyProfile({ ...acc, data }, 'a.json', model)).message).toMatch(/a\.json\.codecs\.0\/fp16: pplIncrease must be a finite number/);
    const compute = { format: 'splitllm-profile', kind: 'compute', data: { model, layerDecodeMs: { '4': 'fast' }, embedMs: 1, headMs: 1, baselineBytes: 0 } };
    expect(userErrorOf(() => computeProfile(compute, 'd.json', model)).message).toMatch(/d\.json\.layerDecodeMs: 4 must be a finite number, got "fast"/);
  });
});

describe('safetensors header', () => {
  function file(header: unknown, body = 16): string {
    const h = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    const p = join(tmp, `t${Math.random().toString(36).slice(2)}.safetensors`);
    writeFileSync(p, Buffer.concat([len, h, Buffer.alloc(body)]));
    return p;
  }
  it('reads a well-formed header and its metadata', () => {
    const t = new SafetensorsFile(file({ __metadata__: { format: 'pt', n: 3 }, a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } }));
    expect(t.info('a').shape).toEqual([2, 2]);
    expect(t.metadata).toEqual({ format: 'pt' });
    t.close();
  });
  it.each([
    [{ a: { dtype: 'F64', shape: [2], data_offsets: [0, 16] } }, /unsupported dtype "F64"/],
    [{ a: { dtype: 'F32', shape: ['2'], data_offsets: [0, 8] } }, /shape\[0\] must be an integer/],
    [{ a: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }, /byte range does not match/],
    [{ a: { dtype: 'F32', shape: [2], data_offsets: [0] } }, /byte range does not match/],
    [[1, 2], /header: must be a JSON object/],
    [{ a: 'x' }, /a must be a map/],
  ])('refuses %j', (header, message) => {
    const e = userErrorOf(() => new SafetensorsFile(file(header)));
    expect(e.code).toBe('E_CHECKPOINT_CORRUPT');
    expect(e.message).toMatch(message);
  });
});

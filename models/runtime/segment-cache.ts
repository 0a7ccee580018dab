/**
 * Segments built once, kept on disk: a built segment of a package (its layer range, its inputs and
 * outputs, every layer's emitter, the head's and the embedding's precision, the package's weights hash,
 * and a fingerprint of the code that builds segments) is written to `<package>/segments/<key>/` as an
 * ONNX model and its external data — streamed there as it is built, so a segment of any size is made
 * holding one tensor at a time and no command stops at protobuf's 2 GB — and every later start loads that
 * file instead of building again. Each entry records the sha256 of its files; an entry whose files do not
 * match (a crash mid-write, a disk error, an edit) is removed and rebuilt, never run.
 *
 * Where: `$SPLITLLM_SEGMENT_CACHE` names a folder (entries go under `<folder>/<weights hash>/`) or `off`;
 * by default the package's own folder, else (a read-only package) `$XDG_CACHE_HOME/splitllm/segments`
 * (`~/.cache/...`). Models opened in memory (a llama2.c .bin, a Hugging Face folder not imported, an ONNX
 * export) are not cached: `splitllm import` them. Bound: `$SPLITLLM_SEGMENT_CACHE_MAX` bytes per cache
 * folder (default 32 GiB); past it the least recently used entries go.
 */
import { createHash } from 'node:crypto';
import { accessSync, closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SplitLLMError } from '../../shared/errors.js';
import { Fields, failWith } from '../../shared/fields.js';
import { buildSegment, float32Linear, segmentIO, type BuiltSegment, type SegmentOptions } from '../onnx/segment.js';
import type { ModelPackage } from '../package.js';

const ENTRY_FILE = 'entry.json';
/** the entry format; the code that builds segments is fingerprinted separately */
const ENTRY_VERSION = 1;
const DEFAULT_MAX_BYTES = 32 * 1024 ** 3;

export interface SegmentCacheEvents {
  /** a cached segment was loaded (its folder) */
  hit?(dir: string): void;
  /** a segment is being built (to be cached in `dir`, or not cached: undefined) */
  building?(dir: string | undefined): void;
  /** a build's progress: layers emitted of the segment's (told after each) */
  progress?(done: number, total: number, what: string): void;
  /** something about the cache the user should know (a stale or corrupt entry, an unwritable folder) */
  warn?(message: string): void;
}

let reportBuilds = true;
/** Whether the default events print build progress (a command's --json turns it off; warnings stay). */
export function setBuildReporting(on: boolean): void {
  reportBuilds = on;
}

/**
 * Warnings and build progress on stderr: every few seconds (in place on a terminal) the layers done
 * with an estimate of the rest. A library user passes events of their own.
 */
export const defaultCacheEvents: SegmentCacheEvents = {
  warn: (m) => process.stderr.write(`splitllm: warning: ${m}\n`),
  progress: (() => {
    let t0 = 0;
    let last = 0;
    let shown = false;
    return (done: number, total: number, what: string) => {
      if (!reportBuilds) return;
      const now = Date.now();
      if (done <= 1) {
        t0 = now;
        shown = false;
      }
      const secs = (now - t0) / 1000;
      // a build of a couple of seconds says nothing; a longer one says how far it is, and when it is done
      if (secs < 2 && !shown) return;
      const tty = process.stderr.isTTY === true;
      if (done < total && shown && now - last < (tty ? 250 : 5000)) return;
      last = now;
      shown = true;
      const eta = done > 1 && done < total && secs >= 1 ? `, ~${Math.ceil((secs * (total - done)) / (done - 1))} s left` : '';
      const line = `building ${what}: layer ${done}/${total} (${secs.toFixed(1)} s${eta})`;
      process.stderr.write(tty ? `\r\x1b[K${line}${done >= total ? '\n' : ''}` : `${line}\n`);
    };
  })(),
};

/** Removes a temporary segment folder once its files are loaded. */
export function removeTemporary(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

let fingerprint: string | undefined;
/**
 * sha256 over the compiled code that decides what a segment holds (the segment builder and its emitters,
 * the quantizers, the decoder layout and RoPE): a change to any of it makes every cached segment stale.
 */
export function builderFingerprint(): string {
  if (fingerprint) return fingerprint;
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const h = createHash('sha256');
  for (const dir of ['models/onnx', 'models/weights', 'quantization/weights', 'shared']) {
    const full = join(root, dir);
    if (!existsSync(full)) continue;
    // compiled JavaScript, or the TypeScript sources where a test runner runs them
    for (const f of readdirSync(full).filter((n) => /\.(js|ts)$/.test(n) && !n.endsWith('.d.ts')).sort()) h.update(`${dir}/${f}\0`).update(readFileSync(join(full, f)));
  }
  fingerprint = h.digest('hex').slice(0, 16);
  return fingerprint;
}

/** What identifies a built segment: everything that changes its bytes. */
export function segmentKeyFields(pkg: ModelPackage, from: number, to: number, opts: SegmentOptions): Record<string, unknown> {
  const io = segmentIO(pkg.config, from, to, opts);
  const linearFor = opts.linearFor ?? (() => float32Linear);
  const layers: string[] = [];
  for (let i = from; i < to; i++) layers.push(linearFor(i).id);
  return {
    version: ENTRY_VERSION,
    builder: builderFingerprint(),
    weights: pkg.hash,
    from,
    to,
    embed: io.first,
    head: io.last,
    attention: io.attention,
    keyPositions: io.keyPositions,
    embedBits: io.first ? (opts.embedBits ?? 32) : null,
    embedAsStored: io.first ? opts.embedAsStored !== false : null,
    headLinear: io.last ? (opts.headLinear ?? float32Linear).id : null,
    layers,
  };
}

/** The folder a package's segments are cached in (undefined: not cached). */
export function segmentCacheDir(pkg: ModelPackage, events: SegmentCacheEvents = {}): string | undefined {
  const env = process.env['SPLITLLM_SEGMENT_CACHE'];
  if (env === 'off' || env === '0') return undefined;
  // only a package on disk has a stable identity worth caching under (and a place to put it)
  if (!pkg.dir || pkg.manifest.graph || !/^[0-9a-f]{64}$/.test(pkg.hash)) return undefined;
  if (env) return join(env, pkg.hash.slice(0, 16));
  const own = join(pkg.dir, 'segments');
  if (writable(pkg.dir) && (!existsSync(own) || writable(own))) return own;
  const base = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  const fallback = join(base, 'splitllm', 'segments', pkg.hash.slice(0, 16));
  events.warn?.(`${pkg.dir} is not writable: caching its segments in ${fallback}`);
  return fallback;
}

function writable(p: string): boolean {
  try {
    accessSync(p, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function sha256OfFile(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(8 << 20);
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

interface Entry {
  key: string;
  /** the model file (its external data file is named inside it) */
  model: string;
  weightBytes: number;
  files: Record<string, string>;
}

function readEntry(dir: string): Entry {
  const where = join(dir, ENTRY_FILE);
  const f = Fields.of(JSON.parse(readFileSync(where, 'utf8')), where, failWith('E_BAD_PACKAGE'), 'a segment cache entry');
  const files = f.map('files');
  const out: Record<string, string> = {};
  for (const k of files.keys()) out[k] = files.str(k, 64);
  const model = f.str('model', 255);
  if (!/^[^/\\]+$/.test(model)) f.fail(`model ${JSON.stringify(model)} must be a file name inside the entry`);
  return { key: f.str('key', 64), model, weightBytes: f.int('weightBytes', 0, Number.MAX_SAFE_INTEGER), files: out };
}

/**
 * A test hook: `$SPLITLLM_TEST_SLOW_BUILD_MS` makes every segment build (not a load from the cache) take
 * that much longer, blocking the thread that builds as a long build does, so that tests can check what
 * a slow build does to sessions, timers and signals without a large model.
 */
export function slowBuildForTests(): void {
  const ms = Number(process.env['SPLITLLM_TEST_SLOW_BUILD_MS'] ?? 0);
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A build's per-layer progress as the events' `progress` (none without one). */
function layerProgress(events: SegmentCacheEvents, from: number, to: number): ((done: number, total: number) => void) | undefined {
  const what = `segment [${from}, ${to})`;
  return events.progress ? (done, total) => events.progress?.(done, total, what) : undefined;
}

/**
 * The segment, loaded from the package's cache when a valid entry is there, else built (into the cache
 * when the package has one; in memory otherwise). The result always names its model by file when cached.
 */
export function cachedSegment(pkg: ModelPackage, from: number, to: number, opts: SegmentOptions = {}, events: SegmentCacheEvents = {}): BuiltSegment {
  // a graph imported from an ONNX export cuts its own segments; an explicit folder is the caller's
  const root = opts.dir || pkg.weights.buildSegment ? undefined : segmentCacheDir(pkg, events);
  const onLayer = layerProgress(events, from, to);
  if (!root) {
    events.building?.(undefined);
    slowBuildForTests();
    return buildSegment(pkg.config, pkg.weights, from, to, { ...opts, ...(onLayer ? { onLayer } : {}) });
  }
  const fields = segmentKeyFields(pkg, from, to, opts);
  const key = createHash('sha256').update(JSON.stringify(fields)).digest('hex').slice(0, 32);
  const dir = join(root, key);
  const io = segmentIO(pkg.config, from, to, opts);
  if (existsSync(dir)) {
    try {
      const e = readEntry(dir);
      if (e.key !== key) throw new Error('its key does not match its folder');
      for (const [file, sha] of Object.entries(e.files)) if (sha256OfFile(join(dir, file)) !== sha) throw new Error(`${file} does not match its recorded sha256`);
      if (!e.files[e.model]) throw new Error(`it records no sha256 of ${e.model}`);
      const now = new Date();
      utimesSync(dir, now, now); // least recently used goes first
      events.hit?.(dir);
      return { ...io, modelPath: join(dir, e.model), weightBytes: e.weightBytes };
    } catch (err) {
      events.warn?.(`cached segment ${dir} is unusable (${err instanceof Error ? err.message : String(err)}): rebuilding it`);
      rmSync(dir, { recursive: true, force: true });
    }
  }
  events.building?.(dir);
  slowBuildForTests();
  mkdirSync(root, { recursive: true });
  const tmp = join(root, `.tmp-${key}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(tmp);
  try {
    const built = buildSegment(pkg.config, pkg.weights, from, to, { ...opts, dir: tmp, externalData: 'always', ...(onLayer ? { onLayer } : {}) });
    const model = built.modelPath ? basename(built.modelPath) : undefined;
    if (!model) throw new Error('the builder wrote no model file');
    const files = built.sha256;
    if (!files || readdirSync(tmp).some((f) => !files[f])) throw new Error('the builder did not say the sha256 of every file it wrote');
    writeFileSync(join(tmp, ENTRY_FILE), JSON.stringify({ key, ...fields, model, weightBytes: built.weightBytes, files, createdAt: new Date().toISOString() }, null, 2) + '\n');
    try {
      renameSync(tmp, dir);
    } catch (err) {
      // another process cached the same segment meanwhile: theirs is as good
      if (!existsSync(join(dir, ENTRY_FILE))) throw err;
      rmSync(tmp, { recursive: true, force: true });
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    const code = err instanceof Error && 'code' in err ? err.code : undefined;
    // a cache that cannot be written is no reason to refuse the model: build in memory (past 2 GB that
    // still needs a temporary folder)
    if (code === 'EACCES' || code === 'EROFS' || (err instanceof SplitLLMError && /^no space left/.test(err.message))) {
      events.warn?.(`cannot cache segment [${from}, ${to}) in ${root} (${err instanceof SplitLLMError ? 'disk full' : String(code)}): building it in memory`);
      return buildSegment(pkg.config, pkg.weights, from, to, opts);
    }
    throw err;
  }
  evict(root, dir);
  const e = readEntry(dir);
  return { ...io, modelPath: join(dir, e.model), weightBytes: e.weightBytes };
}

/**
 * The segment built afresh, kept nowhere once loaded: streamed to a temporary folder as the cache would
 * build it (one tensor held at a time; past protobuf's limit by construction), which the runtime removes
 * once onnxruntime has loaded it. For one-off segments (a layer of an accuracy sweep, a calibration half)
 * that the cache would keep at gigabytes apiece. An ONNX export's graph cuts its own segments in memory.
 */
export function uncachedSegment(pkg: ModelPackage, from: number, to: number, opts: SegmentOptions = {}, events: SegmentCacheEvents = {}): BuiltSegment {
  const onLayer = layerProgress(events, from, to);
  events.building?.(undefined);
  slowBuildForTests();
  if (pkg.weights.buildSegment) return buildSegment(pkg.config, pkg.weights, from, to, { ...opts, ...(onLayer ? { onLayer } : {}) });
  const tmp = mkdtempSync(join(tmpdir(), 'splitllm-segment-'));
  try {
    const built = buildSegment(pkg.config, pkg.weights, from, to, { ...opts, dir: tmp, externalData: 'always', ...(onLayer ? { onLayer } : {}) });
    return { ...built, temporaryDir: tmp };
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Removes the least recently used entries past the cache's byte bound (never `keep`). */
function evict(root: string, keep: string): void {
  const max = Number(process.env['SPLITLLM_SEGMENT_CACHE_MAX'] ?? DEFAULT_MAX_BYTES);
  if (!(max > 0)) return;
  const entries = readdirSync(root)
    .filter((n) => !n.startsWith('.'))
    .map((n) => {
      const d = join(root, n);
      const size = readdirSync(d).reduce((a, f) => a + statSync(join(d, f)).size, 0);
      return { d, size, used: statSync(d).mtimeMs };
    })
    .sort((a, b) => a.used - b.used);
  let total = entries.reduce((a, e) => a + e.size, 0);
  for (const e of entries) {
    if (total <= max) break;
    if (e.d === keep) continue;
    rmSync(e.d, { recursive: true, force: true });
    total -= e.size;
  }
}

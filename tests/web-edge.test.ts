/**
 * The browser edge: `splitllm cloud --web-edge` serves a page that runs the front segment in headless
 * Chromium (onnxruntime-web, WebAssembly) and connects back. Its tokens equal `generate`'s (fp32 codec,
 * every inner split) and the Node edge's (calibrated ts-tabq, 4-bit front); everything it loads comes
 * from the server; a wrong or closed cloud shows its error. Screenshots go to test-results/.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { msgpack } from '../shared/protocol/frame.js';
import type { BuiltSegment } from '../models/onnx/segment.js';
import { SegmentRuntime } from '../models/runtime/segment-runtime.js';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { calibrationContexts } from '../cli/calibration-io.js';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { ModelPackage } from '../models/package.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { linearFor } from '../models/onnx/linear.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { describeWithBrowser, guardRequests, launchBrowser } from './helpers/browser.js';
import { REPO } from './helpers/fixtures.js';
import { defaultModel } from './helpers/models.js';

const SHOTS = join(REPO, 'test-results');
type Result = { tokens: number[]; text: string; stats: { decode: { edgeMs: number } } } | { error: { code: string; message: string } };

describeWithBrowser('the browser edge', () => {
  let pkg: ModelPackage;
  let server: CloudServer;
  let http: string;
  let browser: Browser;
  let context: BrowserContext;
  let requests: { all: string[]; foreign: string[] };

  beforeAll(async () => {
    pkg = await defaultModel();
    server = await startCloud(pkg, { webEdge: true, calibration: calibrationContexts({}, pkg) });
    http = server.url.replace(/^ws/, 'http');
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
    requests = await guardRequests(context, [http, server.url]);
    mkdirSync(SHOTS, { recursive: true });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  /** Runs the page with these query parameters (autorun) and returns window.splitllmResult. */
  async function runPage(params: Record<string, string | number>, page?: Page): Promise<Result> {
    const p = page ?? (await context.newPage());
    const q = new URLSearchParams(Object.entries({ ...params, autorun: 1 }).map(([k, v]) => [k, String(v)]));
    await p.goto(`${http}/edge/?${q}`);
    await p.waitForFunction(() => window.splitllmResult !== undefined, undefined, { timeout: 60_000 });
    const r = (await p.evaluate(() => window.splitllmResult)) as Result;
    if (!page) await p.close();
    return r;
  }

  it('fp32 codec, temperature 0: the page gives generate\'s tokens at every split 1..L−1; it loads only what the server serves', async () => {
    const prompt = 'ROMEO:';
    const ids = pkg.tokenizer().encode(prompt, true);
    const p = await Pipeline.create(pkg);
    const local = await generate(p, ids, { maxTokens: 24, stopIds: [pkg.config.eosId, pkg.config.bosId] });
    await p.release();
    expect(local.length).toBeGreaterThanOrEqual(12); // a comparison of tokens, not of two empty replies
    for (let k = 1; k < pkg.config.nLayers; k++) {
      const r = await runPage({ prompt, maxTokens: 24, split: k, bits: 32, codec: 'fp32', temperature: 0 });
      if ('error' in r) throw new Error(`split ${k}: ${r.error.code}: ${r.error.message}`);
      expect(r.tokens, `split ${k}`).toEqual(local);
    }
    expect(requests.foreign).toEqual([]);
    // TAB-Q's WebAssembly kernels run in the page too, not the TypeScript fallback
    const page = await context.newPage();
    await page.goto(`${http}/edge/`);
    await page.waitForFunction(() => window.splitllmInfo !== undefined);
    expect(await page.evaluate(() => window.splitllmInfo)).toEqual({ codecKernels: 'wasm-simd', inference: 'onnxruntime-web (WebAssembly, 1 thread)' });
    await page.close();
    // the page, its script, whether it needs a token, the model, the segments, onnxruntime-web's wasm and the session: nothing else
    const paths = new Set(requests.all.map((u) => new URL(u).pathname));
    // (a segment from the package's segment cache comes as its graph and, from /edge/segment/data, its weights' file)
    expect([...paths].sort()).toEqual(['/edge/', '/edge/auth', '/edge/edge.js', '/edge/model', '/edge/ort/ort-wasm-simd-threaded.wasm', '/edge/segment', '/edge/segment/data', '/v1/session']);
  }, 180_000);

  it('calibrated ts-tabq with a 4-bit front: the page gives the Node edge\'s tokens with the same options, at every split', async () => {
    // the model ends this speech at once (its first greedy token is EOS): run on past it. onnxruntime-web's 4-bit
    // MatMulNBits rounds otherwise than onnxruntime-node's, and the codec's quantization can turn that into another
    // token once greedy decoding has drifted (here after 20–23 tokens at splits 1, 2 and 4): the first 12 are compared
    const prompt = 'JULIET:\nO Romeo, Romeo!';
    const head = (t: number[]) => t.slice(0, 12);
    for (let k = 1; k < pkg.config.nLayers; k++) {
      const r = await runPage({ prompt, maxTokens: 24, split: k, bits: 4, codec: 'ts-tabq', temperature: 0, stop: 'none' });
      if ('error' in r) throw new Error(`split ${k}: ${r.error.code}: ${r.error.message}`);
      const node = await runEdge(pkg, { url: `${server.url}/v1/session`, split: k, codec: 'ts-tabq', codecEnv: calibrationContexts({}, pkg), prompt, maxTokens: 24, stopIds: [], frontBits: 4, linearFor: () => linearFor(4, 32) });
      expect(node.tokens, `split ${k}`).toHaveLength(24);
      expect(r.tokens, `split ${k}`).toHaveLength(24);
      expect(head(r.tokens), `split ${k}`).toEqual(head(node.tokens));
    }
    // and with the embedding at 4 bits too (plain ONNX ops: onnxruntime-web runs them as Node does)
    const r = await runPage({ prompt, maxTokens: 24, split: 3, bits: 4, embed: 4, codec: 'ts-tabq', temperature: 0, stop: 'none' });
    if ('error' in r) throw new Error(`${r.error.code}: ${r.error.message}`);
    const node = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 3, codec: 'ts-tabq', codecEnv: calibrationContexts({}, pkg), prompt, maxTokens: 24, stopIds: [], frontBits: 4, linearFor: () => linearFor(4, 32), embedBits: 4 });
    expect(node.tokens).toHaveLength(24);
    expect(head(r.tokens)).toEqual(head(node.tokens));
    // and in blocks of 128 (?block=, as a plan's blockSize sets it): the Node edge's tokens at that block, which part
    // from block 32's after 4 tokens on this prompt. fp32 hidden states: with ts-tabq at block 128 the page and the
    // Node edge part at token 2 on this prompt (the codec, calibrated on float fronts, turns the backends' rounding
    // into another greedy token), while at block 32 and with float weights they agree
    const romeo = 'ROMEO:';
    const b128 = await runPage({ prompt: romeo, maxTokens: 24, split: 3, bits: 4, block: 128, codec: 'fp32', temperature: 0, stop: 'none' });
    if ('error' in b128) throw new Error(`${b128.error.code}: ${b128.error.message}`);
    const nodeAt = async (block: number) => (await runEdge(pkg, { url: `${server.url}/v1/session`, split: 3, codec: 'fp32', prompt: romeo, maxTokens: 24, stopIds: [], frontBits: 4, linearFor: () => linearFor(4, block) })).tokens;
    const node128 = await nodeAt(128);
    expect(head(b128.tokens)).toEqual(head(node128));
    expect(head(node128)).not.toEqual(head(await nodeAt(32)));
    expect(requests.foreign).toEqual([]);
  }, 180_000);

  it('mid-generation the page shows the streamed text, the live panel and the chart (screenshot in test-results/)', async () => {
    const page = await context.newPage();
    const q = new URLSearchParams({ prompt: 'ROMEO:', maxTokens: '200', split: '3', bits: '4', codec: 'ts-tabq', temperature: '0', stop: 'none', autorun: '1' });
    await page.goto(`${http}/edge/?${q}`);
    // some tokens in, the generation still running
    await page.waitForFunction(() => (document.getElementById('text')?.textContent ?? '').length > 80, undefined, { timeout: 60_000 });
    const running = await page.evaluate(() => window.splitllmResult === undefined);
    await page.screenshot({ path: join(SHOTS, 'web-edge-mid-generation.png') });
    const panel = await page.locator('#panel').innerText();
    expect(panel).toMatch(/bytes up \/ token\s+\d+ B/);
    expect(panel).toMatch(/edge \/ token\s+[\d.]+ ms/);
    await page.waitForFunction(() => window.splitllmResult !== undefined, undefined, { timeout: 60_000 });
    const r = (await page.evaluate(() => window.splitllmResult)) as Result;
    if ('error' in r) throw new Error(`${r.error.code}: ${r.error.message}`);
    expect(r.tokens.length).toBeGreaterThan(20);
    await page.screenshot({ path: join(SHOTS, 'web-edge-done.png') });
    process.stderr.write(`[web-edge] screenshots: ${join(SHOTS, 'web-edge-mid-generation.png')} (taken ${running ? 'while generating' : 'after the end'}), web-edge-done.png\n`);
    expect(running).toBe(true);
    await page.close();
  }, 120_000);

  it('a cloud with a token: the page sends it (#token=…) on its requests and as a WebSocket subprotocol; without it, or a wrong one, it shows unauthorized', async () => {
    const guarded = await startCloud(pkg, { webEdge: true, token: 's3cret', calibration: calibrationContexts({}, pkg) });
    const origin = guarded.url.replace(/^ws/, 'http');
    const ctx = await browser.newContext();
    const seen = await guardRequests(ctx, [origin, guarded.url]);
    try {
      const open = async (hash: string) => {
        const page = await ctx.newPage();
        await page.goto(`${origin}/edge/?prompt=ROMEO:&maxTokens=8&split=2&codec=fp32&autorun=1${hash}`);
        await page.waitForFunction(() => window.splitllmResult !== undefined, undefined, { timeout: 60_000 });
        const r = (await page.evaluate(() => window.splitllmResult)) as Result;
        const shown = await page.locator('#error').innerText();
        await page.close();
        return { r, shown };
      };
      const ok = await open('#token=s3cret');
      if ('error' in ok.r) throw new Error(`${ok.r.error.code}: ${ok.r.error.message}`);
      expect(ok.r.tokens).toHaveLength(8);
      const none = await open('');
      expect('error' in none.r && none.r.error.code).toBe('unauthorized');
      expect(none.shown).toMatch(/^unauthorized: cloud: unauthorized: this cloud needs its bearer token/);
      const wrong = await open('#token=nope');
      expect('error' in wrong.r && wrong.r.error.code).toBe('unauthorized');
      // the token went in a header and a subprotocol, never in a URL
      expect(seen.all.filter((u) => u.includes('s3cret'))).toEqual([]);
      expect(seen.foreign).toEqual([]);
    } finally {
      await ctx.close();
      await guarded.close();
    }
  }, 90_000);

  it('a page pointed at a cloud serving another model, or at a closed one, shows the error code and message', async () => {
    const other = await startCloud(ModelPackage.fromImported(syntheticModel('tiny', 9)));
    try {
      const page = await context.newPage();
      const r = await runPage({ prompt: 'ROMEO:', maxTokens: 8, split: 2, bits: 32, codec: 'fp32', cloud: `${other.url}/v1/session` }, page);
      expect('error' in r && r.error.code).toBe('bad_model');
      const shown = await page.locator('#error').innerText();
      expect(shown).toMatch(/^bad_model: cloud: bad_model: /);
      await page.close();
    } finally {
      await other.close();
    }
    const closed = `ws://127.0.0.1:${new URL(server.url).port === '1' ? 2 : 1}/v1/session`;
    const page = await context.newPage();
    const r = await runPage({ prompt: 'ROMEO:', maxTokens: 8, split: 2, cloud: closed }, page);
    expect('error' in r && r.error.code).toBe('E_CONNECTION');
    expect(await page.locator('#error').innerText()).toMatch(/E_CONNECTION: cannot reach the cloud at ws:\/\/127\.0\.0\.1:1/);
    await page.close();
  }, 60_000);
});

it('the server refuses what the page must not get: split 0 or past the back, unknown bits, other files; with a token, the model to a request without it', async () => {
  const pkg = await defaultModel();
  const server = await startCloud(pkg, { webEdge: true });
  try {
    const http = server.url.replace(/^ws/, 'http');
    const get = async (p: string) => {
      const res = await fetch(`${http}${p}`);
      return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
    };
    for (const q of ['split=0', `split=${pkg.config.nLayers}`, 'split=2&bits=5', 'split=x', '', 'split=2&embed=6', 'split=2&bits=4&block=48']) {
      const r = await get(`/edge/segment?${q}`);
      expect(r.status, q).toBe(400);
      expect(JSON.parse(r.body).error.message).toMatch(/ask for \/edge\/segment\?split=1\.\.5&bits=2\|3\|4\|8\|16\|32\[&block=16\|32\|64\|128\]\[&embed=8\|4\]/);
    }
    expect((await get('/edge/ort/..%2F..%2Fpackage.json')).status).toBe(404);
    expect((await get('/edge/ort/ort-wasm-simd-threaded.jsep.wasm')).status).toBe(404);
    const ok = await get('/edge/segment?split=2&bits=4');
    expect(ok.status).toBe(200);
    expect(ok.type).toBe('application/msgpack');
    const model = JSON.parse((await get('/edge/model')).body);
    expect(model).toMatchObject({ hash: pkg.hash, name: pkg.manifest.name, config: { nLayers: 6 } });
    expect((await get('/edge/')).type).toMatch(/^text\/html/);
  } finally {
    await server.close();
  }
  // with a token: the page, its script and the .wasm are public; the model and its segments need the token
  const guarded = await startCloud(pkg, { webEdge: true, token: 's3cret' });
  try {
    const base = guarded.url.replace(/^ws/, 'http');
    const status = async (p: string, auth?: string) => (await fetch(`${base}${p}`, auth ? { headers: { authorization: `Bearer ${auth}` } } : {})).status;
    expect(await status('/edge/')).toBe(200);
    expect(await status('/edge/edge.js')).toBe(200);
    expect(await (await fetch(`${base}/edge/auth`)).json()).toEqual({ auth: true });
    expect(await status('/edge/model')).toBe(401);
    expect(await status('/edge/model', 'wrong')).toBe(401);
    expect(await status('/edge/model', 's3cret')).toBe(200);
    expect(await status('/edge/segment?split=2', '')).toBe(401);
    expect(await status('/edge/segment?split=2', 's3cret')).toBe(200);
    expect(await status('/edge/segment/data?split=2', '')).toBe(401);
    expect(await status('/edge/segment/data?split=2', 's3cret')).toBe(200);
  } finally {
    await guarded.close();
  }
  // a plan sets the page's defaults; segments are built into the package's segment cache on disk (here a fresh
  // one) and the bodies of the last few kept (here 2, least recently used out): an evicted body comes back
  // from the disk cache without a build
  const cacheDir = mkdtempSync(join(tmpdir(), 'splitllm-web-cache-'));
  process.env['SPLITLLM_SEGMENT_CACHE'] = cacheDir;
  const planned = await startCloud(pkg, { webEdge: { plan: { split: 2, frontBits: 4, codec: 'int8', blockSize: 128 }, cachedSegments: 2 } });
  try {
    const base = planned.url.replace(/^ws/, 'http');
    const model = (await (await fetch(`${base}/edge/model`)).json()) as { defaults: unknown };
    expect(model.defaults).toEqual({ split: 2, bits: 4, block: 128, codec: 'int8' });
    const cache: string[] = [];
    for (const q of ['1/32', '2/32', '1/32', '3/32', '1/32', '2/32']) {
      const [k, b] = q.split('/');
      const res = await fetch(`${base}/edge/segment?split=${k}&bits=${b}`);
      expect(res.status).toBe(200);
      cache.push(res.headers.get('x-splitllm-segment-cache') ?? '');
    }
    expect(cache).toEqual(['miss', 'miss', 'hit', 'miss', 'hit', 'hit']);
    expect(readdirSync(join(cacheDir, pkg.hash.slice(0, 16))).filter((n) => !n.startsWith('.'))).toHaveLength(3);
    // the weights stream from the entry's file: a 4-bit front in blocks of 128 is another segment than in blocks of
    // 32 (fewer scales, but the default model's 192-wide inputs pad to 256: larger here); a float one is the same at
    // every block
    const data = async (q: string) => {
      const res = await fetch(`${base}/edge/segment/data?${q}`);
      expect(res.status, q).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/octet-stream');
      return (await res.arrayBuffer()).byteLength;
    };
    expect(await data('split=2&bits=4&block=128')).toBeGreaterThan(await data('split=2&bits=4'));
    // the graph and its data, loaded as the page loads them (here by onnxruntime-node), run as the front built here
    const body = msgpack.unpack(new Uint8Array(await (await fetch(`${base}/edge/segment?split=2&bits=4`)).arrayBuffer())) as { model: Uint8Array; externalData: string; io: BuiltSegment };
    expect(body.model.byteLength).toBeLessThan(64 * 1024);
    const served: BuiltSegment = { ...body.io, model: body.model, externalData: [{ path: body.externalData, data: new Uint8Array(await (await fetch(`${base}/edge/segment/data?split=2&bits=4`)).arrayBuffer()) }] };
    const rt = await SegmentRuntime.fromBuilt(pkg.config, served);
    const local = await SegmentRuntime.create(pkg, 0, 2, { embed: true, head: false, linearFor: () => linearFor(4, 32), embedAsStored: false, cache: false });
    const ids = [1, 40, 77, 300, 12];
    expect((await rt.run(ids, ids.length)).data).toEqual((await local.run(ids, ids.length)).data);
    await rt.release();
    await local.release();
    const float = await fetch(`${base}/edge/segment?split=2&bits=32&block=128`);
    await float.arrayBuffer();
    expect((await fetch(`${base}/edge/segment?split=2&bits=32&block=16`)).headers.get('x-splitllm-segment-cache')).toBe('hit');
    // a segment evicted from the disk cache meanwhile: the data route says so and the next ask rebuilds it
    rmSync(join(cacheDir, pkg.hash.slice(0, 16)), { recursive: true, force: true });
    const gone = await fetch(`${base}/edge/segment/data?split=2&bits=4`);
    expect(gone.status).toBe(409);
    expect(((await gone.json()) as { error: { code: string } }).error.code).toBe('conflict');
    expect((await fetch(`${base}/edge/segment?split=2&bits=4`)).headers.get('x-splitllm-segment-cache')).toBe('miss');
    expect(await data('split=2&bits=4')).toBeGreaterThan(0);
  } finally {
    await planned.close();
    delete process.env['SPLITLLM_SEGMENT_CACHE'];
    rmSync(cacheDir, { recursive: true, force: true });
  }
  // without a segment cache the segment holds its weights inline: no data file to fetch
  process.env['SPLITLLM_SEGMENT_CACHE'] = 'off';
  const uncached = await startCloud(pkg, { webEdge: true });
  try {
    const base = uncached.url.replace(/^ws/, 'http');
    const body = msgpack.unpack(new Uint8Array(await (await fetch(`${base}/edge/segment?split=2&bits=4`)).arrayBuffer())) as Record<string, unknown>;
    expect(body['model']).toBeInstanceOf(Uint8Array);
    expect(body['externalData']).toBeUndefined();
    expect((await fetch(`${base}/edge/segment/data?split=2&bits=4`)).status).toBe(404);
    expect((await fetch(`${base}/edge/segment/data?split=9`)).status).toBe(400);
  } finally {
    await uncached.close();
    delete process.env['SPLITLLM_SEGMENT_CACHE'];
  }
});

it("clients that ask for the page's .wasm and do not read hold a stream's buffer each, not the 14 MB file", async () => {
  const { connect } = await import('node:net');
  const pkg = await defaultModel();
  const server = await startCloud(pkg, { webEdge: true });
  const sockets: import('node:net').Socket[] = [];
  try {
    const port = Number(new URL(server.url).port);
    const before = process.memoryUsage().rss;
    // each one reads the first bytes of the answer (so the server has begun to send it), then stops reading
    await Promise.all(
      Array.from({ length: 20 }, () => new Promise<void>((resolve, reject) => {
        const s = connect(port, '127.0.0.1', () => s.write('GET /edge/ort/ort-wasm-simd-threaded.wasm HTTP/1.1\r\nHost: x\r\n\r\n'));
        sockets.push(s);
        s.once('data', (d: Buffer) => {
          s.pause();
          expect(d.toString('latin1')).toMatch(/^HTTP\/1\.1 200/);
          resolve();
        });
        s.once('error', reject);
      })),
    );
    // read whole, 20 answers would hold 20 × 14 MB (measured: +546 MB for 40); streamed, a buffer each
    expect(process.memoryUsage().rss - before).toBeLessThan(120e6);
  } finally {
    for (const s of sockets) s.destroy();
    await server.close();
  }
});

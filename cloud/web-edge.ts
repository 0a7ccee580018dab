/**
 * The browser edge (`splitllm cloud --web-edge`): the cloud serves a page that runs the front segment
 * in WebAssembly (onnxruntime-web) and connects back to this server's /v1/session, and everything the
 * page needs — nothing comes from anywhere else:
 *   GET /edge/                       the page (edge/web/index.html)
 *   GET /edge/edge.js                its script (bundled by scripts/build-web.mjs from the edge's own sources)
 *   GET /edge/ort/<file>.wasm        onnxruntime-web's WebAssembly, from the installed package
 *   GET /edge/auth                   {auth}: whether the page needs the cloud's bearer token (it sends it on the
 *                                    requests below and offers it as a WebSocket subprotocol on /v1/session)
 *   GET /edge/model                  the model's name, hash, shape, tokenizer, calibration and the page's defaults
 *   GET /edge/segment?split=K&bits=B[&block=N][&embed=E] the front segment [0, K) at B-bit weights in blocks of N
 *                                    (RTN, as `splitllm edge --front-bits B --block-size N` builds it; default 32) and an
 *                                    E-bit embedding (8, 4; default 32), built once into the package's segment cache
 *                                    (msgpack: {modelHash, io, model, externalData?: the name of its weights' file})
 *   GET /edge/segment/data?…         that segment's external data file, streamed from the cache (same query)
 * The prompt stays in the page: the server only ever sees hidden states, as from any edge.
 */
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SplitLLMError } from '../shared/errors.js';
import { Fields } from '../shared/fields.js';
import { msgpack } from '../shared/protocol/frame.js';
import { BLOCK_SIZES, blockOfWeights, DEFAULT_BLOCK_SIZE, isBlockSize, isWeightBits, WEIGHT_BITS } from '../shared/precision.js';
import type { ModelPackage } from '../models/package.js';
import { linearFor } from '../models/onnx/linear.js';
import { checkEmbedBits } from '../models/onnx/embedding.js';
import { BuildQueue, BuildQueueFull } from './build-queue.js';
import { buildInWorker, rtnSegmentOptions, workerBuildsAvailable, type RtnSegmentSpec } from '../models/runtime/build-worker.js';
import { cachedSegment, segmentCacheDir } from '../models/runtime/segment-cache.js';
import type { Calibration } from '../quantization/activations/calibration.js';

/** Built front segments kept for later pages (each is the front's weights at its precision). */
export const WEB_SEGMENT_CACHE = 8;

export interface WebEdgeOptions {
  /** the calibration the page's calibrated codecs (ts-tabq) encode with: the cloud's own */
  calibration?: Calibration;
  /** segments kept built (default WEB_SEGMENT_CACHE) */
  cachedSegments?: number;
  /** segment builds that may wait behind the one running; past them a request for an unbuilt segment gets 503 (default 4) */
  maxQueuedBuilds?: number;
  /** with tokens: whether a request's Authorization header may read the model and its segments (the page, its script and the .wasm stay public) */
  allowed?: (authorization: string | undefined) => boolean;
  /** the page's defaults: this plan's split, front bits, block and codec (`splitllm cloud --web-edge --plan FILE`) */
  plan?: { split: number; frontBits: number; codec: string; blockSize?: number };
}

// this file runs compiled from dist/cloud/ and, under vitest, from cloud/: the bundle is in dist/web either way
const WEB_DIRS = ['../web', '../dist/web'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
const WASM_FILES = ['ort-wasm-simd-threaded.wasm'];

/** The built page's folder, or a one-line error saying how to build it. */
export function webEdgeDir(): string {
  const dir = WEB_DIRS.find((d) => existsSync(`${d}/edge.js`) && existsSync(`${d}/index.html`));
  if (!dir) throw new SplitLLMError('E_FILE_NOT_FOUND', "the browser edge is not built (dist/web/edge.js is missing): run 'npm run build'");
  return dir;
}

export function registerWebEdge(app: FastifyInstance, pkg: ModelPackage, opts: WebEdgeOptions = {}): void {
  const dir = webEdgeDir();
  const c = pkg.config;
  const require = createRequire(import.meta.url);
  const wasm = new Map(WASM_FILES.map((f) => [f, require.resolve(`onnxruntime-web/${f}`)]));
  const page = readFileSync(`${dir}/index.html`);
  const script = readFileSync(`${dir}/edge.js`);
  const cal = opts.calibration;
  // the page's defaults: the plan's, else the middle split, float weights, the calibrated codec where there is one
  const split = Math.min(Math.max(1, opts.plan?.split ?? Math.floor(c.nLayers / 2)), Math.max(1, c.nLayers - 1));
  const model = {
    name: pkg.manifest.name,
    hash: pkg.hash,
    config: c,
    tokenizer: pkg.tokenizerJson ?? null,
    tokenizerConfig: pkg.tokenizerConfig ?? null,
    calibration: cal ?? null,
    defaults: opts.plan
      ? { split, bits: opts.plan.frontBits, block: opts.plan.blockSize ?? DEFAULT_BLOCK_SIZE, codec: opts.plan.codec }
      : { split, bits: 32, block: DEFAULT_BLOCK_SIZE, codec: cal?.splits[String(split)]?.choice ? 'ts-tabq' : 'fp32' },
    bits: [...WEIGHT_BITS],
  };
  const modelJson = JSON.stringify(model);

  const cache = new Map<string, Promise<ServedSegment>>();
  // builds run one at a time, a few queued: a client cycling through segments cannot start builds beside each other
  const builds = new BuildQueue(opts.maxQueuedBuilds ?? 4);
  // a build in a worker ends with the server
  const closing = new AbortController();
  app.addHook('onClose', async () => closing.abort());
  const limit = opts.cachedSegments ?? WEB_SEGMENT_CACHE;
  /**
   * The segment's response body (its graph, and its weights where they are inline), the external data file
   * the page fetches from /edge/segment/data, and whether it was there without a build. A package's
   * segments are built into its segment cache on disk (models/runtime/segment-cache.ts), in a worker
   * thread where the code runs compiled, so a build holds no other request; the bodies of the last `limit`
   * are kept (a graph of a cached segment is kilobytes; its weights stay in the file, streamed per request).
   */
  const segment = (k: number, bits: number, block: number, embedBits: number): { served: Promise<ServedSegment>; hit: boolean } => {
    // float layers have no block: one segment for every block asked for
    const key = `${k}/${bits}/${blockOfWeights(block, bits)}/${embedBits}`;
    let p = cache.get(key);
    if (p) {
      // most recently used last
      cache.delete(key);
      cache.set(key, p);
      return { served: p, hit: true };
    }
    let built = false;
    p = builds.run(async () => {
      // float32 embedding: the page's onnxruntime-web is not asked to gather bf16
      const spec: RtnSegmentSpec = { from: 0, to: k, embed: true, head: false, bits, blockSize: block, embedBits, embedAsStored: false };
      const events = { building: () => (built = true) };
      const seg = segmentCacheDir(pkg) && workerBuildsAvailable() ? await buildInWorker(pkg, spec, events, closing.signal) : cachedSegment(pkg, 0, k, rtnSegmentOptions(spec), events);
      const { model: inline, modelPath, temporaryDir: _t, sha256: _s, externalData: _e, ...io } = seg;
      if (inline) return { body: msgpack.pack({ modelHash: pkg.hash, io, model: inline }), built };
      if (!modelPath) throw new SplitLLMError('E_RUNTIME', `front segment [0, ${k}) has no model`);
      // the cache writes the weights of every entry to the external data file the model names
      const data = `${modelPath}.data`;
      return { body: msgpack.pack({ modelHash: pkg.hash, io, model: readFileSync(modelPath), externalData: basename(data) }), dataPath: data, built };
    });
    cache.set(key, p);
    p.catch(() => cache.delete(key));
    while (cache.size > limit) cache.delete(cache.keys().next().value!);
    return { served: p, hit: false };
  };

  /** The query of /edge/segment and /edge/segment/data, checked; a one-line usage error otherwise. */
  const segmentQuery = (query: unknown): { k: number; bits: number; block: number; embedBits: number } => {
    const q = Fields.of(query, 'segment', (why) => {
      throw new SplitLLMError('E_USAGE', why);
    });
    // split 0 would have the page send the token embeddings themselves (the hidden states of every split
    // reveal the prompt to this server too, which holds the weights: README, "Privacy")
    const k = q.int('split', 1, Math.max(1, c.nLayers - 1), Number(q.value('split')));
    const bits = q.int('bits', 2, 32, q.has('bits') ? Number(q.value('bits')) : 32);
    if (!isWeightBits(bits)) throw new SplitLLMError('E_USAGE', `segment: bits ${bits} is not one of ${WEIGHT_BITS.join(', ')}`);
    const block = q.has('block') ? q.int('block', 1, 1 << 16, Number(q.value('block'))) : DEFAULT_BLOCK_SIZE;
    if (!isBlockSize(block)) throw new SplitLLMError('E_USAGE', `segment: block ${block} is not one of ${BLOCK_SIZES.join(', ')}`);
    const embedBits = q.has('embed') ? q.int('embed', 4, 32, Number(q.value('embed'))) : 32;
    checkEmbedBits(embedBits);
    return { k, bits, block, embedBits };
  };
  const badQuery = (e: unknown) => ({ error: { code: 'bad_request', message: `${e instanceof Error ? e.message : String(e)}: ask for /edge/segment?split=1..${c.nLayers - 1}&bits=${WEIGHT_BITS.join('|')}[&block=${BLOCK_SIZES.join('|')}][&embed=8|4]` } });
  const buildFailed = (e: unknown) => ({ error: { code: e instanceof SplitLLMError ? 'bad_request' : 'internal', message: `the front segment could not be built: ${e instanceof Error ? e.message : String(e)}` } });

  app.get('/edge', async (_req, reply) => reply.redirect('/edge/'));
  app.get('/edge/', async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(page));
  app.get('/edge/edge.js', async (_req, reply) => reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(script));
  // the weights and the tokenizer are the operator's: with tokens, only for a request that carries one
  const refused = (authorization: string | undefined) => opts.allowed !== undefined && !opts.allowed(authorization);
  const unauthorized = { error: { code: 'unauthorized', message: "missing or wrong bearer token: give the page the cloud's token" } };
  app.get('/edge/auth', async (_req, reply) => reply.send({ auth: opts.allowed !== undefined }));
  app.get('/edge/model', async (req, reply) =>
    refused(req.headers.authorization) ? reply.code(401).header('www-authenticate', 'Bearer realm="splitllm"').send(unauthorized) : reply.type('application/json').send(modelJson),
  );
  app.get<{ Params: { file: string } }>('/edge/ort/:file', async (req, reply) => {
    const path = wasm.get(req.params.file);
    if (!path) return reply.code(404).send({ error: { code: 'not_found', message: `no such file: the page needs only ${WASM_FILES.join(', ')}` } });
    // streamed: a client that does not read holds a stream's buffer, not the 14 MB file
    return reply.type('application/wasm').header('cache-control', 'max-age=86400').header('content-length', statSync(path).size).send(createReadStream(path));
  });
  /**
   * The segment a request asks for, or undefined once it has been answered with why not (401 without the
   * token, 400 for a bad query or a build the request caused to fail, 500 for any other failure).
   */
  const requested = async (req: FastifyRequest, reply: FastifyReply): Promise<(ServedSegment & { hit: boolean }) | undefined> => {
    if (refused(req.headers.authorization)) {
      await reply.code(401).header('www-authenticate', 'Bearer realm="splitllm"').send(unauthorized);
      return undefined;
    }
    let q: ReturnType<typeof segmentQuery>;
    try {
      q = segmentQuery(req.query);
    } catch (e) {
      await reply.code(400).send(badQuery(e));
      return undefined;
    }
    const got = segment(q.k, q.bits, q.block, q.embedBits);
    try {
      return { ...(await got.served), hit: got.hit };
    } catch (e) {
      if (e instanceof BuildQueueFull) {
        await reply.code(503).header('retry-after', '5').send({ error: { code: 'busy', message: e.message } });
        return undefined;
      }
      await reply.code(e instanceof SplitLLMError ? 400 : 500).send(buildFailed(e));
      return undefined;
    }
  };
  app.get('/edge/segment', async (req, reply) => {
    const served = await requested(req, reply);
    if (!served) return reply;
    return reply
      .type('application/msgpack')
      .header('x-splitllm-model-hash', pkg.hash)
      .header('x-splitllm-segment-cache', served.hit || !served.built ? 'hit' : 'miss')
      .send(Buffer.from(served.body));
  });
  // the weights of a segment the cache holds on disk, streamed from its file (nothing of it held here)
  app.get('/edge/segment/data', async (req, reply) => {
    const served = await requested(req, reply);
    if (!served) return reply;
    if (!served.dataPath) return reply.code(404).send({ error: { code: 'not_found', message: 'this segment holds its weights inline: /edge/segment is all of it' } });
    let size: number;
    try {
      size = statSync(served.dataPath).size;
    } catch {
      // the cache's bound evicted the entry since: the next /edge/segment rebuilds it
      cache.clear();
      return reply.code(409).send({ error: { code: 'conflict', message: 'the segment left the cache meanwhile: ask for /edge/segment again' } });
    }
    return reply.type('application/octet-stream').header('content-length', size).header('x-splitllm-model-hash', pkg.hash).send(createReadStream(served.dataPath));
  });
}

/** A front segment as /edge/segment serves it. */
interface ServedSegment {
  /** msgpack {modelHash, io, model, externalData?: the data file's name} */
  body: Uint8Array;
  /** the external data file on disk (a cached segment), served by /edge/segment/data */
  dataPath?: string;
  /** whether this call built it (not loaded from the cache) */
  built: boolean;
}

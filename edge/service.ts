/**
 * The edge service: an OpenAI-compatible HTTP API on the device (fastify) in front of an `EdgeAgent`.
 * Apps on the device call POST /v1/completions and /v1/chat/completions (streamed as server-sent
 * events, or whole); the prompt is tokenized and run through the front layers here, and only
 * compressed hidden states go to the cloud. GET /v1/models lists the model, GET /health says whether
 * the process is up (and what it knows of the cloud), GET /ready answers 503 until the cloud is
 * reachable. Every request gets its own cloud session; a client that goes away cancels its generation.
 */
import { randomBytes } from 'node:crypto';
import { hostname, networkInterfaces } from 'node:os';
import { bearerToken, sameSecret } from '../shared/secret.js';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { listenError } from '../shared/listen.js';
import type { EdgeAgent, GenerateResult } from './edge-agent.js';
import {
  chatResponse,
  completionResponse,
  OpenAIError,
  parseChatRequest,
  parseCompletionRequest,
  streamChunk,
  toOpenAIError,
  usageChunk,
  type ApiRequest,
  type ResponseIds,
} from './openai.js';

export interface EdgeServiceOptions {
  port?: number;
  host?: string;
  /** the model id the API reports and accepts (default: the package's name) */
  modelId?: string;
  /** largest request body in bytes (default 1 MiB) */
  bodyLimit?: number;
  /** fastify's logger (pino): true for JSON lines on stdout */
  log?: boolean;
  /**
   * API keys the apps must send (`Authorization: Bearer KEY`, what every OpenAI client sends as its
   * apiKey) on every route but /health and /ready; none: no check (only sane on loopback)
   */
  apiKeys?: readonly string[];
  /**
   * names the Host header may carry beside the loopback names and the bind address (a web page that
   * rebinds its own DNS name to this address is refused: its Host is its name); '*' turns the check off
   */
  allowedHosts?: readonly string[];
}

/** No tokenizer makes a token of more characters than this: a prompt past maxSeq × it is over the context before it is tokenized. */
export const MAX_CHARS_PER_TOKEN = 32;

/** Whether `host` is a loopback address or name (the service on it is reachable from this device only). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The name in a Host header, lowercased, without its port. */
function hostName(header: string | undefined): string {
  const h = (header ?? '').trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  return h.split(':')[0] ?? '';
}

/** The Host names the service answers: loopback, its bind address (every address of this machine and its name when it binds all), and those given. */
function hostsFor(bind: string, extra: readonly string[]): Set<string> {
  const names = new Set(['localhost', '127.0.0.1', '[::1]']);
  const all = bind === '0.0.0.0' || bind === '::';
  if (!all) names.add(bind.includes(':') && !bind.startsWith('[') ? `[${bind}]` : bind);
  else {
    names.add(hostname().toLowerCase());
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) names.add(a.family === 'IPv6' ? `[${a.address}]` : a.address);
  }
  for (const e of extra) names.add(e.toLowerCase());
  return names;
}

export interface EdgeService {
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

function sendError(reply: FastifyReply, e: unknown): FastifyReply {
  const err = toOpenAIError(e);
  if (err.retryAfter !== undefined) void reply.header('retry-after', String(err.retryAfter));
  return reply.code(err.status).send(err.body());
}

/** Aborts when the client goes away before the reply is complete. */
function clientGone(req: FastifyRequest, reply: FastifyReply): AbortController {
  const ac = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  req.raw.on('aborted', () => ac.abort());
  return ac;
}

export async function startEdgeService(agent: EdgeAgent, opts: EdgeServiceOptions = {}): Promise<EdgeService> {
  const modelId = opts.modelId ?? agent.model.manifest.name;
  const created = Math.floor(Date.now() / 1000);
  const app = Fastify({ logger: opts.log ?? false, bodyLimit: opts.bodyLimit ?? 1024 * 1024 });
  let cloudOk: boolean | undefined;
  // once closing, every reply ends its connection: a client's keep-alive socket would hold close() for
  // fastify's 72 s keep-alive timeout
  let closing = false;
  app.addHook('onSend', async (_req, reply) => {
    if (closing) void reply.header('connection', 'close');
  });
  // one health check of the cloud at a time: concurrent asks of /health and /ready share it, so they
  // cannot make this device flood the cloud with checks
  let checking: Promise<boolean> | undefined;
  const probe = async () => {
    checking ??= agent.cloudReachable().finally(() => (checking = undefined));
    return (cloudOk = await checking);
  };
  const host = opts.host ?? '127.0.0.1';
  const allowed = opts.allowedHosts?.includes('*') ? undefined : hostsFor(host, opts.allowedHosts ?? []);
  const keys = opts.apiKeys ?? [];
  app.addHook('onRequest', async (req, reply) => {
    if (allowed && !allowed.has(hostName(req.headers.host))) {
      return sendError(reply, new OpenAIError(403, 'invalid_request_error', 'host_not_allowed', `Host ${JSON.stringify(req.headers.host ?? '')} is not a name of this service (a page that rebinds its own name to this address is refused): call it by its address, or add the name with --allowed-hosts`));
    }
    const open = req.url === '/health' || req.url === '/ready';
    if (keys.length && !open) {
      const given = bearerToken(req.headers.authorization) ?? '';
      let ok = false;
      for (const k of keys) ok = sameSecret(given, k) || ok;
      if (!ok) {
        void reply.header('www-authenticate', 'Bearer realm="splitllm-edge"');
        return sendError(reply, new OpenAIError(401, 'invalid_request_error', 'invalid_api_key', "missing or wrong API key: send 'Authorization: Bearer KEY' with a key of --api-key-file (an OpenAI client's apiKey)"));
      }
    }
  });

  app.setErrorHandler((err: { statusCode?: number; message?: string }, _req, reply) => {
    // fastify's own errors (bad JSON, body too large, wrong content type) in the OpenAI shape
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    const code = status === 413 ? 'request_too_large' : status === 415 ? 'unsupported_media_type' : status === 400 ? 'invalid_json' : 'internal';
    return sendError(reply, new OpenAIError(status, status === 500 ? 'server_error' : 'invalid_request_error', code, err.message ?? 'internal error'));
  });
  app.setNotFoundHandler((req, reply) =>
    sendError(reply, new OpenAIError(404, 'invalid_request_error', 'not_found', `${req.method} ${req.url} is not an endpoint of this server: see GET /v1/models, POST /v1/completions, POST /v1/chat/completions`)),
  );

  app.get('/v1/models', async () => ({
    object: 'list',
    data: [{ id: modelId, object: 'model', created, owned_by: 'splitllm' }],
  }));
  app.get('/v1/models/:id', async (req, reply) => {
    const { id } = req.params as { id: string };
    if (id !== modelId) return sendError(reply, new OpenAIError(404, 'invalid_request_error', 'model_not_found', `model "${id}" is not served here: this edge serves "${modelId}"`, 'model'));
    return { id: modelId, object: 'model', created, owned_by: 'splitllm' };
  });
  app.get('/health', async () => {
    await probe();
    return { status: cloudOk ? 'ok' : 'degraded', model: modelId, modelLoaded: true, cloudReachable: cloudOk, activeRequests: agent.busy, maxConcurrent: agent.maxConcurrent };
  });
  app.get('/ready', async (_req, reply) => {
    await probe();
    if (!cloudOk) return sendError(reply, new OpenAIError(503, 'server_error', 'cloud_unreachable', 'the cloud does not answer its health check: is it running, and is --cloud right?'));
    return { ready: true };
  });

  const serve = (kind: ApiRequest['kind']) => async (req: FastifyRequest, reply: FastifyReply) => {
    let api: ApiRequest;
    try {
      api = kind === 'chat' ? parseChatRequest(req.body) : parseCompletionRequest(req.body);
      if (api.model !== undefined && api.model !== modelId) {
        throw new OpenAIError(404, 'invalid_request_error', 'model_not_found', `model "${api.model}" is not served here: this edge serves "${modelId}" (GET /v1/models)`, 'model');
      }
      // a prompt that cannot fit is refused before it is tokenized (tokenizing runs on the event loop)
      const chars = (api.prompt?.length ?? 0) + (api.messages ?? []).reduce((n, m) => n + m.content.length + m.role.length, 0);
      if (chars > agent.maxSeq * MAX_CHARS_PER_TOKEN) {
        throw new OpenAIError(400, 'invalid_request_error', 'context_length_exceeded', `the prompt has ${chars} characters: no tokenizer fits that in this model's context of ${agent.maxSeq} tokens (at most ${MAX_CHARS_PER_TOKEN} characters a token): shorten it`, kind === 'chat' ? 'messages' : 'prompt');
      }
    } catch (e) {
      return sendError(reply, e);
    }
    const ids: ResponseIds = { id: `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('base64url')}`, created: Math.floor(Date.now() / 1000), model: modelId };
    const gone = clientGone(req, reply);
    const request = {
      prompt: api.prompt,
      promptIds: api.promptIds,
      messages: api.messages,
      maxTokens: api.maxTokens,
      sampling: api.sampling,
      stop: api.stop,
      signal: gone.signal,
    };
    // a request the service interrupted (its drain ran out) while its client still waits is told so
    const shutDown = (): OpenAIError => new OpenAIError(503, 'server_error', 'shutting_down', 'the edge service is shutting down and ended this request: retry against a running instance');
    if (!api.stream) {
      try {
        const r = await agent.generate(request);
        if (gone.signal.aborted) return reply;
        if (r.finishReason === 'interrupted') return sendError(reply, shutDown());
        return kind === 'chat' ? chatResponse(ids, r) : completionResponse(ids, r);
      } catch (e) {
        return sendError(reply, e);
      }
    }
    // streamed: errors found before the first byte are plain HTTP errors; later ones an error event
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: closing ? 'close' : 'keep-alive', 'x-accel-buffering': 'no' });
      // a chat stream opens with the assistant's role, as OpenAI's does
      if (kind === 'chat') reply.raw.write(`data: ${JSON.stringify(streamChunk(kind, ids, '', undefined, true))}\n\n`);
    };
    const event = (o: unknown) => {
      if (!reply.raw.writableEnded) reply.raw.write(`data: ${JSON.stringify(o)}\n\n`);
    };
    let result: GenerateResult;
    try {
      // the first piece of text opens the stream; a request refused at once (busy, over the context, no cloud) is an HTTP error
      result = await agent.generate(request, (delta) => {
        start();
        event(streamChunk(kind, ids, delta));
      });
    } catch (e) {
      if (!started) return sendError(reply, e);
      event(toOpenAIError(e).body());
      reply.raw.end('data: [DONE]\n\n');
      return reply;
    }
    if (gone.signal.aborted) {
      if (!reply.raw.writableEnded) reply.raw.end();
      return reply;
    }
    if (result.finishReason === 'interrupted') {
      if (!started) return sendError(reply, shutDown());
      event(shutDown().body());
      reply.raw.end('data: [DONE]\n\n');
      return reply;
    }
    start();
    event(streamChunk(kind, ids, undefined, result));
    if (api.includeUsage) event(usageChunk(kind, ids, result));
    reply.raw.end('data: [DONE]\n\n');
    return reply;
  };
  app.post('/v1/completions', serve('completion'));
  app.post('/v1/chat/completions', serve('chat'));

  let address: string;
  const port = opts.port ?? 8081;
  try {
    address = await app.listen({ port, host });
  } catch (e) {
    await app.close();
    throw listenError(e, host, port) ?? e;
  }
  void probe();
  return {
    url: address,
    app,
    close: async () => {
      closing = true;
      await app.close();
    },
  };
}

/**
 * The OpenAI API's shapes for the edge service: request bodies checked at the boundary into typed
 * requests (every field's type and range; features this runtime does not have are refused by name,
 * not ignored), responses and stream chunks built from a `GenerateResult`, and the error body
 * `{"error": {message, type, param, code}}` with its HTTP status.
 */
import { SplitLLMError, type ErrorCode } from '../shared/errors.js';
import { describe, Fields } from '../shared/fields.js';
import type { SamplingParams } from '../shared/protocol/index.js';
import type { ChatMessage } from '../models/tokenizer/tokenizer.js';
import type { GenerateResult } from './edge-agent.js';

/** An error in the OpenAI shape, with the HTTP status it is sent with. */
export class OpenAIError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    readonly code: string,
    message: string,
    readonly param: string | null = null,
    /** seconds, for 429 and 503 */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'OpenAIError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const invalid = (message: string, param: string | null = null, code = 'invalid_value'): OpenAIError => new OpenAIError(400, 'invalid_request_error', code, message, param);

/** What each typed error of the runtime becomes on the API. */
const STATUS: Partial<Record<ErrorCode, [number, string, string]>> = {
  E_BAD_ARGUMENT: [400, 'invalid_request_error', 'invalid_value'],
  E_USAGE: [400, 'invalid_request_error', 'invalid_value'],
  E_CHAT_TEMPLATE: [400, 'invalid_request_error', 'chat_template'],
  E_SEQUENCE_TOO_LONG: [400, 'invalid_request_error', 'context_length_exceeded'],
  E_SPLIT_RANGE: [400, 'invalid_request_error', 'invalid_value'],
  E_BUSY: [429, 'rate_limit_error', 'rate_limit_exceeded'],
  E_CONNECTION: [503, 'server_error', 'cloud_unreachable'],
  E_TIMEOUT: [504, 'server_error', 'cloud_timeout'],
  E_PROTOCOL: [502, 'server_error', 'cloud_protocol'],
};

export function toOpenAIError(e: unknown): OpenAIError {
  if (e instanceof OpenAIError) return e;
  if (e instanceof SplitLLMError) {
    const [status, type, code] = STATUS[e.code] ?? [500, 'server_error', e.code.toLowerCase()];
    return new OpenAIError(status, type, code, e.message, null, status === 429 || status === 503 ? 1 : undefined);
  }
  return new OpenAIError(500, 'server_error', 'internal', `internal error: ${e instanceof Error ? e.message : String(e)}`);
}

export interface ApiRequest {
  kind: 'completion' | 'chat';
  model?: string;
  prompt?: string;
  promptIds?: number[];
  messages?: ChatMessage[];
  maxTokens?: number;
  sampling: SamplingParams;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
}

/** Limits of a request (also documented in README's edge service section). */
export const API_LIMITS = { stops: 16, stopLength: 256, messages: 1024, promptIds: 1 << 20 } as const;

function fields(body: unknown): Fields {
  return Fields.of(body, 'request body', (m) => {
    // "request body: max_tokens must be …" → the param is the first word after the colon
    const param = /^request body[^:]*: ([a-z_]+)/.exec(m)?.[1] ?? null;
    throw invalid(m.replace(/^request body(\.)?/, '').replace(/^: /, ''), param);
  }, 'a JSON object');
}

/** Refuses fields that ask for what this runtime does not do, rather than silently ignoring them. */
function refuseUnsupported(f: Fields): void {
  const unsupported = (name: string, ok: (v: unknown) => boolean, why: string) => {
    if (f.has(name) && !ok(f.value(name))) throw invalid(`${name} is not supported by splitllm: ${why}`, name, 'unsupported_parameter');
  };
  unsupported('n', (v) => v === 1, 'one choice per request (n = 1)');
  unsupported('best_of', (v) => v === 1, 'one choice per request');
  unsupported('logprobs', (v) => v === false || v === 0, 'log probabilities are not returned');
  unsupported('top_logprobs', (v) => v === 0, 'log probabilities are not returned');
  unsupported('echo', (v) => v === false, 'the reply is the continuation only');
  unsupported('suffix', () => false, 'no insertion mode');
  unsupported('presence_penalty', (v) => v === 0, 'no repetition penalties');
  unsupported('frequency_penalty', (v) => v === 0, 'no repetition penalties');
  unsupported('logit_bias', (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0, 'no logit bias');
  unsupported('tools', (v) => Array.isArray(v) && v.length === 0, 'no tool calls');
  unsupported('functions', (v) => Array.isArray(v) && v.length === 0, 'no function calls');
  unsupported('response_format', (v) => typeof v === 'object' && v !== null && 'type' in v && v.type === 'text', 'text replies only');
}

function common(f: Fields, kind: ApiRequest['kind']): Omit<ApiRequest, 'prompt' | 'promptIds' | 'messages'> {
  refuseUnsupported(f);
  const sampling: SamplingParams = { temperature: f.optNum('temperature', 0, 2) ?? 1 };
  const topP = f.optNum('top_p', 0, 1);
  if (topP !== undefined) {
    if (topP === 0) throw invalid('top_p must be in (0, 1]', 'top_p');
    sampling.topP = topP;
  }
  const topK = f.optInt('top_k', 0, 2 ** 31 - 1);
  if (topK !== undefined) sampling.topK = topK;
  const seed = f.optInt('seed', -(2 ** 53 - 1), 2 ** 53 - 1);
  if (seed !== undefined) sampling.seed = seed;
  let stop: string[] = [];
  const s = f.value('stop');
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) {
    if (s.length > API_LIMITS.stops) throw invalid(`stop holds ${s.length} strings, at most ${API_LIMITS.stops}`, 'stop');
    stop = s.map((x, i) => {
      if (typeof x !== 'string') throw invalid(`stop[${i}] must be a string, got ${describe(x)}`, 'stop');
      return x;
    });
  } else if (s !== undefined && s !== null) throw invalid(`stop must be a string or a list of strings, got ${describe(s)}`, 'stop');
  for (const x of stop) {
    if (x.length === 0 || x.length > API_LIMITS.stopLength) throw invalid(`each stop string must be 1..${API_LIMITS.stopLength} characters`, 'stop');
  }
  const maxName = kind === 'chat' && f.has('max_completion_tokens') ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = f.optInt(maxName, 1, 1 << 24);
  const stream = f.optBool('stream') ?? false;
  const opts = f.optMap('stream_options');
  const includeUsage = opts?.optBool('include_usage') ?? false;
  if (opts && !stream) throw invalid('stream_options is only allowed with stream: true', 'stream_options');
  return { kind, model: f.optStr('model', 256), maxTokens, sampling, stop, stream, includeUsage };
}

/** POST /v1/completions. `max_tokens` defaults to 16, as the OpenAI API's does. */
export function parseCompletionRequest(body: unknown): ApiRequest {
  const f = fields(body);
  const base = common(f, 'completion');
  const p = f.value('prompt');
  const req: ApiRequest = { ...base, maxTokens: base.maxTokens ?? 16 };
  if (typeof p === 'string') req.prompt = p;
  else if (Array.isArray(p) && p.length === 1 && typeof p[0] === 'string') req.prompt = p[0];
  else if (Array.isArray(p) && p.every((x) => typeof x === 'number')) req.promptIds = f.intArray('prompt', API_LIMITS.promptIds, 0, 2 ** 31 - 1);
  else if (Array.isArray(p)) throw invalid('prompt must be a string, a list of one string, or a list of token ids (one prompt per request)', 'prompt');
  else if (p === undefined || p === null) req.prompt = '';
  else throw invalid(`prompt must be a string, got ${describe(p)}`, 'prompt');
  return req;
}

/** POST /v1/chat/completions. `max_tokens` defaults to what the context has left. */
export function parseChatRequest(body: unknown): ApiRequest {
  const f = fields(body);
  const base = common(f, 'chat');
  const raw = f.array('messages', API_LIMITS.messages);
  if (raw.length === 0) throw invalid('messages must hold at least one message', 'messages');
  const messages = raw.map((m, i): ChatMessage => {
    const at = `messages[${i}]`;
    const mf = Fields.of(m, at, (msg) => {
      throw invalid(msg, 'messages');
    });
    const role = mf.str('role', 32);
    if (!['system', 'developer', 'user', 'assistant'].includes(role)) throw invalid(`${at}.role "${role}" is not one of system, developer, user, assistant`, 'messages');
    const c = mf.value('content');
    let content: string;
    if (typeof c === 'string') content = c;
    else if (Array.isArray(c)) {
      content = c
        .map((part, j) => {
          const pf = Fields.of(part, `${at}.content[${j}]`, (msg) => {
            throw invalid(msg, 'messages');
          });
          if (pf.value('type') !== 'text') throw invalid(`${at}.content[${j}] is a ${String(pf.value('type'))} part: this model reads text only`, 'messages');
          return pf.str('text', 1 << 22, 0);
        })
        .join('');
    } else if (c === null && role === 'assistant') content = '';
    else throw invalid(`${at}.content must be a string or a list of text parts, got ${describe(c)}`, 'messages');
    // "developer" is the newer name of "system"; templates know "system"
    return { role: role === 'developer' ? 'system' : role, content };
  });
  return { ...base, messages };
}

export interface ResponseIds {
  id: string;
  created: number;
  model: string;
}

export function usageOf(r: GenerateResult): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return { prompt_tokens: r.promptTokens, completion_tokens: r.tokens.length, total_tokens: r.promptTokens + r.tokens.length };
}

/** The extension field every response carries: how the split ran this request. */
export function splitllmStats(r: GenerateResult): Record<string, unknown> {
  const s = r.stats;
  return {
    split: r.split,
    codec: r.codec,
    bytes_up: s.bytesUp,
    bytes_down: s.bytesDown,
    edge_ms_per_token: s.edgeMs,
    network_ms_per_token: s.networkMs,
    cloud_ms_per_token: s.cloudMs,
    time_to_first_token_ms: s.prefill.firstTokenMs,
    resplits: s.resplits.length,
    resumes: s.resumes,
  };
}

const finish = (r: GenerateResult): 'stop' | 'length' => (r.finishReason === 'length' ? 'length' : 'stop');

export function completionResponse(ids: ResponseIds, r: GenerateResult): Record<string, unknown> {
  return {
    id: ids.id,
    object: 'text_completion',
    created: ids.created,
    model: ids.model,
    choices: [{ index: 0, text: r.text, finish_reason: finish(r), logprobs: null }],
    usage: usageOf(r),
    splitllm: splitllmStats(r),
  };
}

export function chatResponse(ids: ResponseIds, r: GenerateResult): Record<string, unknown> {
  return {
    id: ids.id,
    object: 'chat.completion',
    created: ids.created,
    model: ids.model,
    choices: [{ index: 0, message: { role: 'assistant', content: r.text }, finish_reason: finish(r), logprobs: null }],
    usage: usageOf(r),
    splitllm: splitllmStats(r),
  };
}

/** One stream chunk: a text delta, or (with `r`) the last chunk with the finish reason. */
export function streamChunk(kind: ApiRequest['kind'], ids: ResponseIds, delta: string | undefined, r?: GenerateResult, first = false): Record<string, unknown> {
  const base = { id: ids.id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created: ids.created, model: ids.model };
  const reason = r ? finish(r) : null;
  if (kind === 'chat') {
    const d: Record<string, string> = {};
    if (first) d['role'] = 'assistant';
    if (delta !== undefined) d['content'] = delta;
    return { ...base, choices: [{ index: 0, delta: d, finish_reason: reason, logprobs: null }], ...(r ? { splitllm: splitllmStats(r) } : {}) };
  }
  return { ...base, choices: [{ index: 0, text: delta ?? '', finish_reason: reason, logprobs: null }], ...(r ? { splitllm: splitllmStats(r) } : {}) };
}

/** The usage chunk of `stream_options.include_usage`: no choices, the counts. */
export function usageChunk(kind: ApiRequest['kind'], ids: ResponseIds, r: GenerateResult): Record<string, unknown> {
  return { id: ids.id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created: ids.created, model: ids.model, choices: [], usage: usageOf(r) };
}

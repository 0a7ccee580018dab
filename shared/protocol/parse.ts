/**
 * The trust boundary: `parseFrame` turns the bytes of one frame from the network into a typed message,
 * checking every field of every message type (type, integer range, array shape, string length). It
 * builds a fresh object from the fields it knows, so nothing past it casts; anything wrong is a
 * `ProtocolError` with its wire code. Which code a field error gets depends on the message: `bad_hello`
 * (closes) for a hello, `bad_resplit` for a resplit or kv frame, `bad_tensor` for a prefill's token
 * count, `bad_message` for the rest.
 */
import { isSessionId } from './session-id.js';
import { DRAFT_Q_SCALE, MAX_DRAFT, MAX_DRAFT_SUPPORT, PROTOCOL_VERSION, CLOUD_MESSAGES, EDGE_MESSAGES, type CloudMessage, type EdgeMessage, type Frame, type Message, type SamplingParams } from './messages.js';
import { COMPACT_KIND, COMPACT_MARK, COMPACT_STEP_HEADER, COMPACT_TOKEN_BYTES, msgpack, splitFrame } from './frame.js';
import { ProtocolError, type WireCode } from './errors.js';
import { describe, Fields, isPlainMap, type Raw } from '../fields.js';

/** Bounds of the fields (documented in docs/PROTOCOL.md). */
export const LIMITS = {
  /** a split point or layer index */
  layer: 4096,
  /** positions, token counts, token ids */
  positions: 1 << 24,
  tokenId: 2 ** 31 - 1,
  stopIds: 1024,
  modelHash: 128,
  codecSpec: 256,
  sessionId: 128,
  resumeSecret: 128,
  errorCode: 64,
  errorMessage: 4096,
  probeReply: 8 * 1024 * 1024,
  probeId: 2 ** 32 - 1,
  weightBits: 64,
  blockSize: 1 << 16,
  temperature: 1000,
  seed: 2 ** 53 - 1,
  cloudMs: 1e9,
} as const;

/** The fields of one message, failing with that message's wire code. */
function fields(raw: Raw, type: string, code: WireCode): Fields {
  return new Fields(raw, type, (message) => {
    throw new ProtocolError(code, message);
  });
}

function sampling(f: Fields): SamplingParams {
  const out: SamplingParams = {};
  if (f.has('temperature')) out.temperature = f.num('temperature', 0, LIMITS.temperature);
  if (f.has('topK')) out.topK = f.int('topK', 0, LIMITS.tokenId);
  if (f.has('topP')) {
    out.topP = f.num('topP', 0, 1);
    if (out.topP === 0) f.fail('topP must be in (0, 1]');
  }
  if (f.has('seed')) out.seed = f.int('seed', -LIMITS.seed, LIMITS.seed);
  return out;
}

/** A sampled draft's distribution: distinct ids, positive integer weights summing to DRAFT_Q_SCALE, the draft among them. */
function draftDistribution(f: Fields, draft: number): { ids: number[]; weights: number[] } {
  const ids = f.intArray('ids', MAX_DRAFT_SUPPORT, 0, LIMITS.tokenId);
  const weights = f.intArray('weights', MAX_DRAFT_SUPPORT, 1, DRAFT_Q_SCALE);
  if (ids.length !== weights.length || ids.length === 0) f.fail(`names ${ids.length} ids and ${weights.length} weights: give one positive weight per id`);
  if (new Set(ids).size !== ids.length) f.fail('names an id twice');
  const total = weights.reduce((a, b) => a + b, 0);
  if (total !== DRAFT_Q_SCALE) f.fail(`weights sum to ${total}, not ${DRAFT_Q_SCALE}`);
  if (!ids.includes(draft)) f.fail(`gives draft ${draft} no weight: a draft is drawn from its own distribution`);
  return { ids, weights };
}

/** Checks the fields of a header already known to be a map with a string type. */
function checkMessage(raw: Raw, type: string): Message {
  switch (type) {
    case 'hello': {
      // the version first: a newer edge may send fields this server does not know
      const v = raw['version'];
      if (v !== PROTOCOL_VERSION) {
        throw new ProtocolError('bad_version', `protocol version ${describe(v)} is not served (this server speaks ${PROTOCOL_VERSION}): update the edge agent`);
      }
      const f = fields(raw, type, 'bad_hello');
      const m: Message = {
        type,
        version: PROTOCOL_VERSION,
        modelHash: f.str('modelHash', LIMITS.modelHash),
        split: f.int('split', 0, LIMITS.layer),
        codec: f.str('codec', LIMITS.codecSpec),
        maxTokens: f.int('maxTokens', 0, LIMITS.positions),
      };
      if (f.has('sampling')) m.sampling = sampling(f.map('sampling'));
      if (f.has('stopIds')) m.stopIds = f.intArray('stopIds', LIMITS.stopIds, 0, LIMITS.tokenId);
      if (f.has('backBits')) m.backBits = f.int('backBits', 1, LIMITS.weightBits);
      if (f.has('headBits')) m.headBits = f.int('headBits', 1, LIMITS.weightBits);
      if (f.has('blockSize')) m.blockSize = f.int('blockSize', 1, LIMITS.blockSize);
      if (f.has('resumeSecret')) {
        // the edge's own secret: as strong as the one the cloud would draw (128 bits, base64url)
        const secret = f.str('resumeSecret', LIMITS.resumeSecret);
        if (!isSessionId(secret)) throw new ProtocolError('bad_hello', 'hello: resumeSecret must be 22 base64url characters (128 random bits)');
        m.resumeSecret = secret;
      }
      return m;
    }
    case 'resume': {
      const f = fields(raw, type, 'bad_message');
      return { type, session: f.str('session', LIMITS.sessionId), secret: f.str('secret', LIMITS.resumeSecret), position: f.int('position', 0, LIMITS.positions) };
    }
    case 'prefill': {
      const f = fields(raw, type, 'bad_tensor');
      const m: Message = { type, tokens: f.int('tokens', 1, LIMITS.positions) };
      if (f.has('more') && f.bool('more')) m.more = true;
      return m;
    }
    case 'step':
      return { type, token: fields(raw, type, 'bad_message').int('token', 0, LIMITS.tokenId) };
    case 'draft': {
      const f = fields(raw, type, 'bad_draft');
      const tokens = f.int('tokens', 2, MAX_DRAFT + 1);
      const drafts = f.intArray('drafts', MAX_DRAFT, 0, LIMITS.tokenId);
      if (drafts.length !== tokens - 1) f.fail(`carries ${drafts.length} drafts for ${tokens} positions: a draft frame feeds the last token and its drafts (tokens = drafts + 1)`);
      const m: Message = { type, tokens, token: f.int('token', 0, LIMITS.tokenId), drafts };
      if (f.has('exit') && f.bool('exit')) m.exit = true;
      if (f.has('q')) {
        if (m.exit) f.fail('carries both exit and q: an early-exit draft has its distribution recomputed, a sampled draft sends it');
        const q = f.array('q', MAX_DRAFT);
        if (q.length !== drafts.length) f.fail(`carries ${q.length} distributions for ${drafts.length} drafts (one each)`);
        m.q = q.map((raw, i) => draftDistribution(Fields.of(raw, `draft: q[${i}]`, (why) => {
          throw new ProtocolError('bad_draft', why);
        }), drafts[i]!));
      }
      return m;
    }
    case 'verified': {
      const f = fields(raw, type, 'bad_message');
      const accepted = f.int('accepted', 0, MAX_DRAFT);
      const ids = f.intArray('ids', MAX_DRAFT + 1, 0, LIMITS.tokenId);
      if (ids.length > accepted + 1) f.fail(`carries ${ids.length} ids for ${accepted} accepted drafts (at most accepted + 1)`);
      return { type, accepted, ids, done: f.bool('done'), cloudMs: f.num('cloudMs', 0, LIMITS.cloudMs) };
    }
    case 'close':
      return { type };
    case 'probe': {
      const f = fields(raw, type, 'bad_message');
      return { type, id: f.int('id', 0, LIMITS.probeId), reply: f.int('reply', 0, LIMITS.probeReply) };
    }
    case 'resplit': {
      const f = fields(raw, type, 'bad_resplit');
      return { type, split: f.int('split', 0, LIMITS.layer), kvCodec: f.str('kvCodec', LIMITS.codecSpec) };
    }
    case 'kv': {
      const f = fields(raw, type, 'bad_resplit');
      return { type, layer: f.int('layer', 0, LIMITS.layer - 1), length: f.int('length', 0, LIMITS.positions) };
    }
    case 'ready': {
      const f = fields(raw, type, 'bad_message');
      const ready: Message = {
        type,
        session: f.str('session', LIMITS.sessionId),
        layers: f.int('layers', 0, LIMITS.layer),
        split: f.int('split', 0, LIMITS.layer),
        maxSeq: f.int('maxSeq', 0, LIMITS.positions),
        length: f.int('length', 0, LIMITS.positions),
      };
      const secret = f.optStr('resumeSecret', LIMITS.resumeSecret);
      if (secret !== undefined) ready.resumeSecret = secret;
      return ready;
    }
    case 'token': {
      const f = fields(raw, type, 'bad_message');
      return { type, id: f.int('id', -1, LIMITS.tokenId), done: f.bool('done'), cloudMs: f.num('cloudMs', 0, LIMITS.cloudMs) };
    }
    case 'error': {
      const f = fields(raw, type, 'bad_message');
      return { type, code: f.str('code', LIMITS.errorCode), message: f.str('message', LIMITS.errorMessage, 0) };
    }
    default:
      throw new ProtocolError('unknown_type', `unknown message type "${type.slice(0, 40)}"`);
  }
}

/** A compact token or step frame (frame.ts), checked as its msgpack form would be; undefined when `data` is not one. */
function parseCompact(data: Uint8Array): { raw: Raw; type: string; payload: Uint8Array } | undefined {
  if (data.length < 5) return undefined;
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (v.getUint32(0, true) !== COMPACT_MARK) return undefined;
  const kind = data[4];
  if (kind === COMPACT_KIND.token) {
    if (data.length !== COMPACT_TOKEN_BYTES) throw new ProtocolError('bad_frame', `a compact token frame is ${COMPACT_TOKEN_BYTES} bytes, this one ${data.length}`);
    const done = data[9];
    if (done !== 0 && done !== 1) throw new ProtocolError('bad_message', `token.done must be 0 or 1, got ${done}`);
    return { raw: { type: 'token', id: v.getInt32(5, true), done: done === 1, cloudMs: v.getFloat32(10, true) }, type: 'token', payload: new Uint8Array(0) };
  }
  if (kind === COMPACT_KIND.step) {
    if (data.length < COMPACT_STEP_HEADER) throw new ProtocolError('bad_frame', `a compact step frame has at least ${COMPACT_STEP_HEADER} bytes, this one ${data.length}`);
    return { raw: { type: 'step', token: v.getInt32(5, true) }, type: 'step', payload: data.subarray(COMPACT_STEP_HEADER) };
  }
  throw new ProtocolError('bad_frame', `compact frame kind ${kind} is unknown (1 token, 2 step)`);
}

function parse(data: Uint8Array, allowed: readonly string[], from: string): Frame {
  const compact = parseCompact(data);
  if (compact) {
    if (!allowed.includes(compact.type)) throw new ProtocolError('unknown_type', `the ${from} does not send "${compact.type}"`);
    return { header: checkMessage(compact.raw, compact.type), payload: compact.payload };
  }
  const { header, payload } = splitFrame(data);
  let raw: unknown;
  try {
    raw = msgpack.unpack(header);
  } catch {
    throw new ProtocolError('bad_msgpack', 'frame header is not valid msgpack');
  }
  if (!isPlainMap(raw) || typeof raw['type'] !== 'string') throw new ProtocolError('bad_msgpack', 'frame header is not a msgpack map with a string "type"');
  const type = raw['type'];
  if (!allowed.includes(type)) {
    const known = [...EDGE_MESSAGES, ...CLOUD_MESSAGES].includes(type as never);
    throw new ProtocolError('unknown_type', known ? `the ${from} does not send "${type}"` : `unknown message type "${type.slice(0, 40)}"`);
  }
  return { header: checkMessage(raw, type), payload };
}

function isEdgeMessage(m: Message): m is EdgeMessage {
  return (EDGE_MESSAGES as readonly string[]).includes(m.type);
}
function isCloudMessage(m: Message): m is CloudMessage {
  return (CLOUD_MESSAGES as readonly string[]).includes(m.type);
}

/** A frame an edge sent (what the cloud reads). */
export function parseEdgeFrame(data: Uint8Array): Frame<EdgeMessage> {
  const { header, payload } = parse(data, EDGE_MESSAGES, 'edge');
  if (!isEdgeMessage(header)) throw new ProtocolError('unknown_type', `the edge does not send "${header.type}"`);
  return { header, payload };
}

/** A frame the cloud sent (what the edge reads). */
export function parseCloudFrame(data: Uint8Array): Frame<CloudMessage> {
  const { header, payload } = parse(data, CLOUD_MESSAGES, 'cloud');
  if (!isCloudMessage(header)) throw new ProtocolError('unknown_type', `the cloud does not send "${header.type}"`);
  return { header, payload };
}

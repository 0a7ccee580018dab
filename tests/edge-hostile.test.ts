/**
 * `splitllm edge` against a fake cloud that breaks the protocol in every way a hostile or broken server
 * can: each run ends with exit 1 and one line `splitllm: error [CODE]: …` on stderr, no stack trace.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { encodeFrame, parseEdgeFrame, type EdgeMessage } from '../shared/protocol/index.js';
import { lengthPrefixed, msgpack } from '../shared/protocol/frame.js';
import { cliAsync } from './helpers/cli.js';

/** What the fake cloud does with each message it gets. */
type Script = (ws: WebSocket, m: EdgeMessage) => void;

/** the session id the edge put in the URL of the connection being served (a faithful cloud echoes it) */
let urlSession = '';
const ready = (session = urlSession, length = 0, split = 2) => encodeFrame({ type: 'ready', session, layers: 6, split, maxSeq: 256, length, resumeSecret: 'fake-secret' });
const token = (id: number, done = false) => encodeFrame({ type: 'token', id, done, cloudMs: 1 });
const raw = (header: unknown) => lengthPrefixed(msgpack.pack(header), new Uint8Array(0));

const SCENARIOS: { name: string; script: Script; error: RegExp }[] = [
  { name: 'random bytes instead of ready', script: (ws) => ws.send(new Uint8Array([9, 9, 9, 9, 1, 2, 3])), error: /\[E_PROTOCOL\]: the cloud sent a malformed frame \(bad_frame/ },
  { name: 'msgpack garbage', script: (ws) => ws.send(new Uint8Array([2, 0, 0, 0, 0xc1, 0xc1])), error: /\[E_PROTOCOL\]: .*bad_msgpack/ },
  { name: 'a text frame', script: (ws) => ws.send('{"type":"ready"}'), error: /\[E_PROTOCOL\]: the cloud sent a text frame/ },
  { name: 'a token before ready', script: (ws) => ws.send(token(5)), error: /\[E_PROTOCOL\]: expected ready from the cloud, got token/ },
  { name: 'ready with a session of the wrong type', script: (ws) => ws.send(raw({ type: 'ready', session: 5, layers: 6, split: 2, maxSeq: 256, length: 0 })), error: /\[E_PROTOCOL\]: .*bad_message: ready: session must be a string/ },
  { name: 'ready for another session than the edge chose', script: (ws) => ws.send(ready('someone-else')), error: /\[E_PROTOCOL\]: the cloud opened session someone-… instead of the edge's [A-Za-z0-9_-]{8}…/ },
  { name: 'ready for another split', script: (ws) => ws.send(ready('s', 0, 4)), error: /\[E_PROTOCOL\]: the cloud answered hello with split 4/ },
  { name: 'an edge message type', script: (ws) => ws.send(raw({ type: 'hello', version: 1 })), error: /\[E_PROTOCOL\]: .*unknown_type: the cloud does not send "hello"/ },
  {
    name: 'a token outside the vocabulary',
    script: (ws, m) => ws.send(m.type === 'hello' ? ready() : token(99_999)),
    error: /\[E_PROTOCOL\]: the cloud sent token 99999, outside the model's vocabulary/,
  },
  {
    name: 'a token whose fields are wrong',
    script: (ws, m) => ws.send(m.type === 'hello' ? ready() : raw({ type: 'token', id: 3, done: 'maybe', cloudMs: 1 })),
    error: /\[E_PROTOCOL\]: .*token: done must be true or false/,
  },
  {
    name: 'kv frames nobody asked for',
    script: (ws, m) => ws.send(m.type === 'hello' ? ready() : encodeFrame({ type: 'kv', layer: 0, length: 1 }, new Uint8Array(8))),
    error: /\[E_PROTOCOL\]: expected token from the cloud, got kv/,
  },
  {
    name: 'an error frame mid-generation',
    script: (ws, m) => ws.send(m.type === 'hello' ? ready() : encodeFrame({ type: 'error', code: 'internal', message: 'boom' })),
    error: /\[E_PROTOCOL\]: cloud: internal: boom/,
  },
  {
    name: 'a close mid-step',
    script: (ws, m) => {
      if (m.type === 'hello') ws.send(ready());
      else if (m.type === 'prefill') ws.send(token(40));
      else ws.close(1008, 'go away');
    },
    error: /\[E_CONNECTION\]: the cloud closed the connection \(1008: go away\)/,
  },
  {
    name: 'a resume answered with another session (a token for another session)',
    script: (ws, m) => {
      if (m.type === 'hello') ws.send(ready());
      else if (m.type === 'prefill') ws.terminate(); // a dropped link: the edge resumes
      else if (m.type === 'resume') ws.send(ready('someone-else', 0));
    },
    error: /\[E_PROTOCOL\]: the cloud resumed session someone-… instead of [A-Za-z0-9_-]{8}…/,
  },
  {
    name: 'a resume that claims more positions than the edge fed',
    script: (ws, m) => {
      if (m.type === 'hello') ws.send(ready());
      else if (m.type === 'prefill') ws.terminate();
      else if (m.type === 'resume') ws.send(ready(undefined, m.position + 50));
    },
    error: /\[E_PROTOCOL\]: the cloud holds \d+ positions of a session the edge fed \d+/,
  },
  {
    name: 'a link that drops on every step (resumes run out)',
    script: (ws, m) => {
      if (m.type === 'hello') ws.send(ready());
      else if (m.type === 'resume') ws.send(ready(undefined, 0));
      else ws.terminate();
    },
    error: /\[E_CONNECTION\]: the connection to the cloud dropped \(1006\)/,
  },
];

describe('splitllm edge against a hostile cloud', () => {
  let server: WebSocketServer;
  let script: Script = () => undefined;
  let url = '';
  beforeAll(async () => {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((r) => server.once('listening', r));
    const addr = server.address();
    url = `ws://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/v1/session`;
    server.on('connection', (ws, req) => {
      const session = new URL(req.url ?? '/', 'http://x').searchParams.get('session') ?? '';
      ws.on('message', (d: Buffer) => {
        urlSession = session;
        try {
          script(ws, parseEdgeFrame(new Uint8Array(d)).header);
        } catch {
          ws.terminate();
        }
      });
    });
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it.each(SCENARIOS.map((s) => [s.name, s] as const))('%s: exit 1 and one typed line', async (_name, s) => {
    script = s.script;
    const r = await cliAsync(['edge', '--cloud', url, '--split', '2', '--prompt', 'ROMEO:', '--max-tokens', '8']);
    const lines = r.stderr.trim().split('\n');
    expect(r.code, r.stderr).toBe(1);
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^splitllm: error \[E_[A-Z_]+\]: \S.*$/);
    expect(lines[0]).toMatch(s.error);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

/**
 * Pipelined prefill: the prompt leaves the edge in chunks as the front segment produces them, each
 * encoded on its own, and the cloud runs each as it arrives. Tokens equal local generation for every
 * chunk size (1 position, a ragged last chunk, the default, one message) with the fp32 codec, and a
 * per-position lossy codec gives over chunks the tokens it gives in one message; a link cut between
 * chunks is resumed, the chunks the cloud never got are sent again, and the output is unchanged. (A step
 * before the last chunk is refused: tests/cloud-session.test.ts.)
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { DEFAULT_PREFILL_CHUNK, runEdge } from '../edge/agent.js';
import { wsConnector } from '../edge/connect-node.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { parseEdgeFrame } from '../shared/protocol/index.js';
import type { Connector } from '../shared/transport/channel.js';
import { withSend } from './helpers/channels.js';
import { defaultModel } from './helpers/models.js';

let server: CloudServer;
beforeAll(async () => {
  server = await startCloud(await defaultModel());
});
afterAll(async () => server?.close());

const PROMPT = 'ROMEO:\nIs the day so young? Ay, sad hours seem long. Was that my father that went hence so fast? '.repeat(2);

it('every chunk size gives the tokens of local generation, and the prompt goes in ⌈n / chunk⌉ prefill frames', async () => {
  const pkg = await defaultModel();
  const ids = pkg.tokenizer().encode(PROMPT, true);
  expect(ids.length).toBeGreaterThan(2 * DEFAULT_PREFILL_CHUNK);
  const p = await Pipeline.create(pkg);
  const local = await generate(p, ids, { maxTokens: 24, stopIds: [] });
  await p.release();
  for (const chunk of [1, 7, DEFAULT_PREFILL_CHUNK, undefined, ids.length, 10_000]) {
    let prefills = 0;
    let last = true;
    const url = `${server.url}/v1/session`;
    const inner = wsConnector(url);
    const counting: Connector = async (session) => {
      const ch = await inner(session);
      return withSend(ch, (frame) => {
        const m = parseEdgeFrame(frame).header;
        if (m.type === 'prefill') {
          prefills++;
          last = m.more !== true;
        }
        ch.send(frame);
      });
    };
    const r = await runEdge(pkg, { url, split: 3, codec: 'fp32', prompt: PROMPT, maxTokens: 24, stopIds: [], prefillChunk: chunk, connect: counting });
    expect(r.tokens, `chunks of ${chunk}`).toEqual(local);
    expect(prefills, `chunks of ${chunk}`).toBe(Math.ceil(ids.length / Math.min(chunk ?? DEFAULT_PREFILL_CHUNK, ids.length)));
    expect(last).toBe(true);
  }
});

it('a per-position codec (uniform 8-bit) over chunks gives the tokens it gives in one message', async () => {
  const pkg = await defaultModel();
  const url = `${server.url}/v1/session`;
  const one = await runEdge(pkg, { url, split: 3, codec: 'uniform:8', prompt: PROMPT, maxTokens: 16, stopIds: [], prefillChunk: 10_000 });
  const chunked = await runEdge(pkg, { url, split: 3, codec: 'uniform:8', prompt: PROMPT, maxTokens: 16, stopIds: [], prefillChunk: 16 });
  // a per-token codec encodes each position alike whatever the chunk: the same tokens, about the same bytes
  expect(chunked.tokens).toEqual(one.tokens);
  expect(chunked.stats.bytesUp).toBeGreaterThan(one.stats.bytesUp);
  expect(chunked.stats.bytesUp).toBeLessThan(one.stats.bytesUp * 1.1);
});

it('a link cut between prefill chunks is resumed: the chunks the cloud lacks go again and the output is unchanged', async () => {
  const pkg = await defaultModel();
  const ids = pkg.tokenizer().encode(PROMPT, true);
  const p = await Pipeline.create(pkg);
  const local = await generate(p, ids, { maxTokens: 16, stopIds: [] });
  await p.release();
  const url = `${server.url}/v1/session`;
  const inner = wsConnector(url);
  let connections = 0;
  let chunksSent = 0;
  const cutting: Connector = async (session) => {
    const ch = await inner(session);
    connections++;
    const first = connections === 1;
    return withSend(ch, (frame) => {
      const m = parseEdgeFrame(frame).header;
      // the first connection dies right after its second chunk: the third never reaches the cloud
      if (first && m.type === 'prefill') {
        chunksSent++;
        if (chunksSent === 3) return ch.terminate();
      }
      ch.send(frame);
    });
  };
  const r = await runEdge(pkg, { url, split: 3, codec: 'fp32', prompt: PROMPT, maxTokens: 16, stopIds: [], prefillChunk: 16, connect: cutting });
  expect(r.tokens).toEqual(local);
  expect(r.stats.resumes).toBe(1);
  expect(connections).toBe(2);
});

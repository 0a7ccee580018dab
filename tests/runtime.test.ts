import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { encodeFrame, parseCloudFrame, PROTOCOL_VERSION, type Message } from '../shared/protocol/index.js';
import { droppingConnector } from './helpers/channels.js';
import { createCodec, decodeMessage } from '../quantization/activations/registry.js';
import { CalibrationContexts, contextData, type Calibration } from '../quantization/activations/calibration.js';
import { describeWithFixtures } from './helpers/fixtures.js';
import { defaultModel, storiesModel } from './helpers/models.js';
import { maxAbsDiff } from '../shared/tensor.js';

const PROMPT = 'Once upon a time, there was a little cat named Tom.';

describe('cloud limits: bearer token and frame size (default model)', () => {
  it('refuses a missing or wrong token and an oversized frame with their own codes', async () => {
    const pkg = await defaultModel();
    const server = await startCloud(pkg, { token: 's3cret', maxFrameBytes: 4096 });
    try {
      await expect(runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: 'hi', maxTokens: 4 })).rejects.toThrow(/unauthorized/);
      await expect(runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: 'hi', maxTokens: 4, token: 'nope' })).rejects.toThrow(/unauthorized/);
      const ok = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: 'hi', maxTokens: 4, token: 's3cret' });
      expect(ok.tokens.length).toBe(4);
      // a ~90-token fp32 prefill is ~70 KB, over the 4 KB limit: the connection closes with 1009 (message too big)
      const long = 'one two three four five six seven eight nine ten '.repeat(4);
      await expect(runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: long, maxTokens: 4, token: 's3cret' })).rejects.toThrow(/closed the connection \(1009/);
      const m = await (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text();
      expect(m).toMatch(/splitllm_errors_total\{code="unauthorized"\} 2/);
      expect(m).toMatch(/splitllm_errors_total\{code="frame_too_large"\} 1/);
      expect(m).not.toMatch(/code="ws_protocol"/);
    } finally {
      await server.close();
    }
    // a full server says so with its own code, and serves again once a connection leaves
    const full = await startCloud(pkg, { maxSessions: 1 });
    try {
      const url = `${full.url}/v1/session`;
      // the first session holds the only slot until it stops on its own signal (not a timer: decode is fast)
      const hold = new AbortController();
      const first = runEdge(pkg, { url, split: 2, prompt: 'hi', maxTokens: 250, stopIds: [], signal: hold.signal, onToken: () => undefined });
      const metrics = async () => (await fetch(`${full.url.replace('ws', 'http')}/metrics`)).text();
      for (let i = 0; i < 100 && !/splitllm_connections_open 1/.test(await metrics()); i++) await new Promise((r) => setTimeout(r, 5));
      await expect(runEdge(pkg, { url, split: 2, prompt: 'hi', maxTokens: 4 })).rejects.toThrow(/cloud: busy: the server holds its limit of 1 sessions/);
      hold.abort();
      expect((await first).stats.interrupted).toBe(true);
      for (let i = 0; i < 100 && !/splitllm_connections_open 0/.test(await (await fetch(`${full.url.replace('ws', 'http')}/metrics`)).text()); i++) await new Promise((r) => setTimeout(r, 20));
      expect((await runEdge(pkg, { url, split: 2, prompt: 'hi', maxTokens: 4, stopIds: [] })).tokens.length).toBe(4);
    } finally {
      await full.close();
    }
  });
});

describe('splitllm edge against splitllm cloud (processes, default model)', () => {
  it('gives the tokens of splitllm generate (from a plan file too, at its block unless --block-size says otherwise), and a one-line error when the cloud is down', async () => {
    const { spawn } = await import('node:child_process');
    const { join } = await import('node:path');
    const { REPO } = await import('./helpers/fixtures.js');
    const { cli } = await import('./helpers/cli.js');
    const server = spawn(process.execPath, [join(REPO, 'bin', 'splitllm.js'), 'cloud', '--port', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        server.stdout.once('data', (d: Buffer) => resolve((JSON.parse(d.toString().split('\n')[0]!) as { url: string }).url));
        server.once('exit', (code) => reject(new Error(`cloud exited with ${code}`)));
      });
      const local = cli(['generate', '--prompt', 'ROMEO:', '--max-tokens', '64', '--json']);
      const edge = cli(['edge', '--cloud', url, '--split', '2', '--prompt', 'ROMEO:', '--max-tokens', '64', '--json']);
      expect(edge.code, edge.stderr).toBe(0);
      const e = JSON.parse(edge.stdout) as { tokens: number[]; text: string; stats: { bytesUpPerToken: number; cloudMs: number } };
      const l = JSON.parse(local.stdout) as { tokens: number[]; text: string };
      expect(e.tokens).toEqual(l.tokens);
      expect(e.text).toBe(l.text);
      expect(e.stats.bytesUpPerToken).toBeGreaterThan(0);
      // the same run from a plan file
      const { writeFileSync, mkdtempSync } = await import('node:fs');
      const { tmpdir } = await import('node:os');
      const planPath = join(mkdtempSync(join(tmpdir(), 'splitllm-plan-')), 'plan.json');
      writeFileSync(planPath, JSON.stringify({ plan: { split: 2, frontBits: 32, backBits: 32, codec: 'fp32', kvCodec: 'fp32', maxSeq: 512, predicted: {} } }));
      const viaPlan = cli(['edge', '--cloud', url, '--plan', planPath, '--prompt', 'ROMEO:', '--max-tokens', '64', '--json']);
      expect(viaPlan.code, viaPlan.stderr).toBe(0);
      expect((JSON.parse(viaPlan.stdout) as { tokens: number[] }).tokens).toEqual(l.tokens);
      // a plan at 4 bits in blocks of 128: the edge quantizes its front so and tells the cloud (tokens of one process at that
      // block, which differ from block 32's and 64's); --block-size on the command line wins over the plan's
      const tokensOf = (r: { stdout: string }) => (JSON.parse(r.stdout) as { tokens: number[] }).tokens;
      const oneProcess = (block: number) => tokensOf(cli(['generate', '--prompt', 'ROMEO:', '--max-tokens', '24', '--split', '2', '--weight-bits', '4', '--block-size', String(block), '--json']));
      const [b32, b64, b128] = [oneProcess(32), oneProcess(64), oneProcess(128)];
      expect(b128).not.toEqual(b32);
      expect(b64).not.toEqual(b128);
      writeFileSync(planPath, JSON.stringify({ plan: { split: 2, frontBits: 4, backBits: 4, blockSize: 128, codec: 'fp32', kvCodec: 'fp32', maxSeq: 512, predicted: {} } }));
      expect(tokensOf(cli(['edge', '--cloud', url, '--plan', planPath, '--prompt', 'ROMEO:', '--max-tokens', '24', '--json']))).toEqual(b128);
      expect(tokensOf(cli(['edge', '--cloud', url, '--plan', planPath, '--block-size', '64', '--prompt', 'ROMEO:', '--max-tokens', '24', '--json']))).toEqual(b64);
      writeFileSync(planPath, JSON.stringify({ split: 2, frontBits: 5, backBits: 32, codec: 'fp32', kvCodec: 'fp32', maxSeq: 512 }));
      const badPlan = cli(['edge', '--cloud', url, '--plan', planPath, '--prompt', 'ROMEO:']);
      expect(badPlan.code).toBe(1);
      expect(badPlan.stderr).toMatch(/\[E_BAD_CONFIG\]: .*frontBits 5/);
    } finally {
      server.kill('SIGTERM');
    }
    const { cli: run } = await import('./helpers/cli.js');
    const down = run(['edge', '--cloud', 'ws://127.0.0.1:1', '--split', '2', '--prompt', 'hi']);
    expect(down.code).toBe(1);
    expect(down.stdout).toBe('');
    expect(down.stderr.trim().split('\n')).toHaveLength(1);
    expect(down.stderr).toMatch(/\[E_CONNECTION\]: cannot reach the cloud/);
  });
});

/**
 * The loopback suite runs on stories260K (fixtures) and on the default model (every clone). Greedy
 * runs ignore EOS (stopIds: []) so that every comparison covers the full length.
 */
const SUITES = [
  { name: 'stories260K', load: storiesModel, prompt: PROMPT, describe: describeWithFixtures },
  { name: 'the default model', load: defaultModel, prompt: 'ROMEO:\nIs the day so young?', describe: describe },
];
for (const { name, load: model, prompt: PROMPT, describe: describeIt } of SUITES) describeIt(`edge ⇄ cloud over loopback with ${name}`, () => {
  let server: CloudServer;
  beforeAll(async () => {
    server = await startCloud(await model(), { sessionTokenLimit: 500 });
  });
  afterAll(async () => server?.close());

  it('every split gives exactly the tokens of local generation (fp32 codec, greedy, 64 tokens)', async () => {
    const pkg = await model();
    const local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode(PROMPT), { maxTokens: 64, stopIds: [] });
    expect(local.length).toBe(64);
    for (let k = 0; k <= pkg.config.nLayers; k++) {
      const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split: k, codec: 'fp32', prompt: PROMPT, maxTokens: 64, stopIds: [] });
      expect(r.tokens, `split ${k}`).toEqual(local);
      expect(r.stats.bytesUpPerToken).toBeGreaterThan(0);
    }
  });

  it('OPSC over the wire: front 4 bits on the edge, back 8 bits in the cloud, equals the same plan run locally', async () => {
    const pkg = await model();
    const { linearFor } = await import('../models/onnx/linear.js');
    const f4 = linearFor(4, 32);
    const b8 = linearFor(8, 32);
    const local = await generate(await Pipeline.create(pkg, [2], { linearFor: (l) => (l < 2 ? f4 : b8) }), pkg.tokenizer().encode(PROMPT), { maxTokens: 48, stopIds: [] });
    const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: PROMPT, maxTokens: 48, stopIds: [], linearFor: () => f4, frontBits: 4, backBits: 8 });
    expect(r.tokens).toEqual(local);
    await expect(runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: PROMPT, maxTokens: 4, backBits: 5 })).rejects.toThrow(/bad_hello: weight bits 5/);
  });

  it('a quantized LM head (4 and 8 bits) over the wire equals the same head run locally, and its logits move from the float32 head', async () => {
    const pkg = await model();
    const { linearFor } = await import('../models/onnx/linear.js');
    const ids = pkg.tokenizer().encode(PROMPT);
    const logits = async (headLinear?: ReturnType<typeof linearFor>) => {
      const p = await Pipeline.create(pkg, [], { headLinear });
      const out = (await p.forward(ids)).data;
      await p.release();
      return out;
    };
    const f32 = await logits();
    const moved: number[] = [];
    for (const headBits of [8, 4]) {
      moved.push(maxAbsDiff(await logits(linearFor(headBits, 32)), f32));
      const p = await Pipeline.create(pkg, [2], { headLinear: linearFor(headBits, 32) });
      const local = await generate(p, ids, { maxTokens: 48, stopIds: [] });
      await p.release();
      const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: PROMPT, maxTokens: 48, stopIds: [], headBits });
      expect(r.tokens, `${headBits}-bit head`).toEqual(local);
    }
    // the head really is quantized, and 8 bits stays closer to float32 than 4
    expect(moved[0]).toBeGreaterThan(1e-6);
    expect(moved[0]).toBeLessThan(moved[1]!);
    await expect(runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: PROMPT, maxTokens: 4, headBits: 5 })).rejects.toThrow(/bad_hello: weight bits 5/);
  });

  it('a calibrated codec (ts-tabq:cal=K) over the wire gives the tokens of the same codec run locally; a cloud without the calibration refuses it', async () => {
    const pkg = await model();
    const k = 2;
    const D = pkg.config.dim;
    // the context from real hidden states at split k (a few calibration-like prompts)
    const rows: Float32Array[] = [];
    const capture = await Pipeline.create(pkg, [k]);
    capture.between = (h) => (rows.push(h.slice()), h);
    for (const text of [PROMPT, 'The sun was warm and the birds sang.', 'She looked at the sky and smiled.', 'He ran home.']) await capture.forward(pkg.tokenizer().encode(text), { keepCache: false });
    await capture.release();
    const cal: Calibration = { format: 'splitllm-calibration', version: 1, model: pkg.hash, text: 'test', windows: rows.length, target: 0.009, baselinePpl: 0, splits: { [String(k)]: { stats: {} as never, context: contextData(rows, D) } } };
    const contexts = new CalibrationContexts(cal);
    const spec = `ts-tabq:cal=${k},step=0.3`;
    const codec = createCodec(spec, contexts);
    const wire = await Pipeline.create(pkg, [k]);
    wire.between = (h, tokens) => decodeMessage(codec.encode(h, tokens, D), { contexts: contexts.contexts }).x;
    const local = await generate(wire, pkg.tokenizer().encode(PROMPT), { maxTokens: 32, stopIds: [] });
    const calibrated = await startCloud(pkg, { calibration: contexts });
    try {
      const r = await runEdge(pkg, { url: `${calibrated.url}/v1/session`, split: k, codec: spec, codecEnv: contexts, prompt: PROMPT, maxTokens: 32, stopIds: [] });
      expect(r.tokens).toEqual(local);
      expect(r.stats.bytesUpPerToken).toBeLessThan(4 * D); // well under float32 (and its framing)
    } finally {
      await calibrated.close();
    }
    // a cloud without a calibration (startCloud defaults to the package's: say none)
    const uncalibrated = await startCloud(pkg, { calibration: new CalibrationContexts(undefined) });
    try {
      await expect(runEdge(pkg, { url: `${uncalibrated.url}/v1/session`, split: k, codec: spec, codecEnv: contexts, prompt: PROMPT, maxTokens: 4 })).rejects.toThrow(/bad_hello: .*needs the calibration of split 2/);
    } finally {
      await uncalibrated.close();
    }
  });

  it('re-splits mid-generation in both directions: lossless KV gives the same tokens', async () => {
    const pkg = await model();
    const local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode(PROMPT), { maxTokens: 64, stopIds: [] });
    const moves: { from: number; to: number; bytes: number }[] = [];
    const r = await runEdge(pkg, {
      url: `${server.url}/v1/session`,
      split: 2,
      prompt: PROMPT,
      maxTokens: 64,
      stopIds: [],
      kvCodec: 'fp32',
      resplits: [
        { afterTokens: 10, split: 4 },
        { afterTokens: 25, split: 1 },
        { afterTokens: 40, split: 0 },
        { afterTokens: 50, split: 5 },
      ],
      onResplit: (m) => moves.push(m),
    });
    expect(moves.map((m) => [m.from, m.to])).toEqual([[2, 4], [4, 1], [1, 0], [0, 5]]);
    expect(moves.every((m) => m.bytes > 0)).toBe(true);
    expect(r.tokens).toEqual(local);
    // compressed KV (int8 per row): same protocol, the tokens may drift; the agreement is reported
    const q = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 2, prompt: PROMPT, maxTokens: 64, stopIds: [], kvCodec: 'int8', resplits: [{ afterTokens: 10, split: 4 }, { afterTokens: 25, split: 1 }] });
    const agree = q.tokens.filter((t, i) => t === local[i]).length;
    process.stderr.write(`[runtime] int8 KV re-split: ${agree}/${local.length} tokens agree with local generation\n`);
    expect(agree).toBeGreaterThanOrEqual(10); // identical up to the first re-split at least
  });

  it('the online planner (bandit over splits) re-splits in a live session, keeps the tokens and learns to avoid a slow split', async () => {
    const pkg = await model();
    const { SplitBandit } = await import('../planner/bandit.js');
    const local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode(PROMPT), { maxTokens: 64, stopIds: [] });
    const bandit = new SplitBandit([1, 3, 4], 4, 9);
    const r = await runEdge(pkg, {
      url: `${server.url}/v1/session`,
      split: bandit.first,
      prompt: PROMPT,
      maxTokens: 64,
      stopIds: [],
      // split 1 pays 40 ms more per token (as if its layers ran on a slow device): the bandit only sees latency
      adapt: ({ latencyMs, split }) => bandit.step(latencyMs + (split === 1 ? 40 : 0)),
    });
    expect(r.tokens).toEqual(local); // lossless KV on every move
    expect(new Set(bandit.history)).toEqual(new Set([1, 3, 4])); // every arm tried
    expect(r.stats.resplits.length).toBeGreaterThanOrEqual(2);
    expect(bandit.best()).not.toBe(1);
    expect(bandit.history.slice(-5).filter((k) => k === 1).length).toBeLessThanOrEqual(1);
  });

  // 400 positions need stories260K's 512; the default model holds 256
  it.runIf(name === 'stories260K')('the memory trigger keeps the edge under its budget across a 400-token generation', async () => {
    const pkg = await model();
    const { edgeBytes } = await import('../edge/memory-policy.js');
    // split 4 holds 60 positions by the memory rule (the KV cache's growth room counted); lower splits hold more
    const budget = edgeBytes(pkg.memoryShape, {}, 4, 60);
    const local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode('Lily'), { maxTokens: 400, stopIds: [] });
    const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split: 4, prompt: 'Lily', maxTokens: 400, stopIds: [], edgeMemory: budget, kvCodec: 'fp32' });
    process.stderr.write(`[runtime] memory trigger: budget ${budget} B, peak ${r.stats.peakEdgeBytes} B, re-splits ${JSON.stringify(r.stats.resplits.map((m) => [m.from, m.to, m.atToken, m.bytes]))}\n`);
    expect(r.stats.peakEdgeBytes).toBeLessThanOrEqual(budget);
    expect(r.stats.resplits.length).toBeGreaterThanOrEqual(2);
    expect(r.stats.resplits.every((m) => m.to < m.from)).toBe(true);
    expect(r.tokens.length).toBe(400);
    expect(r.tokens).toEqual(local); // lossless KV: the same tokens as local generation
  });

  it('a connection killed mid-generation resumes the same session and finishes with the same tokens', async () => {
    const pkg = await model();
    const local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode(PROMPT), { maxTokens: 64, stopIds: [] });
    const url = `${server.url}/v1/session`;
    const r = await runEdge(pkg, { url, split: 3, prompt: PROMPT, maxTokens: 64, stopIds: [], connect: droppingConnector(url, [0, 5, 20, 21, 50]) });
    expect(r.stats.resumes).toBe(5);
    expect(r.tokens).toEqual(local);
    const m = await (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text();
    expect(Number(/splitllm_resumes_total (\d+)/.exec(m)![1])).toBeGreaterThanOrEqual(5);
  });

  it('an unknown or expired session id cannot be resumed', async () => {
    const pkg = await model();
    const short = await startCloud(pkg, { idleMs: 200 });
    try {
      const ws = new WebSocket(`${short.url}/v1/session`);
      await new Promise((r) => ws.once('open', r));
      const replies: Message[] = [];
      ws.on('message', (d: Buffer) => replies.push(parseCloudFrame(new Uint8Array(d)).header));
      ws.send(encodeFrame({ type: 'resume', session: 'no-such-session', secret: 'x', position: 3 }));
      await new Promise((r) => ws.once('close', r));
      expect(replies[0]).toMatchObject({ type: 'error', code: 'unknown_session' });
      // a session left idle past its expiry is gone
      const ws2 = new WebSocket(`${short.url}/v1/session`);
      await new Promise((r) => ws2.once('open', r));
      const got: Message[] = [];
      ws2.on('message', (d: Buffer) => got.push(parseCloudFrame(new Uint8Array(d)).header));
      ws2.send(encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, modelHash: pkg.hash, split: 2, codec: 'fp32', maxTokens: 5 }));
      await new Promise((r) => ws2.once('close', r));
      expect(got[0]).toMatchObject({ type: 'ready' });
      expect(got[1]).toMatchObject({ type: 'error', code: 'expired_session' });
      const first = got[0];
      const [id, secret] = first?.type === 'ready' ? [first.session, first.resumeSecret ?? ''] : ['', ''];
      const ws3 = new WebSocket(`${short.url}/v1/session`);
      await new Promise((r) => ws3.once('open', r));
      const got3: Message[] = [];
      ws3.on('message', (d: Buffer) => got3.push(parseCloudFrame(new Uint8Array(d)).header));
      ws3.send(encodeFrame({ type: 'resume', session: id, secret, position: 0 }));
      await new Promise((r) => ws3.once('close', r));
      expect(got3[0]).toMatchObject({ type: 'error', code: 'unknown_session' });
    } finally {
      await short.close();
    }
  });

  it('32 concurrent edge sessions all finish with the right tokens, and /metrics counts them', async () => {
    const pkg = await model();
    const prompts = Array.from({ length: 32 }, (_, i) => `Tim had ${i + 1} red balls and`);
    const expected = await Promise.all(
      prompts.slice(0, 4).map(async (p) => generate(await Pipeline.create(pkg), pkg.tokenizer().encode(p), { maxTokens: 24, stopIds: [] })),
    );
    const before = await (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text();
    const total0 = Number(/splitllm_sessions_total (\d+)/.exec(before)![1]);
    const runs = await Promise.all(prompts.map((p, i) => runEdge(pkg, { url: `${server.url}/v1/session`, split: 1 + (i % 4), codec: 'fp32', prompt: p, maxTokens: 24, stopIds: [] })));
    for (let i = 0; i < 4; i++) expect(runs[i]!.tokens).toEqual(expected[i]);
    for (let i = 4; i < 32; i++) {
      const local = await generate(await Pipeline.create(pkg), pkg.tokenizer().encode(prompts[i]!), { maxTokens: 24, stopIds: [] });
      expect(runs[i]!.tokens, prompts[i]).toEqual(local);
    }
    const after = await (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text();
    expect(Number(/splitllm_sessions_total (\d+)/.exec(after)![1]) - total0).toBe(32);
    expect(after).toMatch(/splitllm_step_duration_seconds_count \d+/);
    // decode steps that arrived together ran as batches
    const maxBatch = Number(/splitllm_step_batch_max (\d+)/.exec(after)![1]);
    process.stderr.write(`[runtime] 32 sessions: largest step batch ${maxBatch}, ${/splitllm_batched_steps_total (\d+)/.exec(after)![1]} steps in ${/splitllm_step_batches_total (\d+)/.exec(after)![1]} runs\n`);
    expect(maxBatch).toBeGreaterThan(1);
  });

  it('bad messages get their own error codes while a healthy session keeps going', async () => {
    const pkg = await model();
    const open = () =>
      new Promise<{ ws: WebSocket; next: () => Promise<Message> }>((resolve, reject) => {
        const ws = new WebSocket(`${server.url}/v1/session`);
        const q: Message[] = [];
        const waiters: ((m: Message) => void)[] = [];
        ws.on('message', (d: Buffer) => {
          const m = parseCloudFrame(new Uint8Array(d)).header;
          const w = waiters.shift();
          if (w) w(m);
          else q.push(m);
        });
        ws.on('open', () => resolve({ ws, next: () => (q.length ? Promise.resolve(q.shift()!) : new Promise((r) => waiters.push(r))) }));
        ws.on('error', reject);
      });
    const hello = { type: 'hello', version: PROTOCOL_VERSION, modelHash: pkg.hash, split: 2, codec: 'fp32', maxTokens: 50 } as const;
    const codec = createCodec('fp32');
    const D = pkg.config.dim;
    const expectCode = async (s: Awaited<ReturnType<typeof open>>, send: () => void, code: string) => {
      send();
      const m = await s.next();
      expect(m.type, code).toBe('error');
      expect((m as { code: string }).code).toBe(code);
    };
    // a healthy session, started first, interleaved with every bad one
    const healthy = runEdge(pkg, { url: `${server.url}/v1/session`, split: 3, codec: 'fp32', prompt: PROMPT, maxTokens: 40, stopIds: [] });
    healthy.catch(() => undefined); // awaited below; keeps a failing assertion from leaving it unhandled
    const s = await open();
    await expectCode(s, () => s.ws.send(Buffer.from([1, 2])), 'bad_frame');
    await expectCode(s, () => s.ws.send(Buffer.from([2, 0, 0, 0, 0xc1, 0xc1])), 'bad_msgpack');
    await expectCode(s, () => s.ws.send(encodeFrame({ type: 'bogus' } as unknown as Message)), 'unknown_type');
    await expectCode(s, () => s.ws.send(encodeFrame({ type: 'prefill', tokens: 1 }, codec.encode(new Float32Array(D), 1, D))), 'unknown_session');
    const s2 = await open();
    await expectCode(s2, () => s2.ws.send(encodeFrame({ ...hello, version: 99 })), 'bad_version');
    const s3 = await open();
    await expectCode(s3, () => s3.ws.send(encodeFrame({ ...hello, modelHash: 'f00d' })), 'bad_model');
    const s4 = await open();
    s4.ws.send(encodeFrame(hello));
    expect((await s4.next()).type).toBe('ready');
    await expectCode(s4, () => s4.ws.send(encodeFrame({ type: 'step', token: 5 }, codec.encode(new Float32Array(D), 1, D))), 'step_before_prefill');
    await expectCode(s4, () => s4.ws.send(encodeFrame({ type: 'prefill', tokens: 2 }, codec.encode(new Float32Array(D * 3), 3, D))), 'bad_tensor');
    const nanMsg = codec.encode(new Float32Array(D), 1, D);
    new DataView(nanMsg.buffer).setFloat32(12, NaN, true);
    await expectCode(s4, () => s4.ws.send(encodeFrame({ type: 'prefill', tokens: 1 }, nanMsg)), 'nan_tensor');
    await expectCode(s4, () => s4.ws.send(encodeFrame({ type: 'prefill', tokens: 600 }, codec.encode(new Float32Array(D * 600), 600, D))), 'token_limit');
    const wrongDim = createCodec('fp32').encode(new Float32Array(D + 4), 1, D + 4);
    await expectCode(s4, () => s4.ws.send(encodeFrame({ type: 'prefill', tokens: 1 }, wrongDim)), 'bad_tensor');
    for (const x of [s, s2, s3, s4]) x.ws.close();
    const h = await healthy;
    expect(h.tokens.length).toBeGreaterThan(0);
    const res = await fetch(`${server.url.replace('ws', 'http')}/metrics`);
    const text = await res.text();
    expect(text).toMatch(/splitllm_errors_total\{code="bad_version"\} 1/);
    expect(text).toMatch(/splitllm_sessions_total \d+/);
  });
});

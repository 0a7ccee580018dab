/**
 * What a cloud can make the edge's CLI do: text it sends (an error's message) reaches the terminal as text,
 * never as escape sequences or extra lines.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { printable } from '../cli/main.js';
import { encodeFrame, parseEdgeFrame, type EdgeMessage } from '../shared/protocol/index.js';
import { cliAsync } from './helpers/cli.js';
import { rawWsServer, serverFrame } from './helpers/raw-ws.js';

it('printable writes control characters (escape sequences, line breaks, C1) as \\xNN and leaves other text alone', () => {
  expect(printable('\x1b[2J\x1b]0;title\x07 next\nline\r\u009b31m é ✓')).toBe('\\x1b[2J\\x1b]0;title\\x07 next\\x0aline\\x0d\\x9b31m é ✓');
  expect(printable('plain: text (with 100% of it)')).toBe('plain: text (with 100% of it)');
});

it("a cloud's error message with terminal escapes and line breaks reaches the terminal as one escaped line", async () => {
  const evil = '\x1b[2J\x1b]0;pwned\x07clear screen\nsplitllm: error [E_FAKE]: a second line';
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  const port = (wss.address() as { port: number }).port;
  wss.on('connection', (ws) => {
    // answer the hello (the first frame) with an error, as a hostile or broken cloud may
    ws.once('message', () => ws.send(encodeFrame({ type: 'error', code: 'bad_hello', message: evil })));
  });
  try {
    const r = await cliAsync(['edge', '--cloud', `ws://127.0.0.1:${port}`, '--split', '2', '--prompt', 'ROMEO:', '--max-tokens', '4'], { timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    // (the edge already folds the message's line breaks into spaces; the escapes are written out)
    expect(lines[0]).toContain('cloud: bad_hello: \\x1b[2J\\x1b]0;pwned\\x07clear screen');
    expect(lines[0]).toContain('a second line');
    expect(lines[0]).toMatch(/^splitllm: error \[E_\w+\]: /);
  } finally {
    for (const c of wss.clients) c.terminate();
    wss.close();
  }
});

/**
 * Every wait of the edge has a deadline (edge/connection.ts, docs/PROTOCOL.md "Deadlines"): each cloud
 * below used to hang `splitllm edge` for good (or 30 s at exit); each run now ends, with a typed line
 * naming the deadline, well inside the bound asserted (the deadlines are 1-2 s; the bound is generous
 * for a loaded machine and far below the hang it replaces).
 */
describe('splitllm edge: deadlines against a cloud that stops answering', () => {
  const deadlines = ['--connect-timeout', '1s', '--ready-timeout', '2s'];
  const silence = ['--silence-timeout', '1s'];
  const answer = ['--answer-timeout', '1s'];
  const run = (url: string, extra: string[] = []) => cliAsync(['edge', '--cloud', url, '--split', '2', '--prompt', 'ROMEO:', '--max-tokens', '8', ...deadlines, ...extra], { timeoutMs: 60_000 });
  const ready = (session: string) => encodeFrame({ type: 'ready', session, layers: 6, split: 2, maxSeq: 256, length: 0, resumeSecret: 'fake-secret' });
  const token = (id: number, done = false) => encodeFrame({ type: 'token', id, done, cloudMs: 1 });

  /** a `ws` cloud running `script` on each message; `autoPong: false` is a cloud (or a path) that stopped at the WebSocket level */
  async function wsCloud(script: (ws: WebSocket, m: EdgeMessage, session: string) => void, autoPong = true): Promise<{ url: string; close(): void }> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong });
    await once(wss, 'listening');
    wss.on('connection', (ws, req) => {
      const session = new URL(req.url ?? '/', 'http://x').searchParams.get('session') ?? '';
      ws.on('message', (d: Buffer) => script(ws, parseEdgeFrame(new Uint8Array(d)).header, session));
    });
    const port = (wss.address() as AddressInfo).port;
    return {
      url: `ws://127.0.0.1:${port}/v1/session`,
      close: () => {
        for (const c of wss.clients) c.terminate();
        wss.close();
      },
    };
  }

  const oneLine = (r: { code: number; stderr: string }, code: string, what: RegExp) => {
    expect(r.code, r.stderr).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^splitllm: error \\[${code}\\]: `));
    expect(lines[0]).toMatch(what);
  };

  it('goes silent mid-generation (no frames, no pongs: a partition): the link counts as dropped, the resume finds silence too, exit 1', async () => {
    const cloud = await wsCloud((ws, m, session) => {
      if (m.type === 'hello') ws.send(ready(session));
      else if (m.type === 'prefill') ws.send(token(40));
      // steps and resumes: nothing, and pings are not answered
    }, false);
    try {
      const t0 = performance.now();
      const r = await run(cloud.url, silence);
      oneLine(r, 'E_CONNECTION', /the connection to the cloud dropped \(1006: nothing from the cloud for 1\.0 s, not even a pong\)/);
      expect(performance.now() - t0).toBeLessThan(30_000);
    } finally {
      cloud.close();
    }
  });

  it('drips its answer a byte at a time: the silence deadline cuts it', async () => {
    const drips: ReturnType<typeof setInterval>[] = [];
    const cloud = await rawWsServer((peer) => {
      peer.accept();
      let answered = false;
      peer.onData(() => {
        // the hello (and the pings that follow): the ready whole, then the token a byte every 300 ms
        if (answered) return;
        answered = true;
        peer.socket.write(serverFrame(ready(peer.session)));
        const frame = serverFrame(token(40));
        let i = 0;
        const t = setInterval(() => (i < frame.length && !peer.socket.destroyed ? peer.socket.write(frame.subarray(i, ++i)) : clearInterval(t)), 300);
        drips.push(t);
        peer.socket.on('close', () => clearInterval(t));
      });
    });
    try {
      const r = await run(cloud.url, silence);
      oneLine(r, 'E_CONNECTION', /nothing from the cloud for 1\.0 s/);
    } finally {
      for (const t of drips) clearInterval(t);
      await cloud.close();
    }
  });

  it('never answers the upgrade: the connect deadline ends it', async () => {
    const cloud = await rawWsServer(() => undefined);
    try {
      const r = await run(cloud.url);
      oneLine(r, 'E_CONNECTION', /did not complete the connection within 1\.0 s \(TCP connect and WebSocket upgrade\)/);
    } finally {
      await cloud.close();
    }
  });

  it('never answers a resume (but answers pings): the resume ready has a deadline', async () => {
    const cloud = await wsCloud((ws, m, session) => {
      if (m.type === 'hello') ws.send(ready(session));
      else if (m.type === 'prefill') ws.terminate(); // the link drops: the edge resumes, and the resume gets nothing
    });
    try {
      const r = await run(cloud.url, answer);
      oneLine(r, 'E_TIMEOUT', /the cloud did not send the ready answering the resume within 1\.0 s: retry later, or raise the deadline/);
    } finally {
      cloud.close();
    }
  });

  it('floods pings and never sends the token: the answer deadline ends it', async () => {
    const floods: ReturnType<typeof setInterval>[] = [];
    const cloud = await wsCloud((ws, m, session) => {
      if (m.type === 'hello') ws.send(ready(session));
      else if (m.type === 'prefill') floods.push(setInterval(() => ws.readyState === ws.OPEN && ws.ping(), 1));
    });
    try {
      const r = await run(cloud.url, answer);
      oneLine(r, 'E_TIMEOUT', /did not send the token answering \d+ position\(s\) within \d+\.\d s/);
    } finally {
      for (const t of floods) clearInterval(t);
      cloud.close();
    }
  });

  it('never completes the closing handshake: the CLI exits 0 about 2 s after its last token, not 30 s', async () => {
    let answeredAt = 0;
    let socketEndAt = 0;
    const cloud = await rawWsServer((peer) => {
      peer.accept();
      peer.onData(() => {
        // the hello: its ready and the last token at once; then nothing, the close frame included
        if (answeredAt) return;
        answeredAt = performance.now();
        peer.socket.write(Buffer.concat([serverFrame(ready(peer.session)), serverFrame(token(40, true))]));
      });
      peer.socket.on('close', () => (socketEndAt ||= performance.now()));
    });
    try {
      const r = await run(cloud.url);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/^1 tokens in /m);
      // the edge cut the socket once its 2 s close deadline passed (ws alone waits 30 s, and the CLI with it)
      expect(socketEndAt).toBeGreaterThan(answeredAt);
      expect(socketEndAt - answeredAt).toBeLessThan(15_000);
    } finally {
      await cloud.close();
    }
  });

  it('Ctrl-C while the edge waits for a token that never comes: it stops at once with what it has (exit 130)', async () => {
    const cloud = await wsCloud((ws, m, session) => {
      if (m.type === 'hello') ws.send(ready(session));
      else if (m.type === 'prefill') ws.send(token(40));
      // the step is never answered; pings are (a slow cloud, not a dead one)
    });
    let sent = 0;
    try {
      const r = await cliAsync(['edge', '--cloud', cloud.url, '--split', '2', '--prompt', 'ROMEO:', '--max-tokens', '8', '--answer-timeout', '10m'], {
        timeoutMs: 60_000,
        // once: a second Ctrl-C ends the process at once
        onStdout: (_chunk, kill) => void (sent++ === 0 && kill('SIGINT')),
      });
      expect(r.code, r.stderr).toBe(130);
      expect(r.stderr).toMatch(/^interrupted: 1 tokens in /m);
    } finally {
      cloud.close();
    }
  });
});

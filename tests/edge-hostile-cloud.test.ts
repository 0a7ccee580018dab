/**
 * What a cloud can make the edge's CLI do: text it sends (an error's message) reaches the terminal as text,
 * never as escape sequences or extra lines.
 */
import { once } from 'node:events';
import { expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { printable } from '../cli/main.js';
import { encodeFrame } from '../shared/protocol/index.js';
import { cliAsync } from './helpers/cli.js';

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

/**
 * The CLI as a new user meets it (default model, no fixtures): units that must be written, did-you-mean,
 * prompts from files and standard input and the context limit, a refused overwrite, a port in use,
 * calibrated weight strategies on a 256-position model, profile link with a bad token, a too-short
 * accuracy text, Ctrl-C on the edge, and plan measuring this machine when no profiles are given.
 */
import { createServer } from 'node:net';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCloud, type CloudServer } from '../cloud/server.js';
import { emulateLink } from '../cli/link-emulator.js';
import { parseBandwidth, parseBytes, parseDuration, parsePercent } from '../cli/units.js';
import { DEFAULT_MODEL_DIR } from '../models/default-model.js';
import { cli, cliAsync, type CliResult } from './helpers/cli.js';
import { defaultModel } from './helpers/models.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-cli-'));

function expectUserError(r: CliResult, code: string, text: RegExp, exit = code === 'E_USAGE' ? 2 : 1): void {
  const lines = r.stderr.trim().split('\n');
  expect(r.code, r.stderr).toBe(exit);
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toContain(`splitllm: error [${code}]: `);
  expect(lines[0]).toMatch(text);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

/** Shakespeare-like paragraphs, each well over 257 tokens of the default model's byte-level BPE. */
function longText(paragraphs: number): string {
  const line = 'ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun. ';
  return Array.from({ length: paragraphs }, (_, i) => `${line.repeat(12)} (${i})`).join('\n\n') + '\n';
}

describe('units are written out', () => {
  it('sizes, durations, bandwidths and percentages need their unit unless the flag names it', () => {
    expect(parseBytes('512MB')).toBe(512e6);
    expect(parseBytes('64KiB')).toBe(65536);
    expect(parseBytes('4096', '--max-frame-bytes', 'b')).toBe(4096);
    expect(() => parseBytes('160', '--edge-memory')).toThrow(/--edge-memory 160 needs a unit: 160MB, 160KB or 160B/);
    expect(parseDuration('2s')).toBe(2000);
    expect(parseDuration('1m')).toBe(60_000);
    expect(parseDuration('500', '--idle-ms', 'ms')).toBe(500);
    expect(() => parseDuration('150', '--latency')).toThrow(/--latency 150 needs a unit/);
    expect(parseBandwidth('10mbit')).toBe(1.25e6);
    expect(parseBandwidth('2MB/s')).toBe(2e6);
    expect(() => parseBandwidth('10', '--bandwidth')).toThrow(/needs a unit/);
    expect(parsePercent('1%')).toBeCloseTo(0.01, 12);
    expect(() => parsePercent('2', '--max-ppl-increase')).toThrow(/--max-ppl-increase 2 needs a %: write 2% \(or 200% for the fraction 2\)/);
  });

  it('the CLI refuses a bare --edge-memory or --max-ppl-increase in one line, and --idle-ms and --max-frame-bytes take units', () => {
    expectUserError(cli(['demo', '--edge-memory', '160']), 'E_USAGE', /--edge-memory 160 needs a unit/);
    expectUserError(cli(['plan', '--bandwidth', '1mbit', '--rtt', '40ms', '--edge-memory', '3MB', '--latency', '100ms', '--max-ppl-increase', '2']), 'E_USAGE', /needs a %/);
    expectUserError(cli(['cloud', '--idle-ms', 'soon']), 'E_USAGE', /--idle-ms "soon" is not a duration/);
    expectUserError(cli(['cloud', '--max-frame-bytes', 'big']), 'E_USAGE', /--max-frame-bytes "big" is not a size/);
    // --edge-memory means the model's share in demo and plan alike: both say so
    for (const cmd of ['demo', 'plan']) expect(cli([cmd, '--help']).stdout).toMatch(/--edge-memory SIZE +memory the model may take on the edge: weights, KV cache and buffers/);
  });
});

describe('commands and flags', () => {
  it('an unknown command or flag suggests the closest one', () => {
    expectUserError(cli(['genrate']), 'E_USAGE', /unknown command "splitllm genrate": did you mean splitllm generate\?/);
    expectUserError(cli(['profile', 'acuracy']), 'E_USAGE', /did you mean splitllm profile accuracy\?/);
    expectUserError(cli(['generate', '--max-token', '3']), 'E_USAGE', /Unknown option '--max-token': did you mean --max-tokens\?/);
    expectUserError(cli(['edge', '--split', '2']), 'E_USAGE', /--cloud is required/);
    expect(cli(['eval']).code).toBe(2);
    const help = cli(['profile', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/subcommands:\n {2}device .*\n {2}link .*\n {2}accuracy /);
  });

  it('every command has --help with its defaults and examples', () => {
    for (const cmd of [['demo'], ['import'], ['generate'], ['eval', 'ppl'], ['calibrate'], ['quantize', 'report'], ['cloud'], ['edge'], ['profile', 'device'], ['profile', 'link'], ['profile', 'accuracy'], ['plan']]) {
      const r = cli([...cmd, '--help']);
      expect(r.code, cmd.join(' ')).toBe(0);
      expect(r.stdout, cmd.join(' ')).toMatch(/^usage: splitllm /);
      expect(r.stdout, cmd.join(' ')).toMatch(/\nexamples:\n {2}\S/);
    }
    expect(cli(['cloud', '--help']).stdout).toMatch(/--port, -p PORT +port to listen on .*\(default 8080\)/);
  });
});

describe('prompts', () => {
  it('--prompt-file and --prompt - give the tokens of --prompt', () => {
    const ref = JSON.parse(cli(['generate', '--prompt', 'JULIET:', '--max-tokens', '6', '--json']).stdout) as { tokens: number[] };
    expect(ref.tokens).toHaveLength(6);
    const f = join(tmp, 'prompt.txt');
    writeFileSync(f, 'JULIET:');
    expect((JSON.parse(cli(['generate', '--prompt-file', f, '--max-tokens', '6', '--json']).stdout) as { tokens: number[] }).tokens).toEqual(ref.tokens);
    expect((JSON.parse(cli(['generate', '--prompt', '-', '--max-tokens', '6', '--json'], { input: 'JULIET:' }).stdout) as { tokens: number[] }).tokens).toEqual(ref.tokens);
    expectUserError(cli(['generate', '--prompt-file', join(tmp, 'none.txt')]), 'E_FILE_NOT_FOUND', /--prompt-file .*none\.txt does not exist/);
  });

  it("a prompt past the model's context says so and offers --truncate left, which keeps its end", () => {
    const f = join(tmp, 'long.txt');
    writeFileSync(f, longText(1));
    expectUserError(cli(['generate', '--prompt-file', f]), 'E_SEQUENCE_TOO_LONG', /the prompt is \d+ tokens and the model holds 256 positions: .*--truncate left/);
    expectUserError(cli(['generate', '--prompt', 'ROMEO:', '--max-tokens', '300']), 'E_SEQUENCE_TOO_LONG', /holds 256 positions \(300 of them for --max-tokens\)/);
    const r = cli(['generate', '--prompt-file', f, '--truncate', 'left', '--max-tokens', '16', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/the prompt was cut to its last 239 tokens \(--truncate left dropped \d+\)/);
    expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toHaveLength(16);
  });
});

describe('files', () => {
  it('import --out refuses an existing package (the bundled model included) unless --force', () => {
    const out = join(tmp, 'pkg');
    expect(cli(['import', '--synthetic', 'tiny', '--out', out]).code).toBe(0);
    const manifest = readFileSync(join(out, 'manifest.json'), 'utf8');
    expectUserError(cli(['import', '--synthetic', 'tiny', '--seed', '9', '--out', out]), 'E_USAGE', /--out .*pkg already exists: choose another folder or pass --force/);
    expect(readFileSync(join(out, 'manifest.json'), 'utf8')).toBe(manifest);
    expectUserError(cli(['import', '--synthetic', 'tiny', '--out', DEFAULT_MODEL_DIR]), 'E_USAGE', /\(it is the bundled default model\)/);
    expect(cli(['import', '--synthetic', 'tiny', '--seed', '9', '--out', out, '--force']).code).toBe(0);
    expect(readFileSync(join(out, 'manifest.json'), 'utf8')).not.toBe(manifest);
    mkdirSync(join(tmp, 'empty'));
    expect(cli(['import', '--synthetic', 'tiny', '--out', join(tmp, 'empty')]).code).toBe(0); // an empty folder is fine
  });

  it('profile accuracy on an empty or too-short text is an error, not an all-NaN profile', () => {
    const empty = join(tmp, 'empty.txt');
    writeFileSync(empty, '\n\n');
    expectUserError(cli(['profile', 'accuracy', '--text', empty, '--out', join(tmp, 'acc.json')]), 'E_BAD_ARGUMENT', /gives 0 predicted tokens.*needs at least 500/);
    const short = join(tmp, 'short.txt');
    writeFileSync(short, 'ROMEO: Hi.\n\nJULIET: Ho.\n');
    expectUserError(cli(['profile', 'accuracy', '--text', short, '--out', join(tmp, 'acc.json')]), 'E_BAD_ARGUMENT', /use a longer calibration text/);
  });

  it('awq and smoothquant calibrate on 257-id windows of a 256-position model (quantize report, generate)', () => {
    const calib = join(tmp, 'calib.txt');
    writeFileSync(calib, longText(3));
    const r = cli(['quantize', 'report', '--text', calib, '--calib-text', calib, '--strategies', 'smoothquant', '--bits', '8', '--limit', '1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = (JSON.parse(r.stdout) as { rows: { strategy: string; split: number | null; frontBits: number; ppl: number }[] }).rows;
    expect(rows.map((x) => `${x.strategy}/${x.frontBits}/${x.split}`)).toEqual(['float32/32/null', 'smoothquant/8/null']);
    expect(rows.every((x) => Number.isFinite(x.ppl))).toBe(true);
    // awq fitted on layer 0 only (front 4 bits at split 1): the same capture path, quicker
    const g = cli(['generate', '--prompt', 'ROMEO:', '--max-tokens', '4', '--split', '1', '--front-bits', '4', '--weight-strategy', 'awq', '--calib-text', calib, '--json']);
    expect(g.code, g.stderr).toBe(0);
  });
});

describe('servers and the edge', () => {
  let server: CloudServer;
  beforeAll(async () => {
    server = await startCloud(await defaultModel(), { token: 's3cret' });
  });
  afterAll(async () => server?.close());

  it('a port in use or out of range is a usage error naming the port', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const addr = blocker.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    try {
      expectUserError(cli(['cloud', '--port', String(port)]), 'E_USAGE', new RegExp(`port ${port} on 127\\.0\\.0\\.1 is in use: stop what listens there or pick another --port`));
    } finally {
      blocker.close();
    }
    expectUserError(cli(['cloud', '--port', '70000']), 'E_USAGE', /--port 70000 is outside 0\.\.65535/);
    expectUserError(cli(['cloud', '--host', '203.0.113.7', '--port', '0']), 'E_USAGE', /--host 203\.0\.113\.7 is not an address of this machine/);
  });

  it('profile link with a missing or wrong token says unauthorized in one line', async () => {
    const url = `${server.url}/v1/session`;
    for (const extra of [[], ['--token', 'nope']]) {
      const r = await cliAsync(['profile', 'link', '--cloud', url, '--out', join(tmp, 'link.json'), ...extra]);
      // refused on the HTTP upgrade (401), before any WebSocket exchange
      expectUserError(r, 'E_CONNECTION', /refused the connection \(HTTP 401, unauthorized: missing or wrong bearer token/);
    }
    const ok = await cliAsync(['profile', 'link', '--cloud', url, '--token', 's3cret', '--bytes', '64KB', '--out', join(tmp, 'link.json')]);
    expect(ok.code, ok.stderr).toBe(0);
  });

  it('Ctrl-C on the edge stops at once, a wait for the cloud included, and prints the summary (or the JSON)', async () => {
    // a slow link (40 ms round trip) so that the generation is still running when the signal comes
    const link = await emulateLink({ host: '127.0.0.1', port: Number(new URL(server.url).port) }, { rttMs: 40 });
    try {
      const url = `ws://127.0.0.1:${link.port}/v1/session`;
      const args = ['edge', '--cloud', url, '--token', 's3cret', '--split', '2', '--prompt', 'ROMEO:', '--max-tokens', '200'];
      let sent = false;
      const interrupt = (_chunk: string, kill: (s: NodeJS.Signals) => void) => {
        if (sent) return;
        sent = true;
        setTimeout(() => kill('SIGINT'), 300);
      };
      const text = await cliAsync(args, { onStdout: interrupt });
      expect(text.code, text.stderr).toBe(130);
      const m = /interrupted: (\d+) tokens in /.exec(text.stderr);
      expect(m, text.stderr).not.toBeNull();
      expect(Number(m![1])).toBeGreaterThan(0);
      expect(Number(m![1])).toBeLessThan(200);
      // with --json nothing is printed until the end: the signal comes once the cloud has sent 3 tokens of
      // this run (its metrics say so), however long the process took to start
      const tokensSent = async () => Number(/^splitllm_tokens_total (\S+)$/m.exec(await (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text())?.[1] ?? 0);
      const before = await tokensSent();
      const generating = (async (): Promise<NodeJS.Signals> => {
        while ((await tokensSent()) < before + 3) await new Promise((r) => setTimeout(r, 20));
        return 'SIGINT';
      })();
      const json = await cliAsync([...args, '--json'], { signalWhen: generating });
      expect(json.code, json.stderr).toBe(130);
      const out = JSON.parse(json.stdout) as { tokens: number[]; stats: { interrupted: boolean; tokens: number } };
      expect(out.stats.interrupted).toBe(true);
      expect(out.tokens.length).toBe(out.stats.tokens);
      expect(out.tokens.length).toBeLessThan(200);
    } finally {
      await link.close();
    }
  });

  it('plan without profiles measures this machine for both sides and says so in one line', () => {
    const r = cli(['plan', '--bandwidth', '1mbit', '--rtt', '40ms', '--edge-memory', '3MB', '--latency', '100ms', '--max-ppl-increase', '3%', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^plan: no --edge-profile\/--cloud-profile: measured this machine for both \(.*-bit layers, blocks 32, 64, 128, [\d.]+ s\)/);
    const j = JSON.parse(r.stdout) as { plan: { split: number; predicted: { memory: number } }; runtimeBytes: number };
    expect(j.runtimeBytes).toBeGreaterThan(10e6);
    expect(j.plan.predicted.memory - j.runtimeBytes).toBeLessThanOrEqual(3e6);
  });
});

/** splitllm cloud settings from flags, $SPLITLLM_*, and a config file, in that order of precedence. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { cli } from './helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'splitllm-config-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Shown = { settings: Record<string, { value: unknown; source: string }> };

it('flag > environment > file > default, each value through the option parser, and --print-config says which', () => {
  const yaml = join(tmp, 'cloud.yaml');
  writeFileSync(yaml, 'maxSessions: 8\nidle-ms: 5m\nhello-timeout: 2s\nbackBits: [32, 8]\nmax-frame-bytes: 16MiB\nlog-level: warn\n');
  const r = cli(['cloud', '--config', yaml, '--print-config', '--hello-timeout', '3s'], { env: { SPLITLLM_MAX_SESSIONS: '16', SPLITLLM_IDLE_MS: '90s' } });
  expect(r.code, r.stderr).toBe(0);
  const s = (JSON.parse(r.stdout) as Shown).settings;
  expect(s['hello-timeout']).toEqual({ value: 3000, source: 'flag' });
  expect(s['max-sessions']).toEqual({ value: 16, source: 'env' });
  expect(s['idle-ms']).toEqual({ value: 90_000, source: 'env' });
  expect(s['back-bits']).toEqual({ value: [32, 8], source: 'file' });
  expect(s['max-frame-bytes']).toEqual({ value: 16 * 1024 * 1024, source: 'file' });
  expect(s['log-level']).toEqual({ value: 'warn', source: 'file' });
  expect(s['port']).toEqual({ value: 8080, source: 'default' });
  // JSON works as well, and a token never shows
  const json = join(tmp, 'cloud.json');
  writeFileSync(json, JSON.stringify({ port: 9000, token: 'do-not-print' }));
  const j = cli(['cloud', '--config', json, '--print-config']);
  expect(j.code, j.stderr).toBe(0);
  expect((JSON.parse(j.stdout) as Shown).settings['port']).toEqual({ value: 9000, source: 'file' });
  expect(j.stdout).not.toContain('do-not-print');
});

it('a wrong setting names where it came from', () => {
  const bad = join(tmp, 'bad.yaml');
  writeFileSync(bad, 'maxSesions: 3\n');
  const a = cli(['cloud', '--config', bad]);
  expect(a.code).toBe(1);
  expect(a.stderr).toMatch(/^splitllm: error \[E_BAD_CONFIG\]: .*bad\.yaml: unknown setting "maxSesions": did you mean max-sessions\?\n$/);
  const b = cli(['cloud', '--print-config'], { env: { SPLITLLM_IDLE_MS: 'forever' } });
  expect(b.code).toBe(2);
  expect(b.stderr).toMatch(/--idle-ms "forever" is not a duration.*\(from \$SPLITLLM_IDLE_MS\)/);
  const nested = join(tmp, 'nested.yaml');
  writeFileSync(nested, 'port:\n  value: 3\n');
  expect(cli(['cloud', '--config', nested]).stderr).toMatch(/port must be a string, a number or a list of them/);
  const range = join(tmp, 'range.yaml');
  writeFileSync(range, 'port: 70000\n');
  expect(cli(['cloud', '--config', range]).stderr).toMatch(/--port 70000 is outside 0\.\.65535 \(from .*range\.yaml\)/);
});

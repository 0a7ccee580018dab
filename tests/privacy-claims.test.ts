/**
 * No text the project ships says or implies that the cloud cannot learn the prompt or the output (issue 36):
 * the README, docs/, deploy/README.md, the browser page and every command's --help are searched for the
 * phrasings that were retired. A cloud that holds the weights recovers the prompt from the hidden states
 * (bench/privacy, `splitllm audit privacy`) and samples the output itself.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { cli } from './helpers/cli.js';
import { REPO } from './helpers/fixtures.js';

/** Claims that the split keeps something from the cloud operator. */
const RETIRED = [
  /(?:edge|device) keeps the prompt/i,
  /prompt(?:'s)?(?: text)?(?: tokens)? never (?:leaves|crosses|leave|cross)/i,
  /(?:tokens|ids|text|prompt) never leave/i,
  /never leaves? (?:the|this) (?:device|edge|machine|process|page)/i,
  /only (?:their |the )?(?:compressed )?hidden states leave/i,
  /which give the prompt away/i,
  /(?:cloud|server) (?:never|cannot|can't|does not|doesn't) (?:see|learn|read|know)s? the (?:prompt|text|output)/i,
  /privacy[- ]preserving/i,
  /keeps? (?:the )?(?:prompts?|data|text) (?:private|from the cloud|on the device)/i,
];

function files(): string[] {
  const docs = readdirSync(join(REPO, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join(REPO, 'docs', f));
  return [join(REPO, 'README.md'), join(REPO, 'deploy', 'README.md'), join(REPO, 'edge', 'web', 'index.html'), ...docs];
}

function helpTexts(): { where: string; text: string }[] {
  const out: { where: string; text: string }[] = [];
  const top = cli(['--help']).stdout;
  out.push({ where: 'splitllm --help', text: top });
  const commands = [...top.matchAll(/^ {2}(\w[\w-]*) {2,}/gm)].map((m) => m[1]!);
  expect(commands.length).toBeGreaterThan(8);
  for (const c of commands) {
    const help = cli([c, '--help']).stdout;
    out.push({ where: `splitllm ${c} --help`, text: help });
    const subs = help.includes('subcommands:') ? [...help.split('subcommands:')[1]!.matchAll(/^ {2}(\w[\w-]*) {2,}/gm)].map((m) => m[1]!) : [];
    for (const s of subs) out.push({ where: `splitllm ${c} ${s} --help`, text: cli([c, s, '--help']).stdout });
  }
  return out;
}

it('README, docs/, deploy/README.md and the browser page make no claim that the cloud cannot learn the prompt', () => {
  for (const f of files()) {
    const text = readFileSync(f, 'utf8').replace(/\s+/g, ' ');
    for (const re of RETIRED) expect(re.exec(text)?.[0], `${f}: ${re}`).toBeUndefined();
  }
});

it('no --help text of any command or subcommand makes that claim; edge and edge serve say what the cloud can reconstruct', () => {
  const helps = helpTexts();
  expect(helps.length).toBeGreaterThanOrEqual(20);
  for (const { where, text } of helps) {
    const flat = text.replace(/\s+/g, ' ');
    for (const re of RETIRED) expect(re.exec(flat)?.[0], `${where}: ${re}`).toBeUndefined();
  }
  for (const where of ['splitllm edge --help', 'splitllm edge serve --help']) {
    expect(helps.find((h) => h.where === where)?.text.replace(/\s+/g, ' ')).toMatch(/a cloud holding the weights can reconstruct it from the hidden states/);
  }
});

it('the README says what the split does not protect, with the measured table', () => {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  expect(readme).toMatch(/^## Privacy: what the split protects and what it does not$/m);
  const section = readme.split(/^## Privacy: what the split protects and what it does not$/m)[1]!.split(/^## /m)[0]!;
  expect(section).toMatch(/node dist\/bench\/privacy\.js/);
  expect(section).toMatch(/splitllm audit privacy/);
  expect(section).toMatch(/\| split \|/);
});

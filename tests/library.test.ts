/** The library API as an app uses it (`import … from 'splitllm'`), and the text pieces it streams. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EdgeAgent, openModel, startCloud, DEFAULT_MODEL_DIR } from 'splitllm';
import { StopStrings } from '../models/tokenizer/text-stream.js';
import { REPO } from './helpers/fixtures.js';

describe('StopStrings', () => {
  const run = (stops: string[], pieces: string[]) => {
    const s = new StopStrings(stops);
    const out = pieces.map((p) => s.push(p));
    out.push(s.flush());
    return { out, all: s.all, stopped: s.stopped };
  };
  it('holds back a possible start of a stop string and releases it once it cannot be one', () => {
    expect(run(['END'], ['ab', 'cE', 'N', 'x'])).toEqual({ out: ['ab', 'c', '', 'ENx', ''], all: 'abcENx', stopped: false });
  });
  it('cuts at a stop string spanning pieces, and releases nothing after it', () => {
    expect(run(['END'], ['abE', 'N', 'Dxyz', 'more'])).toEqual({ out: ['ab', '', '', '', ''], all: 'ab', stopped: true });
  });
  it('the earliest of several stop strings wins; a prefix held for one is released when another cuts after it', () => {
    expect(run(['bcd', 'c'], ['ab', 'cd'])).toEqual({ out: ['a', '', ''], all: 'a', stopped: true });
    expect(run(['cdX', 'de'], ['abc', 'def'])).toEqual({ out: ['ab', 'c', ''], all: 'abc', stopped: true });
  });
  it('a stop string at the very start leaves empty text; no stops pass everything through', () => {
    expect(run(['\n'], ['\nhello'])).toEqual({ out: ['', ''], all: '', stopped: true });
    expect(run([], ['a', 'b'])).toEqual({ out: ['a', 'b', ''], all: 'ab', stopped: false });
  });
});

describe("import { EdgeAgent, startCloud } from 'splitllm'", () => {
  it("README's example streams the same text as the agent gives in process", async () => {
    const r = spawnSync(process.execPath, [join(REPO, 'examples', 'stream-completion.mjs')], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const model = await openModel(DEFAULT_MODEL_DIR);
    const cloud = await startCloud(model);
    const agent = await EdgeAgent.create({ model, cloud: cloud.url, split: 2, codec: 'ts-tabq' });
    try {
      const want = await agent.generate({ prompt: 'ROMEO:', maxTokens: 40, sampling: { temperature: 0 } });
      expect(r.stdout).toBe(want.text + '\n');
      expect(want.tokens.length).toBeGreaterThan(10);
      // ts-tabq: well under the 4 bytes per value fp32 would send per decode step
      expect(want.stats.decode.wireBytes).toBeLessThan(4 * model.config.dim);
    } finally {
      await agent.close();
      await cloud.close();
    }
  });
});

/**
 * bench/e2e: split generation (edge agent ⇄ cloud server over loopback WebSocket, in one process) against
 * local full-model generation on the same machine, same run: tokens/s, per-token latency and their ratio,
 * with the edge's per-token split into edge compute, network and cloud compute.
 *
 *   node dist/bench/e2e.js [--tokens 64] [--split 2] [--codec fp32] [--skip-100m] [--json]
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startCloud } from '../cloud/server.js';
import { runEdge } from '../edge/agent.js';
import { syntheticModel } from '../models/importers/synthetic.js';
import { ModelPackage, openModel } from '../models/package.js';
import { generate, Pipeline } from '../models/runtime/pipeline.js';
import { FIXTURES, fmt, haveFixtures } from './common.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '64' },
    split: { type: 'string' },
    codec: { type: 'string', default: 'fp32' },
    'skip-100m': { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/bench/e2e.js [--tokens N] [--split K] [--codec SPEC] [--skip-100m] [--json]\n');
  process.exit(0);
}
const n = Number(values.tokens);

async function measure(name: string, pkg: ModelPackage): Promise<Record<string, number | string>> {
  const split = values.split ? Number(values.split) : Math.floor(pkg.config.nLayers / 2);
  const prompt = 'Once upon a time';
  const stopIds: number[] = [];
  const p = await Pipeline.create(pkg);
  await generate(p, pkg.tokenizer().encode(prompt), { maxTokens: 4, stopIds }); // warm-up
  const t0 = performance.now();
  const localIds = await generate(p, pkg.tokenizer().encode(prompt), { maxTokens: n, stopIds });
  const localS = (performance.now() - t0) / 1000;
  await p.release();
  const server = await startCloud(pkg);
  try {
    await runEdge(pkg, { url: `${server.url}/v1/session`, split, codec: values.codec, prompt, maxTokens: 4, stopIds }); // warm-up
    const r = await runEdge(pkg, { url: `${server.url}/v1/session`, split, codec: values.codec, prompt, maxTokens: n, stopIds });
    const same = r.tokens.every((t, i) => t === localIds[i]);
    return {
      model: name,
      split,
      codec: values.codec!,
      localTokensPerSec: localIds.length / localS,
      splitTokensPerSec: r.stats.tokensPerSec,
      ratio: r.stats.tokensPerSec / (localIds.length / localS),
      localMsPerToken: (1000 * localS) / localIds.length,
      splitMsPerToken: (1000 * r.stats.seconds) / r.stats.tokens,
      edgeMs: r.stats.edgeMs,
      networkMs: r.stats.networkMs,
      cloudMs: r.stats.cloudMs,
      bytesUpPerToken: r.stats.bytesUpPerToken,
      sameTokens: same ? 'yes' : 'no',
    };
  } finally {
    await server.close();
  }
}

const rows: Record<string, number | string>[] = [];
if (haveFixtures) rows.push(await measure('stories260K', await openModel(resolve(FIXTURES, 'stories260K', 'stories260K.bin'))));
else process.stderr.write(`stories260K skipped: fixtures not found at ${FIXTURES}\n`);
if (!values['skip-100m']) {
  process.stderr.write('building the llama-100m synthetic preset in memory…\n');
  rows.push(await measure('synthetic llama-100m', ModelPackage.fromImported(syntheticModel('llama-100m'))));
}
if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
else {
  process.stdout.write('model                  split codec  local tok/s  split tok/s  ratio  local ms/tok  split ms/tok (edge+net+cloud)  B up/tok  same tokens\n');
  for (const r of rows) {
    const num = (k: string, d = 1) => fmt(r[k] as number, d);
    process.stdout.write(
      `${String(r['model']).padEnd(22)} ${String(r['split']).padStart(5)} ${String(r['codec']).padEnd(6)} ${num('localTokensPerSec').padStart(11)} ${num('splitTokensPerSec').padStart(12)} ${num('ratio', 2).padStart(6)} ${num('localMsPerToken', 2).padStart(13)} ${num('splitMsPerToken', 2).padStart(13)} (${num('edgeMs', 2)}+${num('networkMs', 2)}+${num('cloudMs', 2)}) ${num('bytesUpPerToken', 0).padStart(9)} ${String(r['sameTokens']).padStart(12)}\n`,
    );
  }
}

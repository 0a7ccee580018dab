#!/usr/bin/env node
/**
 * Builds the browser edge: edge/web/page.ts and everything it imports (the token loop, codecs with their
 * WebAssembly kernels, protocol, tokenizer through @huggingface/transformers' browser build,
 * onnxruntime-web) bundled by esbuild into dist/web/edge.js, beside dist/web/index.html. The cloud
 * serves both (and onnxruntime-web's .wasm from the installed package) at /edge/ with --web-edge.
 *
 * Node-only modules the edge's sources import for other paths (the Node backend and connector, file
 * reading) are replaced by stubs that throw if a page ever called them.
 */
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/web');
mkdirSync(out, { recursive: true });

const NODE_ONLY = /^(node:.*|fs|path|url|os|crypto|module|worker_threads|child_process|ws|onnxruntime-node|sharp)$/;
const NODE_ONLY_FILES = /(backend-node|connect-node|threads|segment-cache)\.(js|ts)$/;

/** The names a stubbed module exports: a Node builtin's own keys, a project file's `export` declarations. */
async function exportedNames(path, importer) {
  if (NODE_ONLY.test(path) && !NODE_ONLY_FILES.test(path)) {
    if (!/^(node:|fs|path|url|os|crypto|module|worker_threads|child_process)/.test(path)) return [];
    return Object.keys(await import(path.startsWith('node:') ? path : `node:${path}`)).filter((k) => /^[A-Za-z_$][\w$]*$/.test(k) && k !== 'default');
  }
  const file = join(dirname(importer), path).replace(/\.js$/, '.ts');
  const src = readFileSync(file, 'utf8');
  return [...src.matchAll(/^export\s+(?:async\s+)?(?:function|const|let|class)\s+([A-Za-z_$][\w$]*)/gm)].map((m) => m[1]);
}

const stubs = {
  name: 'node-only-stubs',
  setup(b) {
    const resolveStub = (a) => ({ path: a.path, namespace: 'stub', pluginData: { importer: a.importer } });
    b.onResolve({ filter: NODE_ONLY }, resolveStub);
    b.onResolve({ filter: NODE_ONLY_FILES }, resolveStub);
    // every name the module exports, as a function that fails when a page calls it
    b.onLoad({ filter: /.*/, namespace: 'stub' }, async (a) => {
      const names = await exportedNames(a.path, a.pluginData.importer);
      const fail = `() => { throw new Error(${JSON.stringify(`${a.path} is not available in the browser edge`)}); }`;
      return { contents: `const fail = ${fail};\nexport default fail;\n${names.map((n) => `export const ${n} = fail;`).join('\n')}\n`, loader: 'js' };
    });
  },
};

// one onnxruntime-web for the edge and for transformers.js (which asks for its WebGPU build): the WebAssembly-only one
const oneOrt = {
  name: 'one-onnxruntime-web',
  setup(b) {
    b.onResolve({ filter: /^onnxruntime-web(\/webgpu|\/all)?$/ }, async (a) => {
      const r = await b.resolve('onnxruntime-web/wasm', { kind: a.kind, resolveDir: root });
      return { path: r.path };
    });
  },
};

const t0 = Date.now();
const r = await build({
  entryPoints: [join(root, 'edge/web/page.ts')],
  outfile: join(out, 'edge.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  conditions: ['browser', 'import', 'default'],
  define: { 'process.env.NODE_ENV': '"production"' },
  plugins: [stubs, oneOrt],
  logLevel: 'warning',
  metafile: true,
});
copyFileSync(join(root, 'edge/web/index.html'), join(out, 'index.html'));
const kb = (statSync(join(out, 'edge.js')).size / 1024).toFixed(0);
process.stderr.write(`build-web: dist/web/edge.js (${kb} KiB) and index.html in ${((Date.now() - t0) / 1000).toFixed(1)} s${r.warnings.length ? `, ${r.warnings.length} warnings` : ''}\n`);

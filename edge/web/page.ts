/**
 * The browser edge's page script (bundled into dist/web/edge.js by scripts/build-web.mjs): the prompt is
 * tokenized here, the front segment runs here in WebAssembly (onnxruntime-web), and only its compressed
 * hidden states go to the cloud that served the page — the same token loop (`runEdge`), codecs and
 * protocol as the Node edge.
 *
 * Query parameters: prompt, maxTokens, split, bits, block (the quantization block of bits below 16: 16, 32, 64, 128),
 * embed (the embedding's bits: 32, 8, 4), codec, temperature, seed, stop (eos: the model's end
 * of text ends the reply, the default; none: it runs on to maxTokens, EOS shown as a paragraph break), cloud
 * (a ws:// URL; default this server's /v1/session), autorun=1. When an autorun generation ends the page sets
 * `window.splitllmResult = {tokens, text, stats}`, or `{error: {code, message}}` when it fails.
 */
import { runEdge, type EdgeModel, type EdgeStats, type StepTiming } from '../agent.js';
import { webBackend } from './backend-web.js';
import { isSplitLLMError, SplitLLMError } from '../../shared/errors.js';
import { Fields, isPlainMap } from '../../shared/fields.js';
import { msgpack } from '../../shared/protocol/frame.js';
import { browserConnector } from '../../shared/transport/browser-ws.js';
import { validateConfig, type ModelConfig } from '../../models/manifest.js';
import type { BuiltSegment } from '../../models/onnx/segment.js';
import { useBackend } from '../../models/runtime/backend.js';
import { SegmentRuntime } from '../../models/runtime/segment-runtime.js';
import { parseTokenizerConfig, TextTokenizer } from '../../models/tokenizer/tokenizer.js';
import { TextStream } from '../../models/tokenizer/text-stream.js';
import { CalibrationContexts, parseCalibration } from '../../quantization/activations/calibration.js';
import { wasmKernels } from '../../quantization/activations/wasm/kernels.js';

declare global {
  interface Window {
    splitllmResult?: { tokens: number[]; text: string; stats: EdgeStats } | { error: { code: string; message: string } };
    /** what runs in this page: the codecs' kernels (TAB-Q's WebAssembly SIMD ones, or the TypeScript loops) */
    splitllmInfo?: { codecKernels: 'wasm-simd' | 'typescript'; inference: string };
  }
}

const fail = (where: string) => (why: string): never => {
  throw new SplitLLMError('E_PROTOCOL', `${where}: ${why}`);
};

/** What /edge/model serves, checked. */
interface ServedModel {
  name: string;
  hash: string;
  config: ModelConfig;
  model: EdgeModel;
  contexts: CalibrationContexts;
  defaults: { split: number; bits: number; block: number; codec: string };
  bits: number[];
}

/** The Authorization header of the page's requests: the token from the URL's fragment (#token=…, never sent to a server) or the token box. */
let token: string | undefined;
const authHeaders = (): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});

async function loadModel(): Promise<ServedModel> {
  const res = await fetch('/edge/model', { headers: authHeaders() });
  if (res.status === 401) {
    throw new SplitLLMError('E_CONNECTION', token ? "cloud: unauthorized: the cloud refused this token: give the page the cloud's token (the token box, or #token=… in the address)" : 'cloud: unauthorized: this cloud needs its bearer token: type it in the token box, or open the page with #token=… in the address');
  }
  if (!res.ok) throw new SplitLLMError('E_CONNECTION', `the server answered /edge/model with HTTP ${res.status}: is it 'splitllm cloud --web-edge'?`);
  const raw: unknown = await res.json();
  const f = Fields.of(raw, '/edge/model', fail('/edge/model'));
  const config = validateConfig(f.value('config'), '/edge/model config');
  const hash = f.str('hash', 128);
  const tokJson = f.value('tokenizer');
  if (!isPlainMap(tokJson)) throw new SplitLLMError('E_TOKENIZER', 'the served model has no tokenizer: the browser edge takes text prompts only');
  const tc = f.value('tokenizerConfig');
  const tokenizer = new TextTokenizer(tokJson, { bosId: config.bosId, eosId: config.eosId, ...(tc ? { config: parseTokenizerConfig(tc, '/edge/model tokenizerConfig') } : {}) });
  const cal = f.value('calibration');
  const contexts = new CalibrationContexts(cal ? parseCalibration(cal, '/edge/model calibration') : undefined);
  const d = f.map('defaults');
  return {
    name: f.str('name', 256),
    hash,
    config,
    model: { config, hash, tokenizer: () => tokenizer },
    contexts,
    defaults: { split: d.int('split', 0, config.nLayers), bits: d.int('bits', 2, 32), block: d.int('block', 16, 128), codec: d.str('codec', 256) },
    bits: f.intArray('bits', 16, 2, 32),
  };
}

/** A front segment [0, split) as the server built it, checked. */
async function loadSegment(m: ServedModel, s: Pick<RunSettings, 'bits' | 'block' | 'embed'>, split: number): Promise<BuiltSegment> {
  const query = `split=${split}&bits=${s.bits}${s.bits < 16 ? `&block=${s.block}` : ''}${s.embed < 32 ? `&embed=${s.embed}` : ''}`;
  const get = async (path: string): Promise<Uint8Array> => {
    const res = await fetch(`${path}?${query}`, { headers: authHeaders() });
    if (!res.ok) {
      const body: unknown = await res.json().catch(() => undefined);
      const msg = isPlainMap(body) && isPlainMap(body['error']) && typeof body['error']['message'] === 'string' ? body['error']['message'] : `HTTP ${res.status}`;
      throw new SplitLLMError('E_USAGE', `the server refused the front segment: ${msg}`);
    }
    return new Uint8Array(await res.arrayBuffer());
  };
  const raw: unknown = msgpack.unpack(await get('/edge/segment'));
  const f = Fields.of(raw, '/edge/segment', fail('/edge/segment'));
  if (f.str('modelHash', 128) !== m.hash) throw new SplitLLMError('E_PROTOCOL', '/edge/segment was built for another model than /edge/model describes: reload the page');
  const model = f.value('model');
  if (!(model instanceof Uint8Array)) return f.fail('model must be the segment bytes');
  const io = f.map('io');
  const kind = io.str('attention', 16);
  const attention = kind === 'resident' || kind === 'reference' ? kind : io.fail(`attention "${kind}" is not resident or reference`);
  const names = (k: string) => io.array(k, 4096).map((v, i) => (typeof v === 'string' ? v : io.fail(`${k}[${i}] must be a string`)));
  const seg: BuiltSegment = {
    from: io.int('from', 0, 0),
    to: io.int('to', split, split),
    nLayers: io.int('nLayers', m.config.nLayers, m.config.nLayers),
    first: io.bool('first'),
    last: io.bool('last'),
    inputNames: names('inputNames'),
    outputNames: names('outputNames'),
    keyPositions: io.bool('keyPositions'),
    attention,
    weightBytes: io.num('weightBytes', 0),
    model,
    // what the runtime learns about an imported export's graph as it runs (models/onnx/segment.ts)
    quirks: {},
  };
  if (io.has('recompute') && io.bool('recompute')) seg.recompute = true;
  // a segment from the server's cache names its weights' file: fetched beside it
  if (f.has('externalData')) {
    const path = f.str('externalData', 255);
    if (!/^[\w.-]+$/.test(path)) return f.fail(`externalData ${JSON.stringify(path)} must be a file name`);
    seg.externalData = [{ path, data: await get('/edge/segment/data') }];
  }
  return seg;
}

// ---- the page ----

function $<T extends HTMLElement>(id: string, type: { new (): T; prototype: T }): T {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new SplitLLMError('E_RUNTIME', `the page has no #${id} of the expected kind`);
  return el;
}

interface RunSettings {
  prompt: string;
  maxTokens: number;
  split: number;
  bits: number;
  /** the quantization block of the front's layers below 16 bits */
  block: number;
  /** the token embedding's bits (32, 8, 4) */
  embed: number;
  codec: string;
  temperature: number;
  seed?: number;
  /** whether EOS ends the reply */
  stopAtEos: boolean;
  cloud: string;
}

function settingsFrom(m: ServedModel, q: URLSearchParams): RunSettings {
  const num = (k: string, def: number) => {
    const v = q.get(k);
    const n = v === null || v === '' ? def : Number(v);
    if (!Number.isFinite(n)) throw new SplitLLMError('E_USAGE', `?${k}=${v} is not a number`);
    return n;
  };
  const own = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/session`;
  const seed = q.get('seed');
  return {
    prompt: q.get('prompt') ?? 'ROMEO:',
    maxTokens: num('maxTokens', 64),
    split: num('split', m.defaults.split),
    bits: num('bits', m.defaults.bits),
    block: num('block', m.defaults.block),
    embed: num('embed', 32),
    codec: q.get('codec') ?? m.defaults.codec,
    temperature: num('temperature', 0),
    ...(seed !== null ? { seed: num('seed', 0) } : {}),
    stopAtEos: (q.get('stop') ?? 'eos') !== 'none',
    cloud: q.get('cloud') ?? own,
  };
}

function fillControls(m: ServedModel, s: RunSettings): void {
  $('model', HTMLElement).textContent = `${m.name} · ${m.config.nLayers} layers · dim ${m.config.dim} · ${m.hash.slice(0, 12)}…`;
  const options = (id: string, values: (string | number)[], chosen: string | number) => {
    const sel = $(id, HTMLSelectElement);
    sel.replaceChildren(...values.map((v) => new Option(String(v), String(v), false, String(v) === String(chosen))));
  };
  options('split', Array.from({ length: Math.max(1, m.config.nLayers - 1) }, (_, i) => i + 1), s.split);
  options('bits', [...m.bits].reverse(), s.bits);
  options('embed', [32, 8, 4], s.embed);
  options('codec', [...new Set(['fp32', 'fp16', 'int8', 'ts-tabq', s.codec])], s.codec);
  $('prompt', HTMLTextAreaElement).value = s.prompt;
  $('temperature', HTMLInputElement).value = String(s.temperature);
  $('maxTokens', HTMLInputElement).value = String(s.maxTokens);
}

function settingsFromControls(s: RunSettings): RunSettings {
  return {
    ...s,
    prompt: $('prompt', HTMLTextAreaElement).value,
    split: Number($('split', HTMLSelectElement).value),
    bits: Number($('bits', HTMLSelectElement).value),
    embed: Number($('embed', HTMLSelectElement).value),
    codec: $('codec', HTMLSelectElement).value,
    temperature: Number($('temperature', HTMLInputElement).value),
    maxTokens: Number($('maxTokens', HTMLInputElement).value),
  };
}

/** The live panel: bytes and the per-token latency split of the steps so far, and a chart of each step's. */
class Panel {
  private readonly steps: StepTiming[] = [];
  private prefill: StepTiming | undefined;
  private tokens = 0;
  private readonly t0 = performance.now();

  add(s: StepTiming): void {
    if (s.prefill) this.prefill = s;
    else this.steps.push(s);
    this.tokens += s.tokens;
    this.render();
  }

  render(): void {
    const n = Math.max(1, this.steps.length);
    const sum = (k: 'edgeMs' | 'networkMs' | 'cloudMs' | 'bytesUp') => this.steps.reduce((a, s) => a + s[k], 0);
    const perToken = Math.max(1, this.steps.reduce((a, s) => a + s.tokens, 0));
    const rows: [string, string][] = [
      ['tokens', `${this.tokens} in ${((performance.now() - this.t0) / 1000).toFixed(2)} s`],
      ['first token', this.prefill ? `${(this.prefill.edgeMs + this.prefill.networkMs + this.prefill.cloudMs).toFixed(1)} ms` : '…'],
      ['bytes up / token', `${(sum('bytesUp') / perToken).toFixed(0)} B`],
      ['edge / token', `${(sum('edgeMs') / n).toFixed(2)} ms`],
      ['network / token', `${(sum('networkMs') / n).toFixed(2)} ms`],
      ['cloud / token', `${(sum('cloudMs') / n).toFixed(2)} ms`],
    ];
    $('panel', HTMLElement).replaceChildren(
      ...rows.map(([k, v]) => {
        const tr = document.createElement('tr');
        const th = document.createElement('th');
        th.textContent = k;
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(th, td);
        return tr;
      }),
    );
    this.chart();
  }

  /** one stacked bar per step: edge, network, cloud */
  private chart(): void {
    const canvas = $('chart', HTMLCanvasElement);
    const g = canvas.getContext('2d');
    if (!g) return;
    const W = canvas.width;
    const H = canvas.height;
    g.clearRect(0, 0, W, H);
    const shown = this.steps.slice(-120);
    const max = Math.max(1, ...shown.map((s) => s.edgeMs + s.networkMs + s.cloudMs));
    const w = W / Math.max(60, shown.length);
    const colors = ['#2b6cb0', '#a0aec0', '#dd6b20'];
    shown.forEach((s, i) => {
      let y = H;
      [s.edgeMs, s.networkMs, s.cloudMs].forEach((v, j) => {
        const h = (Math.max(0, v) / max) * (H - 14);
        g.fillStyle = colors[j]!;
        g.fillRect(i * w, y - h, Math.max(1, w - 1), h);
        y -= h;
      });
    });
    g.font = '11px sans-serif';
    g.fillStyle = '#333';
    g.fillText(`ms per step (max ${max.toFixed(1)})`, 4, 11);
    let x = 120;
    ['edge', 'network', 'cloud'].forEach((name, j) => {
      g.fillStyle = colors[j]!;
      g.fillRect(x, 3, 9, 9);
      g.fillStyle = '#333';
      g.fillText(name, x + 12, 11);
      x += 16 + g.measureText(name).width + 6;
    });
  }
}

function showError(e: unknown): { code: string; message: string } {
  const message = e instanceof Error ? e.message : String(e);
  // a cloud's refusal names its wire code: "cloud: bad_model: …"
  const wire = /^cloud: ([a-z_]+): /.exec(message);
  const code = wire ? wire[1]! : isSplitLLMError(e) ? e.code : 'E_RUNTIME';
  const box = $('error', HTMLElement);
  box.hidden = false;
  box.textContent = `${code}: ${message}`;
  return { code, message };
}

async function generate(m: ServedModel, s: RunSettings): Promise<{ tokens: number[]; text: string; stats: EdgeStats }> {
  $('error', HTMLElement).hidden = true;
  const out = $('text', HTMLElement);
  out.textContent = '';
  const tok = m.model.tokenizer();
  const ids = tok.encode(s.prompt, true);
  const stream = new TextStream(tok, ids, s.prompt, (t) => out.append(t), s.stopAtEos ? {} : { breakIds: [m.config.eosId] });
  const panel = new Panel();
  const seg = await loadSegment(m, s, s.split);
  const r = await runEdge(m.model, {
    url: s.cloud,
    connect: browserConnector(s.cloud, token),
    split: s.split,
    codec: s.codec,
    codecEnv: m.contexts,
    prompt: s.prompt,
    promptIds: ids,
    maxTokens: s.maxTokens,
    ...(s.stopAtEos ? {} : { stopIds: [] }),
    sampling: { temperature: s.temperature, ...(s.seed !== undefined ? { seed: s.seed } : {}) },
    frontBits: s.bits,
    fronts: async (k) => SegmentRuntime.fromBuilt(m.config, k === s.split ? seg : await loadSegment(m, s, k)),
    onToken: (id) => stream.push(id),
    onStep: (t) => panel.add(t),
  });
  const text = stream.finish();
  return { tokens: r.tokens, text, stats: r.stats };
}

async function main(): Promise<void> {
  const backend = webBackend(new URL('/edge/ort/', location.href).href);
  useBackend(backend);
  window.splitllmInfo = { codecKernels: wasmKernels() ? 'wasm-simd' : 'typescript', inference: `${backend.name} (WebAssembly, 1 thread)` };
  $('runtime', HTMLElement).textContent = `front segment: ${window.splitllmInfo.inference}; codec kernels: ${window.splitllmInfo.codecKernels}`;
  const q = new URLSearchParams(location.search);
  const button = $('run', HTMLButtonElement);
  const box = $('token', HTMLInputElement);
  token = new URLSearchParams(location.hash.slice(1)).get('token') ?? (sessionStorage.getItem('splitllm-token') || undefined);
  if (token) box.value = token;
  const needs: unknown = await (await fetch('/edge/auth')).json().catch(() => undefined);
  $('token-label', HTMLElement).hidden = !(isPlainMap(needs) && needs['auth'] === true);
  const auto = q.get('autorun') === '1';
  // the model is loaded again when it failed (a token typed in after a refusal)
  let ready: { m: ServedModel; s: RunSettings } | undefined;
  const prepare = async () => {
    const m = await loadModel();
    const s = settingsFrom(m, q);
    fillControls(m, s);
    ready = { m, s };
    return ready;
  };
  const run = async (fromQuery: boolean) => {
    button.disabled = true;
    if (!fromQuery && box.value) {
      token = box.value;
      sessionStorage.setItem('splitllm-token', token);
    }
    try {
      const { m, s } = ready ?? (await prepare());
      const r = await generate(m, fromQuery ? s : settingsFromControls(s));
      if (fromQuery) window.splitllmResult = r;
    } catch (e) {
      const error = showError(e);
      if (fromQuery) window.splitllmResult = { error };
    } finally {
      button.disabled = false;
    }
  };
  button.addEventListener('click', () => void run(false));
  if (auto) await run(true);
  else await prepare().catch(showError);
}

void main();

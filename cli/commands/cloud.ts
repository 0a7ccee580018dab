import { DEFAULT_RATE_LIMITS } from '../../cloud/rate-budget.js';
import { startCloud } from '../../cloud/server.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { readFileSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';
import { isWeightBits, WEIGHT_BITS } from '../../shared/precision.js';
import { parseTenantsFile, type TenantSpec } from '../../cloud/auth.js';
import { DEFAULT_MAX_SESSIONS } from '../../cloud/session.js';
import { modelOptions, openModelOption, readJsonFile, readPlanFile, tokenOf } from '../common.js';
import { defineCommand, items, opt } from '../options.js';

/** The tenants of --token, --token-file, --tenants-file or $SPLITLLM_TOKEN (at most one of them); none: no auth. */
function tenantsOf(v: { token?: string; 'token-file'?: string; 'tenants-file'?: string }): TenantSpec[] {
  const env = process.env['SPLITLLM_TOKEN'];
  const given = [v.token !== undefined && '--token', v['token-file'] !== undefined && '--token-file', v['tenants-file'] !== undefined && '--tenants-file'].filter((x): x is string => typeof x === 'string');
  if (given.length > 1) throw new SplitLLMError('E_USAGE', `give one of ${given.join(', ')}, not several`);
  if (v['tenants-file'] !== undefined) {
    const path = v['tenants-file'];
    const tenants = parseTenantsFile(readJsonFile(path, 'tenants file', 'see splitllm cloud --help'), path);
    // no tenant would mean no auth at all: a file meant to restrict access never opens it
    if (tenants.length === 0) throw new SplitLLMError('E_USAGE', `tenants file ${path} lists no tenant (the server would run without auth): add a tenant, or drop --tenants-file to run without auth on purpose`);
    return tenants;
  }
  if (given.length === 0 && env !== undefined && env.trim() === '') throw new SplitLLMError('E_USAGE', '$SPLITLLM_TOKEN is set but empty (an unset variable?): give the real token, or unset it to run without auth');
  const token = given.length > 0 ? tokenOf(v) : env !== undefined ? env.trim() : undefined;
  return token === undefined ? [] : [{ name: 'default', token }];
}

export const cloudCommand = defineCommand({
  name: 'cloud',
  summary:
    'Runs the cloud server. Edge agents connect to ws://HOST:PORT/v1/session; GET /healthz, /v1/models and /metrics (Prometheus) are served beside it.',
  usage: 'splitllm cloud [--model M] [--port 8080] [--host 127.0.0.1] [--token-file F | --tenants-file F] [--max-sessions N] [--session-token-limit N] [--idle-ms 60s] [--calibration FILE] [--web-edge]',
  examples: [
    'splitllm cloud',
    'splitllm cloud --port 8080 --host 0.0.0.0 --token-file /run/secrets/splitllm-token --max-sessions 64',
    'SPLITLLM_TOKEN="$(cat token)" splitllm cloud --host 0.0.0.0',
    'splitllm cloud --host 0.0.0.0 --tenants-file tenants.json',
    'SPLITLLM_MAX_SESSIONS=128 splitllm cloud --config /etc/splitllm/cloud.yaml --print-config',
    'splitllm cloud --model models/stories260K --idle-ms 5m --max-frame-bytes 16MB --json',
    'splitllm cloud --web-edge   # then open http://127.0.0.1:8080/edge/?prompt=ROMEO:&split=3',
    'splitllm cloud --web-edge --plan plan.json   # the page starts from the plan\'s split, front bits, block and codec',
  ],
  layered: true,
  options: {
    ...modelOptions,
    port: opt.port({ short: 'p', default: 8080, description: 'port to listen on (0: any free port)' }),
    host: opt.string({ default: '127.0.0.1', description: 'address to bind' }),
    token: opt.string({ description: 'require "Authorization: Bearer SECRET" on the upgrade (visible in ps: prefer --token-file or $SPLITLLM_TOKEN)', valueName: 'SECRET', noEnv: true }),
    'token-file': opt.file({ description: 'the bearer token, first line of this file (e.g. a systemd credential or a Kubernetes secret)' }),
    'tenants-file': opt.file({ description: 'JSON {"tenants":[{"name","token","maxSessions"}]}: several tokens, each a named tenant with its own session cap' }),
    'tls-cert': opt.file({ description: 'serve https/wss with this PEM certificate chain (with --tls-key)' }),
    'tls-key': opt.file({ description: 'the PEM private key of --tls-cert' }),
    'web-edge': opt.flag({ description: 'also serve the browser edge at /edge/: a page that runs the front layers in WebAssembly and connects back here (with --token the page asks for it: /edge/#token=…)' }),
    plan: opt.string({ description: "with --web-edge: the page's default split, front bits, block and codec from this plan ('splitllm plan --out FILE'; the page's back runs at 32 bits)", valueName: 'FILE', defaultText: 'the middle split, float weights, the calibrated ts-tabq' }),
    'max-sessions': opt.int({ min: 1, default: DEFAULT_MAX_SESSIONS, description: 'most sessions held at once, connected or waiting for a resume (each holds a KV cache); a hello past it is refused with busy' }),
    'back-bits': opt.list({ item: items.int(), description: 'back-layer weight bits edges may ask for (each builds its own back segment)', valueName: 'B,B,…', defaultText: '2,3,4,8,16,32' }),
    'block-sizes': opt.list({ item: items.blockSize, description: 'quantization blocks edges may ask for', valueName: 'N,N,…', defaultText: '16,32,64,128' }),
    threads: opt.int({ min: 1, description: 'onnxruntime intra-op threads of each back segment (idle workers stop spinning when a run returns)', defaultText: 'the cores this process may use (affinity, cgroup quota)' }),
    'kv-slab': opt.flag({ description: "keep each back segment's session KV caches in one slab so batched steps read them in place (16 sessions on the ~100M preset: worst latency 2.5× solo instead of 3.2×); the heap may stay ~36 MB larger for a while after a burst of sessions" }),
    'segment-idle': opt.duration({ bare: 'ms', default: 60_000, defaultText: '60s', description: 'release a back segment (its weights) that no session has used for this long' }),
    'kv-memory': opt.bytes({ description: 'KV cache all sessions together may reserve (each reserves its back layers for its prompt and max tokens, not the model context); a hello or prompt past it gets busy', defaultText: "half this machine's memory" }),
    'max-connections': opt.int({ min: 1, description: 'most WebSocket connections open at once; an upgrade past it gets HTTP 503', defaultText: '2 × max-sessions + 16' }),
    'metrics-tenants': opt.flag({ description: 'publish sessions by tenant name on /metrics (splitllm_tenant_sessions{tenant}); off, since whoever can scrape /metrics would learn the names' }),
    'max-sockets': opt.int({ min: 16, description: 'most TCP connections open at once (before any request): past it a new one is closed as it is accepted, so that silent sockets cannot use up the file descriptors', defaultText: 'the smaller of 4 × max-connections + 64 and the open-file limit less 64' }),
    'max-sockets-per-address': opt.int({ min: 1, description: 'most TCP connections from one remote address (leave unset behind a balancer, where every client has its address)', defaultText: 'no cap' }),
    'drain-timeout': opt.duration({ bare: 'ms', default: 30_000, defaultText: '30s', description: 'on SIGTERM/SIGINT: how long sessions may finish before they are told to move (close code 1001)' }),
    'headers-timeout': opt.duration({ bare: 'ms', default: 10_000, defaultText: '10s', description: 'an HTTP request must send its headers within this long (slow-header clients are cut with 408)' }),
    'hello-timeout': opt.duration({ bare: 'ms', default: 10_000, defaultText: '10s', description: 'close a connection that sends no hello (or resume) within this long' }),
    'session-token-limit': opt.int({ min: 1, description: 'most positions one session may hold', defaultText: 'the model maximum' }),
    'max-frame-rate': opt.int({ min: 1, default: DEFAULT_RATE_LIMITS.framesPerSecond, description: 'frames per second one connection may send (2 s of it at once) before the server slows it: it reads that connection\'s next frame later, and serves the others meanwhile (splitllm_throttled_seconds_total)' }),
    'max-byte-rate': opt.bandwidth({ description: 'bytes per second one connection may send (2 s of it at once) before the server slows it', defaultText: '64MB/s' }),
    'max-frame-bytes': opt.bytes({ bare: 'b', default: 64 * 1024 * 1024, defaultText: '64MiB', description: 'largest accepted frame (a bare number is bytes)' }),
    'idle-ms': opt.duration({ bare: 'ms', default: 60_000, defaultText: '60s', description: 'release a session idle this long; a dropped one can be resumed until then (a bare number is ms)' }),
    ...calibrationOption,
    'log-level': opt.choice<'silent' | 'error' | 'warn' | 'info' | 'debug'>({ choices: ['silent', 'error', 'warn', 'info', 'debug'], default: 'info', description: 'JSON log lines on stderr (pino; stdout keeps the address line): info = one per session open/close, error and refused upgrade' }),
    json: opt.flag({ description: 'print the listening address as JSON' }),
  },
  async run(v) {
    const tenants = tenantsOf(v);
    for (const b of v['back-bits'] ?? []) if (!isWeightBits(b)) throw new SplitLLMError('E_USAGE', `--back-bits ${b} is not a supported precision: use ${WEIGHT_BITS.join(', ')}`);
    if ((v['tls-cert'] === undefined) !== (v['tls-key'] === undefined)) throw new SplitLLMError('E_USAGE', 'give --tls-cert and --tls-key together');
    const tls = v['tls-cert'] !== undefined && v['tls-key'] !== undefined ? { cert: readFileSync(v['tls-cert']), key: readFileSync(v['tls-key']) } : undefined;
    // the cloud never needs text: a package's tokenizer is read only for the browser edge, which serves it to the page
    const pkg = await openModelOption(v, { withoutTokenizer: !v['web-edge'] });
    if (v.plan !== undefined && !v['web-edge']) throw new SplitLLMError('E_USAGE', "--plan sets the browser edge's defaults: give it with --web-edge");
    const server = await startCloud(pkg, {
      port: v.port,
      host: v.host,
      tenants,
      tls,
      logLevel: v['log-level'],
      logStream: process.stderr,
      maxSessions: v['max-sessions'],
      maxConnections: v['max-connections'],
      maxSockets: v['max-sockets'],
      metricsTenants: v['metrics-tenants'],
      maxSocketsPerAddress: v['max-sockets-per-address'],
      kvBudgetBytes: v['kv-memory'],
      backBits: v['back-bits'],
      blockSizes: v['block-sizes'],
      segmentIdleMs: v['segment-idle'],
      kvSlab: v['kv-slab'],
      threads: v.threads,
      helloTimeoutMs: v['hello-timeout'],
      headersTimeoutMs: v['headers-timeout'],
      sessionTokenLimit: v['session-token-limit'],
      maxFrameBytes: v['max-frame-bytes'],
      rateLimits: { framesPerSecond: v['max-frame-rate'], bytesPerSecond: v['max-byte-rate'] },
      idleMs: v['idle-ms'],
      calibration: calibrationContexts(v, pkg),
      webEdge: v['web-edge'] ? (v.plan ? { plan: readPlanFile(v.plan, pkg) } : true) : false,
    });
    if (tenants.length === 0 && v.host !== '127.0.0.1' && v.host !== 'localhost' && v.host !== '::1') {
      process.stderr.write(`splitllm cloud: warning: listening on ${v.host} without a token: anyone who can reach it may use it (give --token-file)\n`);
    }
    if (v.json) process.stdout.write(JSON.stringify({ url: `${server.url}/v1/session`, model: pkg.hash }) + '\n');
    else process.stdout.write(`splitllm cloud serving ${pkg.manifest.name} (${pkg.config.nLayers} layers) at ${server.url}/v1/session${v['web-edge'] ? `; the browser edge at ${server.url.replace(/^ws/, 'http')}/edge/` : ''}\n`);
    // SIGTERM (Kubernetes, systemd) or Ctrl-C: drain, then exit 0; a second signal ends at once
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.once('SIGINT', () => process.exit(130));
        process.once('SIGTERM', () => process.exit(143));
        process.stderr.write(`splitllm cloud: draining (up to ${v['drain-timeout'] / 1000} s): /readyz is 503, new connections are refused\n`);
        void server.drain(v['drain-timeout']).then((r) => {
          process.stderr.write(`splitllm cloud: stopped: ${r.finished} session(s) finished, ${r.moved} told to move, ${r.idle} idle connection(s) closed\n`);
          resolve();
        });
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
  },
});

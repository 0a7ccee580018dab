import { startCloud } from '../../cloud/server.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { modelOptions, openModelOption } from '../common.js';
import { defineCommand, opt } from '../options.js';

export const cloudCommand = defineCommand({
  name: 'cloud',
  summary:
    'Runs the cloud server. Edge agents connect to ws://HOST:PORT/v1/session; GET /healthz, /v1/models and /metrics (Prometheus) are served beside it.',
  usage: 'splitllm cloud [--model M] [--port 8080] [--host 127.0.0.1] [--token SECRET] [--max-sessions N] [--session-token-limit N] [--idle-ms 60s] [--calibration FILE]',
  examples: [
    'splitllm cloud',
    'splitllm cloud --port 8080 --host 0.0.0.0 --token "$SECRET" --max-sessions 64',
    'splitllm cloud --model models/stories260K --idle-ms 5m --max-frame-bytes 16MB --json',
  ],
  options: {
    ...modelOptions,
    port: opt.port({ short: 'p', default: 8080, description: 'port to listen on (0: any free port)' }),
    host: opt.string({ default: '127.0.0.1', description: 'address to bind' }),
    token: opt.string({ description: 'require "Authorization: Bearer SECRET" on the WebSocket upgrade', valueName: 'SECRET' }),
    'max-sessions': opt.int({ min: 1, description: 'refuse connections beyond this many open ones (server_full)' }),
    'session-token-limit': opt.int({ min: 1, description: 'most positions one session may hold', defaultText: 'the model maximum' }),
    'max-frame-bytes': opt.bytes({ bare: 'b', default: 64 * 1024 * 1024, defaultText: '64MiB', description: 'largest accepted frame (a bare number is bytes)' }),
    'idle-ms': opt.duration({ bare: 'ms', default: 60_000, defaultText: '60s', description: 'release a session idle this long; a dropped one can be resumed until then (a bare number is ms)' }),
    ...calibrationOption,
    json: opt.flag({ description: 'print the listening address as JSON' }),
  },
  async run(v) {
    const pkg = await openModelOption(v);
    const server = await startCloud(pkg, {
      port: v.port,
      host: v.host,
      token: v.token,
      maxSessions: v['max-sessions'],
      sessionTokenLimit: v['session-token-limit'],
      maxFrameBytes: v['max-frame-bytes'],
      idleMs: v['idle-ms'],
      calibration: calibrationContexts(v, pkg),
    });
    if (v.json) process.stdout.write(JSON.stringify({ url: `${server.url}/v1/session`, model: pkg.hash }) + '\n');
    else process.stdout.write(`splitllm cloud serving ${pkg.manifest.name} (${pkg.config.nLayers} layers) at ${server.url}/v1/session\n`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.stderr.write('shutting down\n');
        void server.close().then(resolve);
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
  },
});

import { startCloud } from '../../cloud/server.js';
import { calibrationContexts, calibrationOption } from '../calibration-io.js';
import { intOption, modelOptions, type Command, openModelOption } from '../common.js';

export const cloudCommand: Command = {
  name: 'cloud',
  summary:
    'Runs the cloud server. Edge agents connect to ws://HOST:PORT/v1/session; GET /healthz, /v1/models and /metrics (Prometheus) are served beside it.',
  usage: 'splitllm cloud --model M [--port 8080] [--host 127.0.0.1] [--token SECRET] [--max-sessions N] [--session-token-limit N] [--calibration FILE]',
  options: {
    ...modelOptions,
    port: { type: 'string', short: 'p', description: 'port to listen on', default: '8080' },
    host: { type: 'string', description: 'address to bind', default: '127.0.0.1' },
    token: { type: 'string', description: 'require "Authorization: Bearer SECRET" on the WebSocket upgrade', valueName: 'SECRET' },
    'max-sessions': { type: 'string', description: 'refuse sessions beyond this many open ones' },
    'session-token-limit': { type: 'string', description: 'most positions one session may hold (default: the model maximum)' },
    'max-frame-bytes': { type: 'string', description: 'largest accepted frame', default: '67108864' },
    'idle-ms': { type: 'string', description: 'release a session idle this long; a dropped one can be resumed until then', default: '60000' },
    ...calibrationOption,
    json: { type: 'boolean', description: 'print the listening address as JSON' },
  },
  async run(values) {
    const pkg = await openModelOption(values);
    const server = await startCloud(pkg, {
      port: intOption(values, 'port', 8080),
      host: String(values['host']),
      token: values['token'] as string | undefined,
      maxSessions: intOption(values, 'max-sessions', undefined, 1),
      sessionTokenLimit: intOption(values, 'session-token-limit', undefined, 1),
      maxFrameBytes: intOption(values, 'max-frame-bytes', 64 * 1024 * 1024, 1024),
      idleMs: intOption(values, 'idle-ms', 60_000, 1),
      calibration: calibrationContexts(values, pkg),
    });
    if (values['json']) process.stdout.write(JSON.stringify({ url: `${server.url}/v1/session`, model: pkg.hash }) + '\n');
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
};

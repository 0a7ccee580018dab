/** What a server says when it cannot listen: a usage error naming the port or host, or nothing (then rethrow). */
import { SplitLLMError } from './errors.js';

export function listenError(e: unknown, host: string, port: number): SplitLLMError | undefined {
  const code = e instanceof Error && 'code' in e ? String(e.code) : '';
  if (code === 'EADDRINUSE') return new SplitLLMError('E_USAGE', `port ${port} on ${host} is in use: stop what listens there or pick another --port`);
  if (code === 'EACCES') return new SplitLLMError('E_USAGE', `port ${port} on ${host} needs privileges this process lacks: pick a port above 1023`);
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') return new SplitLLMError('E_USAGE', `--host ${host} is not an address of this machine: use 127.0.0.1, 0.0.0.0 or one of its interfaces`);
  return undefined;
}

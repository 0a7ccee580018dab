/**
 * Measures the link to a running cloud server from the edge: round trip (median of small probes) and
 * throughput (a large reply, then a large upload), through the same connection and checked frames as a
 * session, so a refused token or a server that is not splitllm is a one-line typed error.
 */
import type { LinkProfile } from '../planner/types.js';
import type { Connector } from '../shared/transport/channel.js';
import { wsConnector } from './connect-node.js';
import { CloudConnection } from './connection.js';

export async function measureLink(
  url: string,
  token?: string,
  opts: { probes?: number; bytes?: number; connect?: Connector; ca?: string | Buffer } = {},
): Promise<LinkProfile & { upBytesPerSec: number; downBytesPerSec: number }> {
  const link = await CloudConnection.open(opts.connect ?? wsConnector(url, token, { ca: opts.ca }), { resume: false });
  try {
    const ask = async (id: number, reply: number, upload: number): Promise<number> => {
      const t0 = performance.now();
      link.send({ type: 'probe', id, reply }, new Uint8Array(upload));
      await link.expect('probe');
      return performance.now() - t0;
    };
    const rtts: number[] = [];
    for (let i = 0; i < (opts.probes ?? 20); i++) rtts.push(await ask(i, 0, 0));
    rtts.sort((a, b) => a - b);
    const rttMs = rtts[Math.floor(rtts.length / 2)]!;
    const big = opts.bytes ?? 4 * 1024 * 1024;
    const down = await ask(1000, big, 0);
    const up = await ask(1001, 0, big);
    const downBytesPerSec = big / (Math.max(down - rttMs, 0.01) / 1000);
    const upBytesPerSec = big / (Math.max(up - rttMs, 0.01) / 1000);
    // the edge mostly uploads hidden states: plan with the upload rate
    return { rttMs, bytesPerSec: upBytesPerSec, upBytesPerSec, downBytesPerSec };
  } finally {
    link.close();
  }
}

/**
 * A TCP proxy on loopback that can stop forwarding, as a network path that partitions does: bytes stop in
 * both directions and new connections are accepted but never reach the server. `heal` is the route coming
 * back: the connections held through the partition are reset and new ones go through.
 */
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';

export interface PartitionProxy {
  /** ws://127.0.0.1:PORT — the proxy's address */
  url: string;
  /** stops forwarding now */
  partition(): void;
  /** stops forwarding once this many chunks went from the server to the client from now on (mid-generation) */
  partitionAfter(serverChunks: number): void;
  heal(): void;
  close(): Promise<void>;
}

export async function partitionProxy(targetPort: number): Promise<PartitionProxy> {
  const pairs = new Set<[Socket, Socket | undefined]>();
  let cut = false;
  let countdown: number | undefined;
  const stop = (): void => {
    cut = true;
    for (const [a, b] of pairs) {
      a.pause();
      b?.pause();
    }
  };
  const server = createServer((client) => {
    client.on('error', () => undefined);
    if (cut) {
      // accepted, never forwarded: a route that black-holes
      client.pause();
      pairs.add([client, undefined]);
      client.on('close', () => undefined);
      return;
    }
    const upstream = connect(targetPort, '127.0.0.1');
    upstream.on('error', () => client.destroy());
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    client.on('data', (d: Buffer) => {
      if (!cut) upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (cut) return;
      client.write(d);
      if (countdown !== undefined && --countdown <= 0) {
        countdown = undefined;
        stop();
      }
    });
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `ws://127.0.0.1:${port}`,
    partition: stop,
    partitionAfter: (n) => (countdown = n),
    heal: () => {
      cut = false;
      for (const [a, b] of pairs) {
        a.destroy();
        b?.destroy();
      }
      pairs.clear();
    },
    close: async () => {
      for (const [a, b] of pairs) {
        a.destroy();
        b?.destroy();
      }
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * A slow link in user space: a TCP relay on loopback that delays each direction by half the round
 * trip and, when given a bandwidth, serializes bytes at that rate (a chunk leaves once the ones before
 * it have, then takes bytes ÷ rate). Order is kept. The demo uses it to show a device's link on one
 * machine; bench/planner uses it for the delay beside kernel traffic shaping.
 */
import net from 'node:net';

export interface LinkShape {
  /** round trip added to the loopback's own, in ms */
  rttMs: number;
  /** bytes per second each way; undefined: no shaping */
  bytesPerSec?: number;
}

export interface EmulatedLink {
  /** the relay's port on 127.0.0.1 */
  port: number;
  close(): Promise<void>;
}

/** One direction: a FIFO of chunks released by a single timer at their delivery times. */
function pipe(from: net.Socket, to: net.Socket, shape: LinkShape): void {
  const queue: { at: number; data: Buffer }[] = [];
  let busyUntil = 0;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  const drain = () => {
    timer = undefined;
    const now = performance.now();
    while (queue.length && queue[0]!.at <= now + 0.5) to.write(queue.shift()!.data);
    if (queue.length) timer = setTimeout(drain, Math.max(0, queue[0]!.at - performance.now()));
    else if (ended) to.end(); // a half-close travels behind the data, like a FIN
  };
  from.on('end', () => {
    ended = true;
    if (!timer) drain();
  });
  from.on('data', (data: Buffer) => {
    const now = performance.now();
    const start = Math.max(now, busyUntil);
    busyUntil = start + (shape.bytesPerSec ? (1000 * data.length) / shape.bytesPerSec : 0);
    queue.push({ at: busyUntil + shape.rttMs / 2, data });
    if (!timer) timer = setTimeout(drain, Math.max(0, queue[0]!.at - now));
  });
}

/** Listens on 127.0.0.1 (a free port) and relays each connection to host:port through the shaped link. */
export async function emulateLink(target: { host: string; port: number }, shape: LinkShape): Promise<EmulatedLink> {
  const sockets = new Set<net.Socket>();
  // half-open sockets: each side's FIN is passed on once the data before it has been delivered
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstream = net.connect({ port: target.port, host: target.host, allowHalfOpen: true });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    sockets.add(client).add(upstream);
    pipe(client, upstream, shape);
    pipe(upstream, client, shape);
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('error', close);
      s.on('close', () => (client.closed && upstream.closed ? close() : undefined));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

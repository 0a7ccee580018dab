/**
 * A WebSocket server written at the TCP level, for clouds that misbehave below what the `ws` package lets
 * a server do: answer the upgrade late or never, drip a frame a byte at a time, ignore a close frame.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';

export interface RawPeer {
  socket: Socket;
  /** the session id the edge put in the upgrade URL */
  session: string;
  /** completes the upgrade (101 Switching Protocols) */
  accept(): void;
  /** called with each chunk of bytes the client sends after the upgrade (its frames, masked, not parsed) */
  onData(f: (chunk: Buffer) => void): void;
}

export interface RawWsServer {
  url: string;
  close(): Promise<void>;
}

/** An unmasked binary frame from the server (payloads below 64 KiB). */
export function serverFrame(payload: Uint8Array): Buffer {
  const head = payload.length < 126 ? Buffer.from([0x82, payload.length]) : Buffer.from([0x82, 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([head, payload]);
}

export async function rawWsServer(onPeer: (peer: RawPeer) => void): Promise<RawWsServer> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let head = '';
    let upgraded = false;
    let dataHandler: ((chunk: Buffer) => void) | undefined;
    socket.on('data', (d: Buffer) => {
      if (upgraded) return dataHandler?.(d);
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0 || upgraded) return;
      upgraded = true;
      const key = /sec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? '';
      const path = /^GET (\S+)/.exec(head)?.[1] ?? '/';
      const session = new URL(path, 'http://x').searchParams.get('session') ?? '';
      onPeer({
        socket,
        session,
        accept: () => {
          const acceptKey = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
          socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey}\r\n\r\n`);
        },
        onData: (f) => (dataHandler = f),
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `ws://127.0.0.1:${port}/v1/session`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

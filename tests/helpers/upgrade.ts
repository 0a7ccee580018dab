/** A WebSocket upgrade request by hand: the HTTP status it got, and whether the server switched protocols. */
import { request } from 'node:http';

export function upgrade(url: string, headers: Record<string, string> = {}, path = '/v1/session'): Promise<{ status: number; upgraded: boolean; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url.replace(/^ws/, 'http') + path);
    const req = request({
      agent: false, // a fresh socket each time: a refused upgrade's socket is not reused
      host: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, upgraded: true, body: '' });
    });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, upgraded: false, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

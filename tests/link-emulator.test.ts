import net from 'node:net';
import { expect, it } from 'vitest';
import { emulateLink } from '../cli/link-emulator.js';

it('the emulated link delivers every byte in order, no sooner than the round trip and the serialization allow, and passes a half-close on', async () => {
  // an echo server that answers once the client has finished sending
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('end', () => s.end(Buffer.concat(got)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const link = await emulateLink({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port }, { rttMs: 40, bytesPerSec: 100_000 });
  try {
    const sent = Buffer.from(Array.from({ length: 20_000 }, (_, i) => (i * 31) & 255));
    const t0 = performance.now();
    const back = await new Promise<Buffer>((resolve, reject) => {
      const c = net.connect({ port: link.port, host: '127.0.0.1', allowHalfOpen: true });
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      c.on('end', () => resolve(Buffer.concat(got)));
      c.on('error', reject);
      for (let off = 0; off < sent.length; off += 1000) c.write(sent.subarray(off, off + 1000));
      c.end();
    });
    const ms = performance.now() - t0;
    expect(back.equals(sent)).toBe(true);
    // 20 KB up and 20 KB back at 100 KB/s each way (200 ms each) plus two half round trips
    expect(ms).toBeGreaterThanOrEqual(2 * 200 + 40 - 2);
  } finally {
    await link.close();
    await new Promise((r) => server.close(r));
  }
});

/**
 * Session ids chosen by the edge: 128 random bits as 22 base64url characters. The edge puts its id in
 * the upgrade URL (`/v1/session?session=ID`) of the first connection and of every resume, so that a
 * balancer hashing on that parameter sends all of a session's connections to one replica. Browser-safe:
 * Web Crypto only.
 */

/** A well-formed session id: exactly 22 base64url characters (128 bits, no padding). */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{22}$/;

export function isSessionId(s: string): boolean {
  return SESSION_ID_PATTERN.test(s);
}

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** A new random session id (128 bits from the platform's CSPRNG). */
export function newSessionId(): string {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  let out = '';
  // 16 bytes = 5 groups of 3 bytes (20 characters) + one byte (2 characters)
  for (let i = 0; i < 15; i += 3) {
    const n = (b[i]! << 16) | (b[i + 1]! << 8) | b[i + 2]!;
    out += B64URL[(n >> 18) & 63]! + B64URL[(n >> 12) & 63]! + B64URL[(n >> 6) & 63]! + B64URL[n & 63]!;
  }
  const last = b[15]!;
  return out + B64URL[last >> 2]! + B64URL[(last & 3) << 4]!;
}

/** The upgrade URL of a session: `url` with `session=ID` in its query (any other parameters kept). */
export function sessionUrl(url: string, session: string): string {
  const u = new URL(url);
  u.searchParams.set('session', session);
  return u.toString();
}

/** Comparing secrets (tokens, API keys, resume secrets) without leaking by timing which bytes matched. */
import { createHash, timingSafeEqual } from 'node:crypto';

/** Constant-time comparison of two secrets (unequal lengths compare unequal, in constant time too). */
export function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb) && a.length === b.length;
}

/** The token of an `Authorization: Bearer …` header, or undefined. */
export function bearerToken(authorization: string | undefined): string | undefined {
  const m = /^Bearer[ ]+(.+)$/i.exec(authorization ?? '');
  return m?.[1]?.trim() || undefined;
}

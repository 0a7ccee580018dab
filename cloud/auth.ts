/**
 * Who may open a session: bearer tokens, each a named tenant with an optional session cap. Tokens come
 * from a file or the environment (never required on the command line); an empty one is an error, not
 * "no auth". The check runs on the HTTP upgrade request, before any WebSocket code, and compares in
 * constant time against every token (which one matched, or that none did, takes the same time).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { SplitLLMError } from '../shared/errors.js';
import { Fields, failWith } from '../shared/fields.js';
import { bearerToken } from '../shared/secret.js';
import type { Identity } from './session.js';

export interface TenantSpec {
  name: string;
  token: string;
  /** most sessions this tenant may hold at once (default: only the server's cap) */
  maxSessions?: number;
  /**
   * most WebSocket connections this tenant may hold open (default: its maxSessions when it has one;
   * else, with several tenants, three quarters of the server's --max-connections, so that one tenant's
   * connections never take every slot)
   */
  maxConnections?: number;
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

export class Tenants {
  private readonly entries: { digest: Buffer; identity: Identity }[];

  constructor(specs: TenantSpec[]) {
    const names = new Set<string>();
    const tokens = new Set<string>();
    for (const t of specs) {
      if (t.token.trim() === '') throw new SplitLLMError('E_USAGE', `tenant ${t.name} has an empty token (an unset variable?): give it a real one`);
      if (names.has(t.name)) throw new SplitLLMError('E_USAGE', `tenant ${t.name} is named twice: give each tenant its own name`);
      if (tokens.has(t.token)) throw new SplitLLMError('E_USAGE', `tenant ${t.name} shares its token with another tenant: give each its own`);
      names.add(t.name);
      tokens.add(t.token);
    }
    this.entries = specs.map((t) => ({
      digest: digest(t.token),
      identity: { tenant: t.name, ...(t.maxSessions !== undefined ? { maxSessions: t.maxSessions } : {}), ...(t.maxConnections !== undefined ? { maxConnections: t.maxConnections } : {}) },
    }));
  }

  /** whether tokens are required at all */
  get enabled(): boolean {
    return this.entries.length > 0;
  }

  get size(): number {
    return this.entries.length;
  }

  /** The tenant of an `Authorization: Bearer …` header, or undefined; every token is compared. */
  identify(authorization: string | undefined): Identity | undefined {
    const token = bearerToken(authorization);
    const given = digest(token ?? '');
    let found: Identity | undefined;
    for (const e of this.entries) if (timingSafeEqual(e.digest, given) && token !== undefined) found = e.identity;
    return found;
  }
}

/** The subprotocol a page offers with its bearer token (a page cannot set headers on its upgrade). */
export const TOKEN_SUBPROTOCOL_PREFIX = 'base64url.bearer.authorization.splitllm.';
/** The subprotocol the server selects when a page offers its token that way (the token one is never echoed). */
export const SPLITLLM_SUBPROTOCOL = 'splitllm';

/**
 * The credential of an upgrade: its `Authorization` header, else a bearer token offered as the subprotocol
 * `base64url.bearer.authorization.splitllm.<base64url token>` (the convention Kubernetes uses for browsers).
 */
export function upgradeCredential(authorization: string | undefined, protocols: string | undefined): string | undefined {
  if (authorization) return authorization;
  const offered = (protocols ?? '').split(',').map((p) => p.trim());
  const t = offered.find((p) => p.startsWith(TOKEN_SUBPROTOCOL_PREFIX));
  if (!t) return undefined;
  const token = Buffer.from(t.slice(TOKEN_SUBPROTOCOL_PREFIX.length), 'base64url').toString('utf8');
  return token ? `Bearer ${token}` : undefined;
}

/**
 * A tenants file: `{"tenants": [{"name": "alice", "token": "…", "maxSessions": 8, "maxConnections": 12}, …]}` (E_BAD_CONFIG
 * naming the field).
 */
export function parseTenantsFile(raw: unknown, where: string): TenantSpec[] {
  const fail = failWith('E_BAD_CONFIG');
  const f: Fields = Fields.of(raw, where, fail, 'a JSON object {"tenants": [...]}');
  return f.array('tenants', 10_000).map((entry, i) => {
    const t = Fields.of(entry, `${where}: tenants[${i}]`, fail);
    const spec: TenantSpec = { name: t.str('name', 64), token: t.str('token', 4096) };
    if (!/^[A-Za-z0-9_.-]+$/.test(spec.name)) t.fail(`name ${JSON.stringify(spec.name)} may hold only letters, digits, '_', '.', '-' (it labels metrics and logs)`);
    const cap = t.optInt('maxSessions', 1, 1 << 20);
    if (cap !== undefined) spec.maxSessions = cap;
    const conns = t.optInt('maxConnections', 1, 1 << 20);
    if (conns !== undefined) spec.maxConnections = conns;
    return spec;
  });
}

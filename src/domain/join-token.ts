/**
 * Tokens that let a host join (`ferry token join`) or a CLI log in
 * (`ferry token login`): single use, expiring. A token reads
 * `KIND.ID.SECRET.FINGERPRINT`: the controller keeps only a hash of the
 * secret under the id; the fingerprint is the SHA-256 of the cluster CA's
 * certificate, so the newcomer trusts the CA it is shown only if it is the
 * one the token was made by (no man in the middle at join).
 */

export const TOKEN_KINDS = ['join', 'login'] as const;
export type TokenKind = (typeof TOKEN_KINDS)[number];

export interface ParsedToken {
  kind: TokenKind;
  id: string;
  secret: string;
  fingerprint: string;
}

/** What the store keeps of an issued token. */
export interface TokenRecord {
  id: string;
  kind: TokenKind;
  /** SHA-256 of the secret, hex. */
  secretHash: string;
  createdAtMs: number;
  expiresAtMs: number;
  usedAtMs?: number;
  /** A join token that lets the host run a controller too (`ferry token join --controller`): it gets the CA's key. */
  controller?: true;
  /** The host that joined, or 'cli' for a login. */
  usedBy?: string;
}

/** Default and longest lifetimes. */
export const TOKEN_TTL = { defaultMs: 3600_000, minMs: 60_000, maxMs: 7 * 24 * 3600_000 } as const;

const SHAPE = /^(join|login)\.([0-9a-f]{16})\.([0-9a-f]{48})\.([0-9a-f]{64})$/;

export function formatToken(t: ParsedToken): string {
  return `${t.kind}.${t.id}.${t.secret}.${t.fingerprint}`;
}

/** The token's parts, or why it is not a token of that kind (one line, without echoing the secret). */
export function parseToken(text: string, kind: TokenKind): ParsedToken | { error: string } {
  const m = SHAPE.exec(text.trim());
  if (!m) return { error: `the ${kind} token is malformed (expected what 'ferry token ${kind}' prints)` };
  if (m[1] !== kind) return { error: `that is a ${m[1]} token; this needs a ${kind} token ('ferry token ${kind}')` };
  return { kind, id: m[2]!, secret: m[3]!, fingerprint: m[4]! };
}

/** Parses a duration such as 90s, 15m, 1h, 2d into milliseconds. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d{1,6})(s|m|h|d)$/.exec(text.trim());
  if (!m) return undefined;
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

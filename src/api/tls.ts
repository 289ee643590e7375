/**
 * HTTPS between Ferry's daemons and clients: the server side (who the peer's
 * certificate says it is) and the client side (a fetch that trusts only the
 * cluster's CA and shows its own certificate).
 *
 * A controller asks every client for a certificate but lets the request in
 * without one (the CLI and the console bring a token instead); an agent
 * completes no handshake without a certificate from the cluster's CA.
 */
import type { TLSSocket } from 'node:tls';
import type { Context } from 'hono';
import type { Agent } from 'undici';
import { type CertIdentity, identityOf } from '../system/pki.js';

/** What a daemon serves HTTPS with. */
export interface ServerTls {
  certPem: string;
  keyPem: string;
  caPem: string;
  /** Refuse the handshake of a client without a certificate from the CA (agents), or let the request decide (controllers). */
  requireClientCert: boolean;
}

/** What a client trusts and shows. */
export interface ClientTls {
  caPem: string;
  certPem?: string;
  keyPem?: string;
}

/** Who a request's verified client certificate names; undefined without one from the cluster's CA. */
export function peerIdentity(c: Context): CertIdentity | undefined {
  const socket = (c.env as { incoming?: { socket?: TLSSocket } } | undefined)?.incoming?.socket;
  if (!socket || typeof socket.getPeerCertificate !== 'function' || !socket.authorized) return undefined;
  const raw = socket.getPeerCertificate(false)?.raw;
  if (!raw) return undefined;
  try {
    return identityOf(raw);
  } catch {
    return undefined;
  }
}

/** Why a client certificate that came with the request was not accepted (not from the CA, expired), if one came. */
export function peerRefusal(c: Context): string | undefined {
  const socket = (c.env as { incoming?: { socket?: TLSSocket } } | undefined)?.incoming?.socket;
  if (!socket || typeof socket.getPeerCertificate !== 'function' || socket.authorized) return undefined;
  const cert = socket.getPeerCertificate(false);
  if (!cert || !cert.raw) return undefined;
  return `the client certificate (${cert.subject?.CN ?? 'unnamed'}) is not one this cluster's CA signed (${String(socket.authorizationError ?? 'unverified')})`;
}

type Fetch = (input: string, init: RequestInit) => Promise<Response>;

/** A fetch over TLS that trusts only `tls.caPem` and presents the client certificate, if any (undici is loaded at the first call). */
export function tlsFetch(tls: ClientTls, o: { connectTimeoutMs?: number } = {}): Fetch & { close(): Promise<void> } {
  return undiciFetchWith({
    ca: tls.caPem,
    ...(tls.certPem && tls.keyPem ? { cert: tls.certPem, key: tls.keyPem } : {}),
    ...(o.connectTimeoutMs !== undefined ? { timeout: o.connectTimeoutMs } : {}),
  });
}

/** A fetch that checks no certificate at all: only for a newcomer fetching the CA it then checks against its token. */
export function unverifiedFetch(): Fetch & { close(): Promise<void> } {
  return undiciFetchWith({ rejectUnauthorized: false });
}

function undiciFetchWith(connect: {
  ca?: string;
  cert?: string;
  key?: string;
  rejectUnauthorized?: boolean;
  timeout?: number;
}): Fetch & { close(): Promise<void> } {
  let loaded: Promise<{ dispatcher: Agent; fetch: typeof import('undici').fetch }> | undefined;
  const load = () => (loaded ??= import('undici').then((u) => ({ dispatcher: new u.Agent({ connect, keepAliveTimeout: 4_000 }), fetch: u.fetch })));
  const f = (async (input: string, init: RequestInit) => {
    const u = await load();
    return (await u.fetch(input, { ...(init as Parameters<typeof u.fetch>[1]), dispatcher: u.dispatcher })) as unknown as Response;
  }) as Fetch & { close(): Promise<void> };
  f.close = async () => {
    if (loaded) await (await loaded).dispatcher.close();
  };
  return f;
}

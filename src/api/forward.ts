/**
 * A standby controller answers the API too: it forwards each request to
 * the controller that leads (the URL in the leader key) and streams the
 * answer back, so a CLI, a script or a browser may talk to any controller.
 *
 * A request is forwarded once: one that already came through a standby
 * (it carries FORWARDED_HEADER) is refused, so two controllers that both
 * believe the other leads never bounce a request between them. While no
 * leader is known, or the leader does not answer, the answer is a
 * `not-leader` error the CLI tries again (the request did not happen).
 * A leader that stops leading while it has a request (frozen, or gone
 * with its connection kept open) is not waited for: once the leader key
 * names another controller or none, the request is dropped and the
 * answer says so, for a read as one the CLI tries again.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type Clock, systemClock } from '../domain/clock.js';
import { ErrorCode, FerryError } from '../domain/errors.js';
import { refuseUpgrade } from './http.js';
import type { ClientTls } from './tls.js';

/** Says which standby a request came through (and that it must not be forwarded again). */
export const FORWARDED_HEADER = 'x-ferry-forwarded-by';

/** Headers of one hop (RFC 9110 §7.6.1) and those the forwarding fetch sets itself. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'te', 'trailer', 'proxy-connection']);

export interface ForwardOptions {
  /** This controller's name, put in FORWARDED_HEADER. */
  by: string;
  /** This controller's own URL: a leader key that names it is not forwarded to. */
  self: () => string;
  /** Where the leader's API answers now, if a leader announced one. */
  leader: () => Promise<string | undefined>;
  /** The fetch that reaches the leader (HTTPS with the cluster's CA on real hosts). */
  fetch: (input: string, init: RequestInit) => Promise<Response>;
  /** How often the leader key is read again while the leader has not answered (default LEADER_WATCH_MS). */
  watchMs?: number;
  clock?: Clock;
}

/** A leader that has not answered yet is checked on this often: it may have stopped leading meanwhile. */
export const LEADER_WATCH_MS = 500;

function notLeader(message: string, details: Record<string, unknown>): Response {
  const err = new FerryError(ErrorCode.NotLeader, message, { details: { standby: true, ...details } });
  return Response.json({ error: err.toJSON() }, { status: err.httpStatus });
}

/**
 * Reads the leader key every `watchMs` until `stop`: `changed` once it no longer names `leader`, with the URL it
 * names now (undefined: none). A key that cannot be read is no news.
 */
async function watchLeader(o: ForwardOptions, leader: string, stop: AbortSignal): Promise<{ changed: false } | { changed: true; now: string | undefined }> {
  const clock = o.clock ?? systemClock;
  for (;;) {
    const stopped = await clock.sleep(o.watchMs ?? LEADER_WATCH_MS, stop).then(
      () => false,
      () => true,
    );
    if (stopped) return { changed: false };
    const now = await o.leader().then(
      (url) => ({ url }),
      () => undefined,
    );
    if (stop.aborted) return { changed: false };
    if (now && now.url !== leader) return { changed: true, now: now.url };
  }
}

/** A fetch handler that sends every request on to the leader. */
export function forwardToLeader(o: ForwardOptions): (req: Request) => Promise<Response> {
  return async (req) => {
    const came = req.headers.get(FORWARDED_HEADER);
    if (came !== null)
      return notLeader(`${o.by} does not lead and will not forward a request ${came} already forwarded (the controllers disagree on who leads; try again)`, {
        by: o.by,
        via: came,
      });
    const leader = await o.leader().catch(() => undefined);
    if (!leader || leader === o.self())
      return notLeader(`${o.by} does not lead and no leader answers yet (one takes over within the leader lease; try again)`, { by: o.by });
    const incoming = new URL(req.url);
    const target = new URL(incoming.pathname + incoming.search, leader);
    const headers = new Headers();
    req.headers.forEach((v, k) => {
      if (!HOP_HEADERS.has(k)) headers.set(k, v);
    });
    headers.set(FORWARDED_HEADER, o.by);
    // The answer streams through as it is: no compressed body to decode and encode again.
    headers.set('accept-encoding', 'identity');
    let answer: Response;
    const read = req.method === 'GET' || req.method === 'HEAD';
    // Until the answer's headers come, the leader key is watched: a leader that stopped leading is not waited for.
    const watching = new AbortController();
    const stopped = new AbortController();
    void watchLeader(o, leader, watching.signal).then((w) => w.changed && stopped.abort({ now: w.now }));
    try {
      answer = await o.fetch(target.href, {
        method: req.method,
        headers,
        redirect: 'manual',
        signal: AbortSignal.any([req.signal, stopped.signal]),
        ...(!read && req.body !== null ? { body: req.body, duplex: 'half' } : {}),
      } as RequestInit);
    } catch (e) {
      if (!stopped.signal.aborted)
        return notLeader(`${o.by} does not lead and the leader at ${leader} does not answer (${(e as Error).message}); try again`, {
          by: o.by,
          leader,
        });
      const { now } = stopped.signal.reason as { now: string | undefined };
      // A read is asked again; a change may have been made before the leader stopped, so it is not repeated blindly.
      return notLeader(
        `${o.by} does not lead and the leader at ${leader} stopped leading while it had the request (${now ? `${now} leads now` : 'none leads yet'}); ` +
          (read ? 'try again' : 'it may have been done: look before trying again'),
        { by: o.by, leader, standby: read },
      );
    } finally {
      watching.abort();
    }
    const back = new Headers();
    answer.headers.forEach((v, k) => {
      if (!HOP_HEADERS.has(k)) back.set(k, v);
    });
    return new Response(answer.body, { status: answer.status, statusText: answer.statusText, headers: back });
  };
}

/**
 * Forwards a WebSocket upgrade (a VM's console) to the leader as it came:
 * the request line and headers are written to a connection to the leader
 * and the bytes are piped both ways from then on. A request already
 * forwarded, or no leader known, is refused.
 */
export function relayUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  o: { by: string; leader: string | undefined; self: string; tls?: ClientTls },
): void {
  const refuse = (text: string) => {
    const err = new FerryError(ErrorCode.NotLeader, text, { details: { standby: true, by: o.by } });
    refuseUpgrade(socket, err.httpStatus, JSON.stringify({ error: err.toJSON() }));
  };
  if (req.headers[FORWARDED_HEADER] !== undefined) return refuse(`${o.by} does not lead and will not forward a request already forwarded; try again`);
  if (!o.leader || o.leader === o.self) return refuse(`${o.by} does not lead and no leader answers yet; try again`);
  const target = new URL(o.leader);
  const port = Number(target.port || (target.protocol === 'https:' ? 443 : 80));
  const host = target.hostname.replace(/^\[|\]$/g, '');
  const far: net.Socket =
    target.protocol === 'https:'
      ? tls.connect({
          host,
          port,
          ca: o.tls?.caPem,
          ...(o.tls?.certPem && o.tls.keyPem ? { cert: o.tls.certPem, key: o.tls.keyPem } : {}),
          ...(net.isIP(host) ? {} : { servername: host }),
        })
      : net.connect({ host, port });
  let piped = false;
  const end = () => {
    far.destroy();
    socket.destroy();
  };
  far.once(target.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
    piped = true;
    const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i]!;
      if (k.toLowerCase() === 'host') lines.push(`Host: ${target.host}`);
      else lines.push(`${k}: ${req.rawHeaders[i + 1]!}`);
    }
    lines.push(`${FORWARDED_HEADER}: ${o.by}`);
    far.write(lines.join('\r\n') + '\r\n\r\n');
    if (head.length > 0) far.write(head);
    far.pipe(socket);
    socket.pipe(far);
  });
  far.once('error', (e) => {
    if (!piped) refuse(`${o.by} does not lead and the leader at ${o.leader} does not answer (${e.message}); try again`);
    else end();
  });
  socket.once('error', end);
  socket.once('close', () => far.destroy());
  far.once('close', () => {
    if (piped) socket.destroy();
  });
}

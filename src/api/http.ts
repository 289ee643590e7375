/**
 * What the controller's, the agents' and the switch's HTTP APIs share, on
 * Hono: an app whose schema failures and errors answer as one FerryError
 * line, a body size limit, and a server around the app. The
 * app is a function from Request to Response, so tests call
 * `app.request(path, init)` without opening a socket.
 */
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocketServer } from 'ws';
import { serve as serveNode, type ServerType } from '@hono/node-server';
import { OpenAPIHono, type z } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { ErrorCode, FerryError, errors, toFerryError } from '../domain/errors.js';
import type { ServerTls } from './tls.js';

/** Requests larger than this are refused before they are read further. */
export const MAX_BODY_BYTES = 1 << 20;

const ZOD_DEFAULT = /^(Invalid|Too (small|big)|Unrecognized|Expected)/;

/** One line for the first thing wrong with a request. */
export function issueMessage(issues: readonly z.core.$ZodIssue[]): string {
  const i = issues[0];
  if (!i) return 'the request is invalid';
  const where = i.path.length ? i.path.join('.') : '';
  // Zod's own wording is replaced by Ferry's; a schema's own message is kept (zod marks neither, so its wording tells).
  // eslint-disable-next-line no-restricted-syntax
  if (!ZOD_DEFAULT.test(i.message)) return i.message;
  switch (i.code) {
    case 'unrecognized_keys':
      return `unknown field '${i.keys[0]}'${where ? ` in ${where}` : ''}`;
    case 'invalid_type':
      return `${where || 'the request body'} must be ${i.expected === 'object' ? 'a JSON object' : `a ${i.expected}`}${(i as { input?: unknown }).input === undefined ? ' (missing)' : ''}`;
    case 'too_big':
      return `${where || 'the value'} is too ${i.origin === 'string' ? 'long' : 'big'} (at most ${String(i.maximum)})`;
    case 'too_small':
      return `${where || 'the value'} is too ${i.origin === 'string' ? 'short' : 'small'} (at least ${String(i.minimum)})`;
    case 'invalid_value':
      return `${where || 'the value'} must be one of ${i.values.map(String).join(', ')}`;
    default:
      return `${where ? `${where}: ` : ''}${i.message}`;
  }
}

export function errorResponse(c: Context, err: FerryError): Response {
  return c.json({ error: err.toJSON() }, err.httpStatus as 400);
}

/** An app that answers every failure as a FerryError. */
export function createApp(): OpenAPIHono {
  const app = new OpenAPIHono({
    defaultHook: (result, c) => {
      if (!result.success) return errorResponse(c, errors.invalid('request', issueMessage(result.error.issues)));
      return undefined;
    },
  });
  app.onError((e, c) => {
    // A body that is not JSON, or not a JSON object.
    if (e instanceof SyntaxError || e instanceof HTTPException) {
      const status = e instanceof HTTPException ? e.status : 400;
      if (status === 413) return errorResponse(c, errors.tooLarge(MAX_BODY_BYTES));
      if (status && status !== 400) return c.json({ error: { code: ErrorCode.Usage, message: e.message } }, status as 400);
      return errorResponse(c, errors.invalid('body', 'request body is not valid JSON'));
    }
    return errorResponse(c, toFerryError(e));
  });
  app.notFound((c) => c.json({ error: { code: ErrorCode.Usage, message: `no such endpoint: ${c.req.method} ${new URL(c.req.url).pathname}` } }, 404));
  return app;
}

/** Refuses bodies over MAX_BODY_BYTES, by their announced length and while reading. */
export function limitBody(max = MAX_BODY_BYTES): MiddlewareHandler {
  return bodyLimit({ maxSize: max, onError: (c) => errorResponse(c, errors.tooLarge(max)) });
}

export interface Listening {
  port: number;
  url: string;
  server: ServerType;
  close(): Promise<void>;
}

/** Serves an app on `host:port` (0: any free port), over HTTPS with `tls`. */
export async function serve(
  app: { fetch: (req: Request, env?: object) => Response | Promise<Response> },
  host = '127.0.0.1',
  port = 0,
  tls?: ServerTls,
): Promise<Listening> {
  const secure = tls
    ? {
        createServer: createHttpsServer,
        serverOptions: {
          key: tls.keyPem,
          cert: tls.certPem,
          ca: tls.caPem,
          requestCert: true,
          rejectUnauthorized: tls.requireClientCert,
          minVersion: 'TLSv1.2' as const,
        },
      }
    : {};
  const server = await new Promise<ServerType>((resolve, reject) => {
    const s = serveNode({ fetch: app.fetch, hostname: host, port, ...secure }, () => resolve(s));
    s.once('error', reject);
  });
  const actual = (server.address() as AddressInfo).port;
  (server as { keepAliveTimeout?: number }).keepAliveTimeout = 5_000;
  return {
    port: actual,
    server,
    url: `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${actual}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
  };
}

/** Answers an upgrade request with an HTTP error (its JSON body `text`) and closes the connection. */
export function refuseUpgrade(socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${text}`);
}

/**
 * WebSocket tunnels on a listening server (a VM's graphical console): an
 * upgrade request is first asked of `app` as a plain GET of the same path,
 * so it passes the app's own authentication and checks; on a 200 answer
 * `open` makes the far end, and the WebSocket's binary messages and the far
 * end's bytes are piped both ways until either side closes.
 */
export function serveTunnels(
  listening: Listening,
  app: { fetch: (req: Request, env?: object) => Response | Promise<Response> },
  open: (path: string) => Promise<Duplex> | undefined,
  /** Hands an upgrade on before the app sees it (a standby controller relays it to the leader); true when it did. */
  relay?: (req: IncomingMessage, socket: Duplex, head: Buffer) => Promise<boolean>,
): void {
  let wss: WebSocketServer | undefined;
  listening.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    void (async () => {
      socket.on('error', () => {});
      if (relay && (await relay(req, socket, head))) return;
      const url = new URL(req.url ?? '/', 'http://tunnel');
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers))
        if (v !== undefined && k !== 'upgrade' && k !== 'connection') headers.set(k, Array.isArray(v) ? v.join(', ') : v);
      const answer = await app.fetch(new Request(url, { method: 'GET', headers }), { incoming: req });
      if (answer.status !== 200) return refuseUpgrade(socket, answer.status, await answer.text());
      let far: Duplex;
      try {
        const opening = open(url.pathname);
        if (!opening) return refuseUpgrade(socket, 404, JSON.stringify({ error: { code: 'not-found', message: `no tunnel at ${url.pathname}` } }));
        far = await opening;
      } catch (e) {
        const err = toFerryError(e);
        return refuseUpgrade(socket, err.httpStatus, JSON.stringify({ error: err.toJSON() }));
      }
      const { WebSocketServer, createWebSocketStream } = await loadWs();
      wss ??= new WebSocketServer({ noServer: true });
      wss.handleUpgrade(req, socket, head, (ws) => {
        const near = createWebSocketStream(ws);
        const end = () => {
          near.destroy();
          far.destroy();
        };
        for (const side of [near, far]) {
          side.on('error', end);
          side.on('close', end);
        }
        near.pipe(far);
        far.pipe(near);
      });
    })().catch(() => socket.destroy());
  });
}

/** ws is loaded when a tunnel is first used: the CLI never needs it. */
export function loadWs(): Promise<typeof import('ws')> {
  // ws's ES module wrapper has named exports; its default export is the WebSocket class alone.
  return import('ws');
}

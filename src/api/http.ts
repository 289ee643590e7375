/**
 * A small JSON-over-HTTP layer shared by the controller, the agents and the
 * switch: a router whose `handle()` is a plain function from request to
 * response (tests call it without a socket), a server around it, and a
 * client that turns error answers back into FerryErrors.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCode, FerryError, type FerryErrorJson, errors, toFerryError } from '../domain/errors.js';

export interface ApiRequest {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: unknown;
}

export interface ApiResponse {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

export type Handler = (req: ApiRequest) => Promise<unknown> | unknown;
/** A route that takes over the raw connection (server-sent events, console streams). */
export type RawHandler = (req: http.IncomingMessage, res: http.ServerResponse, params: Record<string, string>) => void;

interface Route {
  method: string;
  path: string;
  pattern: RegExp;
  keys: string[];
  handler?: Handler;
  raw?: RawHandler;
}

function compile(path: string): { pattern: RegExp; keys: string[] } {
  const keys: string[] = [];
  const source = path.replace(/:([a-zA-Z]+)/g, (_, key: string) => {
    keys.push(key);
    return '([^/]+)';
  });
  return { pattern: new RegExp(`^${source}$`), keys };
}

export class Router {
  private readonly routes: Route[] = [];
  /** Checked before every route; throws to refuse (authentication). */
  guard: ((req: ApiRequest) => void) | undefined;

  on(method: string, path: string, handler: Handler): this {
    this.routes.push({ method, path, ...compile(path), handler });
    return this;
  }

  /** Every route, as registered (for the OpenAPI description and its test). */
  list(): { method: string; path: string }[] {
    return this.routes.map((r) => ({ method: r.method, path: r.path }));
  }

  raw(method: string, path: string, handler: RawHandler): this {
    this.routes.push({ method, path, ...compile(path), raw: handler });
    return this;
  }

  match(method: string, path: string): { route: Route; params: Record<string, string> } | undefined {
    for (const route of this.routes) {
      if (route.method !== method) continue;
      const m = route.pattern.exec(path);
      if (!m) continue;
      const params: Record<string, string> = {};
      route.keys.forEach((k, i) => (params[k] = decodeURIComponent(m[i + 1]!)));
      return { route, params };
    }
    return undefined;
  }

  async handle(method: string, url: string, body: unknown, headers: http.IncomingHttpHeaders = {}): Promise<ApiResponse> {
    const parsed = new URL(url, 'http://ferry.invalid');
    const found = this.match(method, parsed.pathname);
    if (!found || !found.route.handler) {
      return errorResponse(new FerryError(ErrorCode.Usage, `no such endpoint: ${method} ${parsed.pathname}`), 404);
    }
    const req: ApiRequest = { method, path: parsed.pathname, params: found.params, query: parsed.searchParams, headers, body };
    try {
      this.guard?.(req);
      const result = await found.route.handler(req);
      return { status: 200, body: result ?? {} };
    } catch (e) {
      return errorResponse(toFerryError(e));
    }
  }
}

function errorResponse(err: FerryError, status = err.httpStatus): ApiResponse {
  return { status, body: { error: err.toJSON() } };
}

export interface Listening {
  server: http.Server;
  port: number;
  url: string;
  close(): Promise<void>;
}

export async function serve(router: Router, host = '127.0.0.1', port = 0): Promise<Listening> {
  const server = http.createServer((req, res) => void dispatch(router, req, res));
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    server,
    port: actual,
    url: `http://${host}:${actual}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function dispatch(router: Router, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = req.url ?? '/';
  const found = router.match(req.method ?? 'GET', new URL(url, 'http://x').pathname);
  if (found?.route.raw) {
    try {
      router.guard?.({
        method: req.method ?? 'GET', path: url, params: found.params,
        query: new URL(url, 'http://x').searchParams, headers: req.headers, body: undefined,
      });
    } catch (e) {
      const err = toFerryError(e);
      res.writeHead(err.httpStatus, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: err.toJSON() }));
      return;
    }
    found.route.raw(req, res, found.params);
    return;
  }
  let body: unknown;
  try {
    body = await readJson(req);
  } catch {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'invalid-argument', message: 'request body is not valid JSON' } }));
    return;
  }
  const out = await router.handle(req.method ?? 'GET', url, body, req.headers);
  res.writeHead(out.status, { 'content-type': 'application/json', ...out.headers });
  res.end(JSON.stringify(out.body));
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  if (chunks.length === 0) return undefined;
  const text = Buffer.concat(chunks).toString('utf8');
  return text.trim() ? JSON.parse(text) : undefined;
}

export interface CallOptions {
  token?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Calls a Ferry JSON endpoint; an error answer becomes the FerryError it describes. */
export async function callJson<T>(base: string, method: string, path: string, body?: unknown, options: CallOptions = {}): Promise<T> {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 30_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let res: Response;
  try {
    res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (e) {
    if (options.signal?.aborted) throw errors.aborted(`${method} ${path}`);
    if (timeout.aborted) throw errors.timeout(`${method} ${base}${path}`, options.timeoutMs ?? 30_000);
    throw new FerryError(ErrorCode.AgentUnreachable, `cannot reach ${base}: ${(e as Error).message}`, { cause: e, details: { url: base } });
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    throw errors.internal(`${method} ${path}: answer is not JSON (HTTP ${res.status})`);
  }
  if (!res.ok) {
    const err = (json as { error?: FerryErrorJson }).error;
    if (err) throw FerryError.fromJSON(err);
    throw errors.internal(`${method} ${path}: HTTP ${res.status}`);
  }
  return json as T;
}

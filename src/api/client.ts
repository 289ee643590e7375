/**
 * The typed client of Ferry's HTTP APIs (controller, agent, switch): a call
 * names a route definition and gets its response typed by the route's
 * schema. The CLI, the console, the bench, the tests and the daemons
 * themselves all call through it. `fetch` is injectable, so component and
 * API tests call an app in-process without a socket.
 *
 * An error answer becomes the FerryError it describes; no answer becomes
 * `agent-unreachable` ("cannot reach URL: …"); a timeout names the call
 * ("POST http://…/api/v1/replica-in/db/sync timed out after 5000 ms").
 */
import type { z } from '@hono/zod-openapi';
import { ErrorCode, FerryError, type FerryErrorJson, errors } from '../domain/errors.js';

export type Fetch = (input: string, init: RequestInit) => Promise<Response>;

/** What every route definition looks like to the client (a subset of @hono/zod-openapi's RouteConfig). */
export interface RouteDef {
  method: string;
  path: string;
  request?: {
    params?: z.ZodType;
    query?: z.ZodType;
    body?: { content: Record<string, { schema: z.ZodType }> };
  };
  responses: Record<string | number, { content?: Record<string, { schema: z.ZodType }> }>;
}

type JsonSchema<C> = C extends { content: { 'application/json': { schema: infer S } } } ? S : never;
type ParamsOf<R> = R extends { request: { params: infer P extends z.ZodType } } ? z.input<P> : undefined;
type QueryOf<R> = R extends { request: { query: infer Q extends z.ZodType } } ? z.input<Q> : undefined;
type BodyOf<R> = R extends { request: { body: infer B } } ? (JsonSchema<B> extends z.ZodType ? z.input<JsonSchema<B>> : undefined) : undefined;

/** The response body of a route's 200 answer. */
export type Output<R> = R extends { responses: { 200: infer Res } } ? (JsonSchema<Res> extends z.ZodType ? z.output<JsonSchema<Res>> : string) : unknown;

/** What a call passes: the route's path parameters, query and body. */
export type Input<R> = (ParamsOf<R> extends undefined ? { params?: undefined } : { params: ParamsOf<R> }) &
  (QueryOf<R> extends undefined ? { query?: undefined } : { query?: QueryOf<R> }) &
  (BodyOf<R> extends undefined ? { body?: undefined } : { body?: BodyOf<R> });

export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

export interface ClientOptions {
  /** Where the API is; a function for a daemon that may come back at another address (asked at every call). */
  baseUrl: string | (() => string);
  token?: string;
  /** A fetch of its own (an app's in-process `request`, a TLS agent later). */
  fetch?: Fetch;
  timeoutMs?: number;
}

export function pathOf(route: RouteDef, params: Record<string, unknown> | undefined, query?: Record<string, unknown>): string {
  const p = route.path.replace(/\{(\w+)\}/g, (_, k: string) => {
    const v = params?.[k];
    if (v === undefined) throw errors.internal(`${route.method} ${route.path}: missing path parameter ${k}`);
    return encodeURIComponent(String(v));
  });
  const q = Object.entries(query ?? {}).filter(([, v]) => v !== undefined);
  return q.length ? `${p}?${new URLSearchParams(q.map(([k, v]) => [k, String(v)])).toString()}` : p;
}

export class ApiClient {
  private readonly fetcher: Fetch;

  constructor(readonly opts: ClientOptions) {
    this.fetcher = opts.fetch ?? ((input, init) => fetch(input, init));
  }

  get baseUrl(): string {
    return typeof this.opts.baseUrl === 'function' ? this.opts.baseUrl() : this.opts.baseUrl;
  }

  /** Calls a route and returns its JSON answer, typed by the route's response schema. */
  async call<R extends RouteDef>(route: R, input: Input<R>, options: CallOptions = {}): Promise<Output<R>> {
    const res = await this.send(route, input as { params?: Record<string, unknown>; query?: Record<string, unknown>; body?: unknown }, options);
    const text = await res.text();
    return parseAnswer(res, text, route) as Output<R>;
  }

  /** Calls a route and hands back the raw response (streams: a console, server-sent events). */
  async open<R extends RouteDef>(route: R, input: Input<R>, options: CallOptions = {}): Promise<Response> {
    const res = await this.send(route, input as { params?: Record<string, unknown>; query?: Record<string, unknown>; body?: unknown }, {
      ...options,
      timeoutMs: options.timeoutMs ?? 0,
    });
    if (!res.ok) parseAnswer(res, await res.text(), route);
    return res;
  }

  private async send(
    route: RouteDef,
    input: { params?: Record<string, unknown>; query?: Record<string, unknown>; body?: unknown },
    options: CallOptions,
  ): Promise<Response> {
    const method = route.method.toUpperCase();
    const path = pathOf(route, input.params, input.query);
    const base = this.baseUrl;
    const url = base + path;
    const timeoutMs = options.timeoutMs ?? this.opts.timeoutMs ?? 30_000;
    const timeout = timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined;
    const signals = [options.signal, timeout].filter((s): s is AbortSignal => s !== undefined);
    const signal = signals.length ? AbortSignal.any(signals) : undefined;
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    const hasBody = input.body !== undefined || (route.request?.body !== undefined && method !== 'GET');
    if (hasBody) headers['content-type'] = 'application/json';
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    try {
      return await this.fetcher(url, { method, headers, ...(hasBody ? { body: JSON.stringify(input.body ?? {}) } : {}), ...(signal ? { signal } : {}) });
    } catch (e) {
      if (options.signal?.aborted) throw errors.aborted(`${method} ${path}`);
      if (timeout?.aborted) throw errors.timeout(`${method} ${url}`, timeoutMs);
      // Refused or no route: nobody listens there. Anything else: the connection broke while the request was under way.
      const code = ((e as { cause?: { code?: string } }).cause?.code ?? (e as { code?: string }).code) || '';
      const neverReached = ['ECONNREFUSED', 'ENOENT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND'].includes(code);
      if (!neverReached)
        throw new FerryError(ErrorCode.AgentUnreachable, `lost ${base} during ${method} ${path}: ${(e as Error).message}${code ? ` (${code})` : ''}`, {
          cause: e,
          details: { url: base, duringRequest: true },
        });
      throw new FerryError(ErrorCode.AgentUnreachable, `cannot reach ${base}: ${(e as Error).message}`, {
        cause: e,
        details: { url: base },
      });
    }
  }
}

function parseAnswer(res: Response, text: string, route: RouteDef): unknown {
  const json = res.headers.get('content-type')?.includes('json');
  let body: unknown = text;
  if (json || !res.ok) {
    try {
      body = text ? JSON.parse(text) : {};
    } catch {
      throw errors.internal(`${route.method.toUpperCase()} ${route.path}: answer is not JSON (HTTP ${res.status})`);
    }
  }
  if (!res.ok) {
    const err = (body as { error?: FerryErrorJson }).error;
    if (err) throw FerryError.fromJSON(err);
    throw errors.internal(`${route.method.toUpperCase()} ${route.path}: HTTP ${res.status}`);
  }
  return body;
}

/** Server-sent events from a response: calls `onEvent` with each event's id and parsed data until the stream ends. */
export async function readEvents(res: Response, onEvent: (id: string | undefined, data: unknown) => void): Promise<void> {
  if (!res.body) return;
  let buf = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const lines = block.split('\n');
      const data = lines.find((l) => l.startsWith('data: '));
      const id = lines.find((l) => l.startsWith('id: '))?.slice(4);
      if (data) onEvent(id, JSON.parse(data.slice(6)));
    }
  }
}

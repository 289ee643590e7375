/**
 * The browser side of the controller's API: a login page that takes the
 * cluster token and keeps a session in an HttpOnly cookie, CSRF protection
 * for changes made with that cookie (double submit: a readable cookie the
 * page echoes in `x-csrf-token`), the dashboard's static files, server-sent
 * events and the Prometheus metrics.
 *
 * Scripts keep using `Authorization: Bearer TOKEN`; either is accepted.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { errors } from '../domain/errors.js';
import { projectRoot } from '../config/paths.js';
import type { ApiRequest } from './http.js';

const SESSION_COOKIE = 'ferry_session';
const CSRF_COOKIE = 'ferry_csrf';
const SESSION_TTL_MS = 12 * 3600_000;

interface Session {
  csrf: string;
  expiresAtMs: number;
}

export function cookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = decodeURIComponent(part.slice(i + 1).trim());
  }
  return out;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Paths anyone may fetch: the login page and the dashboard's static files. */
function isPublic(p: string): boolean {
  // `/` itself sends a visitor without a session to the login page.
  return p === '/' || p === '/login' || p.startsWith('/login?') || p.startsWith('/ui/');
}

export class Sessions {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly token: string) {}

  login(token: string): { sid: string; csrf: string } | undefined {
    if (!sameSecret(token.trim(), this.token)) return undefined;
    const sid = randomBytes(24).toString('hex');
    const csrf = randomBytes(24).toString('hex');
    this.sessions.set(sid, { csrf, expiresAtMs: Date.now() + SESSION_TTL_MS });
    return { sid, csrf };
  }

  logout(sid: string | undefined): void {
    if (sid) this.sessions.delete(sid);
  }

  session(headers: http.IncomingHttpHeaders): Session | undefined {
    const sid = cookies(headers.cookie)[SESSION_COOKIE];
    const s = sid ? this.sessions.get(sid) : undefined;
    if (!s || s.expiresAtMs < Date.now()) return undefined;
    return s;
  }

  /** The controller's guard: a bearer token, or a session cookie (plus the CSRF header on changes). */
  guard(req: ApiRequest): void {
    if (isPublic(req.path)) return;
    const auth = req.headers.authorization;
    if (auth && sameSecret(auth, `Bearer ${this.token}`)) return;
    const s = this.session(req.headers);
    if (!s) throw errors.unauthorized();
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const sent = req.headers['x-csrf-token'];
      if (typeof sent !== 'string' || !sameSecret(sent, s.csrf)) throw errors.invalid('csrf', 'missing or wrong CSRF token (x-csrf-token)');
    }
  }

  cookiesFor(login: { sid: string; csrf: string }): string[] {
    const max = Math.floor(SESSION_TTL_MS / 1000);
    return [
      `${SESSION_COOKIE}=${login.sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${max}`,
      `${CSRF_COOKIE}=${login.csrf}; SameSite=Strict; Path=/; Max-Age=${max}`,
    ];
  }
}

const ASSETS = () => path.join(projectRoot(), 'src', 'dashboard');
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };

export function sendAsset(res: http.ServerResponse, name: string): void {
  const file = path.join(ASSETS(), path.basename(name));
  if (!fs.existsSync(file)) {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
    return;
  }
  res.writeHead(200, {
    'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
    'x-content-type-options': 'nosniff',
  });
  res.end(fs.readFileSync(file));
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** POST /login: the token from a form (or JSON); on success the session cookies and a redirect to the dashboard. */
export async function handleLogin(sessions: Sessions, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const text = await readBody(req);
  const token = (req.headers['content-type'] ?? '').includes('json')
    ? String((JSON.parse(text || '{}') as { token?: string }).token ?? '')
    : new URLSearchParams(text).get('token') ?? '';
  const login = sessions.login(token);
  if (!login) {
    res.writeHead(303, { location: '/login?error=1' });
    res.end();
    return;
  }
  res.writeHead(303, { location: '/', 'set-cookie': sessions.cookiesFor(login) });
  res.end();
}

/** A server-sent-events stream: `send` writes one event; the caller stops when `closed` fires. */
export function openEventStream(req: http.IncomingMessage, res: http.ServerResponse): { send(id: string, data: unknown): void; onClose(fn: () => void): void } {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
  res.write('retry: 1000\n\n');
  const ping = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
  const closers: (() => void)[] = [() => clearInterval(ping)];
  req.on('close', () => closers.forEach((f) => f()));
  return {
    send(id, data) {
      res.write(`id: ${id}\nevent: ferry\ndata: ${JSON.stringify(data)}\n\n`);
    },
    onClose(fn) {
      closers.push(fn);
    },
  };
}

/**
 * The browser side of the controller: a login page that takes the cluster
 * token and keeps a session in an HttpOnly cookie, CSRF protection for
 * changes made with that cookie (double submit: a readable cookie the page
 * echoes in `x-csrf-token`), and the console's static files. Scripts keep
 * using `Authorization: Bearer TOKEN`; either is accepted.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { getCookie, setCookie, deleteCookie } from 'hono/cookie';
import type { Clock } from '../../domain/clock.js';
import { errors } from '../../domain/errors.js';
import { errorResponse } from '../http.js';

const SESSION_COOKIE = 'ferry_session';
const CSRF_COOKIE = 'ferry_csrf';
const SESSION_TTL_MS = 12 * 3600_000;

interface Session {
  csrf: string;
  expiresAtMs: number;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class Sessions {
  private readonly sessions = new Map<string, Session>();

  constructor(
    private readonly token: string,
    private readonly clock: Clock,
  ) {}

  login(token: string): { sid: string; csrf: string } | undefined {
    if (!sameSecret(token.trim(), this.token)) return undefined;
    const sid = randomBytes(24).toString('hex');
    const csrf = randomBytes(24).toString('hex');
    this.sessions.set(sid, { csrf, expiresAtMs: this.clock.nowMs() + SESSION_TTL_MS });
    return { sid, csrf };
  }

  logout(sid: string | undefined): void {
    if (sid) this.sessions.delete(sid);
  }

  session(sid: string | undefined): Session | undefined {
    const s = sid ? this.sessions.get(sid) : undefined;
    if (!s || s.expiresAtMs < this.clock.nowMs()) return undefined;
    return s;
  }

  /**
   * Authentication before anything else is read: a bearer token, or a
   * session cookie (plus the CSRF header on changes).
   */
  guard(): MiddlewareHandler {
    return async (c, next) => {
      const auth = c.req.header('authorization');
      if (auth && sameSecret(auth, `Bearer ${this.token}`)) return next();
      const s = this.session(getCookie(c, SESSION_COOKIE));
      if (!s) return errorResponse(c, errors.unauthorized());
      if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
        const sent = c.req.header('x-csrf-token');
        if (typeof sent !== 'string' || !sameSecret(sent, s.csrf))
          return errorResponse(c, errors.invalid('csrf', 'missing or wrong CSRF token (x-csrf-token)'));
      }
      return next();
    };
  }

  /** Whether the request carries a live session (the console's own pages). */
  hasSession(cookie: string | undefined): boolean {
    return this.session(cookie) !== undefined;
  }

  setCookies(c: Parameters<MiddlewareHandler>[0], login: { sid: string; csrf: string }): void {
    const maxAge = Math.floor(SESSION_TTL_MS / 1000);
    setCookie(c, SESSION_COOKIE, login.sid, { httpOnly: true, sameSite: 'Strict', path: '/', maxAge });
    setCookie(c, CSRF_COOKIE, login.csrf, { sameSite: 'Strict', path: '/', maxAge });
  }
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.map': 'application/json',
};

/** The console: its pages and static files, and the login that sets the session. */
export function mountWeb(app: OpenAPIHono, sessions: Sessions, assetDirs: string[]): void {
  const asset = (name: string): Response => {
    const base = path.basename(name);
    const file = assetDirs.map((d) => path.join(d, base)).find((f) => fs.existsSync(f));
    if (!file) return new Response('not found', { status: 404, headers: { 'content-type': 'text/plain' } });
    return new Response(fs.readFileSync(file), {
      status: 200,
      headers: {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
        'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
        'x-content-type-options': 'nosniff',
      },
    });
  };
  app.get('/', (c) => (sessions.hasSession(getCookie(c, SESSION_COOKIE)) ? asset('index.html') : c.redirect('/login', 303)));
  app.get('/login', () => asset('login.html'));
  app.get('/display', (c) => (sessions.hasSession(getCookie(c, SESSION_COOKIE)) ? asset('display.html') : c.redirect('/login', 303)));
  app.get('/ui/:file', (c) => asset(c.req.param('file')));
  app.post('/login', async (c) => {
    const type = c.req.header('content-type') ?? '';
    let token: string;
    try {
      token = type.includes('json') ? String(((await c.req.json()) as { token?: unknown }).token ?? '') : String((await c.req.parseBody()).token ?? '');
    } catch {
      return c.body(null, 400);
    }
    const login = sessions.login(token);
    if (!login) return c.redirect('/login?error=1', 303);
    sessions.setCookies(c, login);
    return c.redirect('/', 303);
  });
  app.post('/logout', (c) => {
    sessions.logout(getCookie(c, SESSION_COOKIE));
    deleteCookie(c, SESSION_COOKIE, { path: '/' });
    return c.redirect('/login', 303);
  });
}

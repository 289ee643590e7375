/**
 * The console's API client: Ferry's typed client over the browser's fetch,
 * with the session cookie, the CSRF token on changes, and a signed-out
 * session sent back to the login page.
 */
import { ApiClient } from '../api/client.js';

const csrf = (): string => decodeURIComponent(/(?:^|; )ferry_csrf=([^;]*)/.exec(document.cookie)?.[1] ?? '');

async function consoleFetch(input: string, init: RequestInit): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set('accept', headers.get('accept') ?? 'application/json');
  if ((init.method ?? 'GET') !== 'GET') headers.set('x-csrf-token', csrf());
  const res = await fetch(input, { ...init, headers, credentials: 'same-origin' });
  if (res.status === 401) location.href = '/login';
  return res;
}

export const api = new ApiClient({ baseUrl: '', fetch: consoleFetch, timeoutMs: 30_000 });

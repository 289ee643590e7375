/**
 * A standby controller answers the API by forwarding to the leader: real
 * sockets, a stand-in leader app. Requests, bodies, answers and a console's
 * WebSocket pass through unchanged; a request forwarded once is not
 * forwarded again (two controllers that each think the other leads do not
 * bounce it); no leader, or a leader that does not answer, is a one-line
 * `not-leader` error the CLI tries again.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { FORWARDED_HEADER, forwardToLeader, relayUpgrade } from '../../src/api/forward.js';
import { createApp, serve, serveTunnels, type Listening } from '../../src/api/http.js';

const GREETING = 'RFB 003.008\n';

describe('a standby forwarding to the leader', () => {
  let leader: Listening;
  let leaderUrl: string | undefined;
  const standbys: Listening[] = [];
  const seen: { path: string; forwardedBy: string | null; auth: string | null }[] = [];
  const screens: net.Socket[] = [];
  let vnc: net.Server;
  let endStream: () => void = () => {};

  /** A standby named `by` that forwards to whatever `to()` says leads. */
  async function standby(by: string, to: () => string | undefined): Promise<Listening> {
    let self = '';
    const front = { fetch: forwardToLeader({ by, self: () => self, leader: async () => to(), fetch }) };
    const l = await serve(front);
    self = l.url;
    serveTunnels(
      l,
      front,
      () => undefined,
      async (req, socket, head) => {
        relayUpgrade(req, socket, head, { by, leader: to(), self });
        return true;
      },
    );
    standbys.push(l);
    return l;
  }

  before(async () => {
    const app = createApp();
    app.use('*', async (c, next) => {
      seen.push({ path: c.req.path, forwardedBy: c.req.header(FORWARDED_HEADER) ?? null, auth: c.req.header('authorization') ?? null });
      await next();
    });
    app.get('/api/v1/echo', (c) => c.json({ query: c.req.query('q'), leader: true }));
    app.post('/api/v1/echo', async (c) => c.json({ bytes: (await c.req.text()).length }, 201));
    app.get('/api/v1/missing', (c) => c.json({ error: { code: 'vm-not-found', message: "no VM named 'x'" } }, 404));
    app.get('/api/v1/vms/:name/display', (c) => c.json({ vm: c.req.param('name') }));
    // Server-sent events (ferry events --follow): the first one is sent, the stream ends only when the test says.
    app.get('/api/v1/events', () => {
      const body = new ReadableStream<Uint8Array>({
        start(ctl) {
          ctl.enqueue(new TextEncoder().encode('data: {"type":"first"}\n\n'));
          endStream = () => ctl.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    });
    leader = await serve(app);
    // A stand-in for QEMU's VNC socket: it speaks first, so the greeting must reach the browser through both hops.
    vnc = net.createServer((conn) => {
      screens.push(conn);
      conn.on('error', () => {});
      conn.write(GREETING);
    });
    await new Promise<void>((resolve) => vnc.listen(0, '127.0.0.1', resolve));
    serveTunnels(
      leader,
      app,
      () =>
        new Promise((resolve, reject) => {
          const conn = net.connect((vnc.address() as net.AddressInfo).port, '127.0.0.1');
          screens.push(conn);
          conn.once('connect', () => resolve(conn));
          conn.once('error', reject);
        }),
    );
    leaderUrl = leader.url;
  });

  after(async () => {
    for (const s of screens) s.destroy();
    for (const s of standbys) await s.close();
    await leader?.close();
    await new Promise<void>((resolve) => (vnc ? vnc.close(() => resolve()) : resolve()));
  });

  it('answers with what the leader answers: query, headers, status and body pass through; the leader sees who forwarded', async () => {
    const s = await standby('host-2', () => leaderUrl);
    const r = await fetch(`${s.url}/api/v1/echo?q=hello`, { headers: { authorization: 'Bearer t0ken' } });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { query: 'hello', leader: true });
    assert.deepEqual(seen.at(-1), { path: '/api/v1/echo', forwardedBy: 'host-2', auth: 'Bearer t0ken' });
    const body = 'x'.repeat(300_000);
    const posted = await fetch(`${s.url}/api/v1/echo`, { method: 'POST', body, headers: { 'content-type': 'text/plain' } });
    assert.equal(posted.status, 201);
    assert.deepEqual(await posted.json(), { bytes: body.length });
    const missing = await fetch(`${s.url}/api/v1/missing`);
    assert.equal(missing.status, 404);
    assert.deepEqual(await missing.json(), { error: { code: 'vm-not-found', message: "no VM named 'x'" } });
  });

  it('streams an answer as it comes (server-sent events): the first event arrives while the stream is open', async () => {
    const s = await standby('host-2', () => leaderUrl);
    const r = await fetch(`${s.url}/api/v1/events`, { headers: { accept: 'text/event-stream' } });
    assert.equal(r.headers.get('content-type'), 'text/event-stream');
    const reader = r.body!.getReader();
    const first = await reader.read();
    assert.equal(new TextDecoder().decode(first.value), 'data: {"type":"first"}\n\n');
    endStream();
    assert.equal((await reader.read()).done, true);
  });

  it('forwards once: two standbys that each name the other as leader refuse instead of bouncing the request', async () => {
    // Each names the other, which exists only once both listen.
    const at: { a?: Listening; b?: Listening } = {};
    const a = (at.a = await standby('host-a', () => at.b?.url));
    at.b = await standby('host-b', () => at.a?.url);
    const before = seen.length;
    const r = await fetch(`${a.url}/api/v1/echo`);
    assert.equal(r.status, 503);
    const { error } = (await r.json()) as { error: { code: string; message: string; details: Record<string, unknown> } };
    assert.equal(error.code, 'not-leader');
    assert.equal(error.details.standby, true);
    assert.match(error.message, /^host-b does not lead and will not forward a request host-a already forwarded/);
    assert.equal(seen.length, before, 'the leader never saw it');
  });

  it('says no leader answers yet, in one line the CLI tries again, while none is known or the leader is down', async () => {
    let to: string | undefined;
    const s = await standby('host-2', () => to);
    const none = await fetch(`${s.url}/api/v1/echo`);
    assert.equal(none.status, 503);
    const e1 = ((await none.json()) as { error: { code: string; message: string; details: Record<string, unknown> } }).error;
    assert.deepEqual([e1.code, e1.details.standby], ['not-leader', true]);
    assert.match(e1.message, /^host-2 does not lead and no leader answers yet/);
    // A leader key naming this standby itself is not followed.
    to = s.url;
    assert.equal((await fetch(`${s.url}/api/v1/echo`)).status, 503);
    // A leader that died: its port refuses.
    const dead = await serve(createApp());
    to = dead.url;
    await dead.close();
    const down = await fetch(`${s.url}/api/v1/echo`);
    assert.equal(down.status, 503);
    const e2 = ((await down.json()) as { error: { message: string } }).error;
    assert.ok(e2.message.startsWith(`host-2 does not lead and the leader at ${dead.url} does not answer (`), e2.message);
    assert.ok(!e2.message.includes('\n'));
  });

  it('drops a request the leader holds once another leads or none does (a frozen leader), a read as one the CLI tries again', async () => {
    // A frozen leader: the kernel takes its connections, nothing ever answers on them.
    const held: net.Socket[] = [];
    const frozen = net.createServer((conn) => void held.push(conn.on('error', () => {})));
    await new Promise<void>((resolve) => frozen.listen(0, '127.0.0.1', resolve));
    const frozenUrl = `http://127.0.0.1:${(frozen.address() as net.AddressInfo).port}`;
    try {
      let to: string | undefined = frozenUrl;
      const s = await standby('host-2', () => to);
      const ask = async (method: 'GET' | 'POST', next: string | undefined) => {
        to = frozenUrl;
        const startMs = Date.now();
        const answer = fetch(`${s.url}/api/v1/echo`, { method, ...(method === 'POST' ? { body: '{}' } : {}) });
        await new Promise((r) => setTimeout(r, 1200));
        to = next; // the frozen leader's lease ran out: another leads, or none yet
        const changedMs = Date.now();
        const r = await answer;
        const { error } = (await r.json()) as { error: { code: string; message: string; details: Record<string, unknown> } };
        return { status: r.status, error, waitedMs: Date.now() - startMs, afterChangeMs: Date.now() - changedMs };
      };
      const get = await ask('GET', undefined);
      assert.deepEqual([get.status, get.error.code, get.error.details.standby], [503, 'not-leader', true]);
      assert.equal(
        get.error.message,
        `host-2 does not lead and the leader at ${frozenUrl} stopped leading while it had the request (none leads yet); try again`,
      );
      assert.ok(get.waitedMs >= 1200, `it waited for the leader while the key named it (${get.waitedMs} ms)`);
      assert.ok(get.afterChangeMs < 5000, `it gave up soon after the key changed (${get.afterChangeMs} ms)`);
      const post = await ask('POST', leaderUrl);
      assert.deepEqual([post.status, post.error.details.standby], [503, false], 'a change is not asked again blindly');
      assert.equal(
        post.error.message,
        `host-2 does not lead and the leader at ${frozenUrl} stopped leading while it had the request (${leaderUrl} leads now); it may have been done: look before trying again`,
      );
    } finally {
      for (const conn of held) conn.destroy();
      await new Promise<void>((resolve) => frozen.close(() => resolve()));
    }
  });

  it("relays a console's WebSocket to the leader: the screen's first bytes arrive", async () => {
    const s = await standby('host-2', () => leaderUrl);
    const ws = new WebSocket(`${s.url.replace('http', 'ws')}/api/v1/vms/web/display`);
    const first = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no greeting within 3 s')), 3000);
      ws.once('message', (m: Buffer) => {
        clearTimeout(timer);
        resolve(m.toString());
      });
      ws.once('error', reject);
    });
    ws.close();
    assert.equal(first, GREETING);
    assert.equal(seen.at(-1)?.forwardedBy, 'host-2');
  });

  it('refuses a WebSocket while no leader is known, with the same one-line error', async () => {
    const s = await standby('host-2', () => undefined);
    const ws = new WebSocket(`${s.url.replace('http', 'ws')}/api/v1/vms/web/display`);
    const status = await new Promise<number>((resolve) => {
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.once('error', () => resolve(-1));
    });
    assert.equal(status, 503);
  });
});

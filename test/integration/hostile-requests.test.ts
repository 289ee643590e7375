/**
 * Every daemon (controller, agent, switch) against requests an attacker or a
 * careless script would send, over real sockets: malformed paths, strange
 * methods, bodies far too large or not JSON, strings where numbers belong,
 * unknown and prototype keys. Each gets a 4xx with one line, the token is
 * checked before anything is read, and the daemon keeps running with its
 * memory where it was.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';

interface Answer {
  status: number;
  body: string;
}

/**
 * One request with the path exactly as given (no URL normalisation). A body
 * is a string, or `announce` bytes of which `send` (default all) are streamed.
 * A server that answers early and closes the connection under the writer
 * (as it should for a body it will not read) gives status 0 when the answer
 * was lost in the close.
 */
function send(
  base: string,
  method: string,
  rawPath: string,
  opts: { token?: string; body?: string | Buffer; announce?: number; send?: number; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...(opts.headers ?? {}) };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const length = opts.announce ?? (opts.body === undefined ? undefined : Buffer.byteLength(opts.body));
    if (length !== undefined) {
      headers['content-length'] = length;
      headers['content-type'] ??= 'application/json';
    }
    let answered = false;
    const req = http.request({ host: u.hostname, port: u.port, method, path: rawPath, headers, agent: false }, (res) => {
      answered = true;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (['EPIPE', 'ECONNRESET'].includes(e.code ?? '')) {
        if (!answered) resolve({ status: 0, body: e.code! });
      } else reject(e);
    });
    if (opts.announce === undefined) return void req.end(opts.body);
    const chunk = Buffer.alloc(1 << 20, 0x61);
    let left = opts.send ?? opts.announce;
    req.on('response', () => (left = 0));
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void req.once('drain', pump);
      }
      // Everything announced was sent: end the request; otherwise wait for the answer with the body unfinished.
      if ((opts.send ?? opts.announce) === opts.announce) req.end();
    };
    pump();
  });
}

function rssMiB(pid: number): number {
  const line = fs
    .readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'))!;
  return Number(/(\d+)/.exec(line)![1]) / 1024;
}

/** A one-line Ferry error: `{"error":{"code":…,"message":…}}` whose message has no line break. */
function oneLine(a: Answer): string {
  const err = (JSON.parse(a.body) as { error?: { code: string; message: string } }).error;
  assert.ok(err, `an error body, got: ${a.body.slice(0, 200)}`);
  assert.ok(!err.message.includes('\n'), `one line: ${err.message}`);
  return err.message;
}

describe('hostile requests against every daemon', () => {
  let c: TestCluster;
  let daemons: { name: string; url: string; pid: number; probe: string }[];

  before(async () => {
    c = await TestCluster.start({ nodes: 2 });
    const endpoint = (n: string) => readEndpoint(c.layout, n)!;
    daemons = [
      { name: 'controller', url: endpoint('controller').url, pid: endpoint('controller').pid, probe: '/api/v1/vms' },
      { name: 'agent', url: endpoint('node-1').url, pid: endpoint('node-1').pid, probe: '/v1/vms' },
      { name: 'switch', url: endpoint('switch').url, pid: endpoint('switch').pid, probe: '/v1/switches' },
    ];
  });
  after(async () => {
    await c?.stop();
  });

  async function stillServing(): Promise<void> {
    for (const d of daemons) {
      assert.doesNotThrow(() => process.kill(d.pid, 0), `${d.name} is alive`);
      const r = await send(d.url, 'GET', d.probe, { token: c.token });
      assert.equal(r.status, 200, `${d.name} still answers: ${r.body.slice(0, 200)}`);
    }
  }

  it('answers malformed paths, methods and headers with a 4xx line, with and without the token', async () => {
    const paths: Record<string, string[]> = {
      controller: ['/api/v1/vms/%ZZ', '/api/v1/vms/%', '/api/v1/migrations/%E0%A4%A', '/api/v1/vms/..%2f..%2fetc', '/api/v1/vms/a%00b'],
      agent: ['/v1/vms/%ZZ', '/v1/vms/%', '/v1/vms/%E0%A4%A/config', '/v1/vms/..%2f..'],
      switch: ['/v1/switches/%ZZ', '/v1/switches/%', '/v1/switches/%E0%A4%A/bindings'],
    };
    for (const d of daemons) {
      for (const p of paths[d.name]!) {
        for (const method of ['GET', 'DELETE', 'POST']) {
          const anonymous = await send(d.url, method, p, method === 'POST' ? { body: '{}' } : {});
          assert.equal(anonymous.status, 401, `${d.name} ${method} ${p} without a token: ${anonymous.body}`);
          const withToken = await send(d.url, method, p, { token: c.token, ...(method === 'POST' ? { body: '{}' } : {}) });
          assert.ok(withToken.status >= 400 && withToken.status < 500, `${d.name} ${method} ${p}: ${withToken.status} ${withToken.body}`);
          oneLine(withToken);
        }
      }
      const brew = await send(d.url, 'BREW', d.probe, { token: c.token });
      assert.ok(brew.status >= 400 && brew.status < 500, `${d.name} BREW: ${brew.status}`);
      const badAuth = await send(d.url, 'GET', d.probe, { headers: { authorization: 'Bearer \u00ff'.repeat(200) } });
      assert.equal(badAuth.status, 401);
    }
    await stillServing();
  });

  it('reads no body before the token and refuses one past 1 MiB, memory staying where it was', async () => {
    const targets: Record<string, [string, string]> = { controller: ['POST', '/api/v1/vms'], agent: ['POST', '/v1/vms'], switch: ['PUT', '/v1/switches/x'] };
    for (const d of daemons) {
      const [method, target] = targets[d.name]!;
      // The answer comes before the body: a 300 MiB announcement, 64 KiB of it sent, answered.
      const anonymous = await send(d.url, method, target, { announce: 300 << 20, send: 64 << 10 });
      assert.equal(anonymous.status, 401, `${d.name}: ${anonymous.body.slice(0, 200)}`);
      const big = await send(d.url, method, target, { token: c.token, announce: 20 << 20, send: 64 << 10 });
      assert.equal(big.status, 413, `${d.name}: ${big.body.slice(0, 200)}`);
      assert.equal(oneLine(big), 'the request body is larger than 1 MiB');
      // Eight clients at once pushing 64 MiB each without a token: answered or cut off, never read into memory.
      const before = rssMiB(d.pid);
      const answers = await Promise.all(Array.from({ length: 8 }, () => send(d.url, method, target, { announce: 64 << 20 })));
      for (const a of answers) assert.ok(a.status === 401 || a.status === 0, `${d.name}: ${a.status} ${a.body.slice(0, 200)}`);
      const pushed = await Promise.all(Array.from({ length: 4 }, () => send(d.url, method, target, { token: c.token, announce: 64 << 20 })));
      for (const a of pushed) assert.ok(a.status === 413 || a.status === 0, `${d.name}: ${a.status} ${a.body.slice(0, 200)}`);
      const grown = rssMiB(d.pid) - before;
      assert.ok(grown < 48, `${d.name} grew by ${grown.toFixed(0)} MiB`);
    }
    assert.deepEqual(await c.ferryJson<unknown[]>(['vm', 'list']), [], 'nothing created');
    await stillServing();
  });

  it('takes no unknown fields, coerces nothing, and never echoes more than an excerpt', async () => {
    const controller = daemons[0]!.url;
    const post = (p: string, body: unknown) => send(controller, 'POST', p, { token: c.token, body: JSON.stringify(body) });
    const unknown = await post('/api/v1/vms', { name: 'x', pad: 'a'.repeat(1000) });
    assert.equal(unknown.status, 400);
    assert.match(oneLine(unknown), /pad/);
    const stringNumber = await post('/api/v1/vms', { name: 'x', memoryMiB: '128' });
    assert.equal(stringNumber.status, 400);
    assert.equal(oneLine(stringNumber), "memory (MiB) must be a whole number from 64 to 65536, got '128' (a string)");
    for (const policy of [{ downtimeMs: '30' }, { escalation: 'postcopy' }, { bandwidthMiBps: [1] }]) {
      const r = await send(controller, 'PUT', '/api/v1/cluster/policy', { token: c.token, body: JSON.stringify(policy) });
      assert.equal(r.status, 400, JSON.stringify(policy));
      oneLine(r);
    }
    const huge = await post('/api/v1/vms', { name: 'x', workload: 'w'.repeat(900_000) });
    assert.equal(huge.status, 400);
    const m = oneLine(huge);
    assert.ok(huge.body.length < 600, `the error is ${huge.body.length} bytes: ${huge.body.slice(0, 300)}`);
    assert.match(m, /workload/);
    const notJson = await send(controller, 'POST', '/api/v1/vms', { token: c.token, body: '{"name": "x",' });
    assert.equal(notJson.status, 400);
    assert.match(oneLine(notJson), /JSON/);
    assert.deepEqual(await c.ferryJson<unknown[]>(['vm', 'list']), [], 'nothing created');
  });

  it('takes only known settings and policy keys, and drops unknown stored ones with a warning at start', async () => {
    for (const [name, value] of [
      ['constructor', '1'],
      ['toString', 'x'],
      ['__proto__', '1'],
      ['hasOwnProperty', '1'],
    ]) {
      const r = await c.ferry(['cluster', 'set', name!, value!]);
      assert.equal(r.code, 2, `${name}: ${r.stdout}${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /^error: unknown cluster setting/);
      assert.match(r.stderr, /migrationsPerNode/, 'names the known ones');
    }
    const file = path.join(c.dir, 'proto-policy.json');
    for (const text of ['{"__proto__": {"downtimeMs": 5}}', '{"constructor": 1}', '{"downtimeMs": 30', '[1]']) {
      fs.writeFileSync(file, text);
      const r = await c.ferry(['cluster', 'policy', '--policy', file]);
      assert.equal(r.code, 2, `${text}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /^error: /);
    }
    // A key from an older Ferry (or a hand edit) in the stored settings: dropped at the controller's start, with a warning.
    await c.ferryOk(['cluster', 'set', 'migrationsPerNode', '2']);
    const controller = readEndpoint(c.layout, 'controller')!;
    process.kill(controller.pid, 'SIGKILL');
    await waitFor('the controller to go', 10_000, () => {
      try {
        process.kill(controller.pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    const { SqliteStore } = await import('../../src/store/sqlite-store.js');
    const { systemClock } = await import('../../src/domain/clock.js');
    const store = new SqliteStore(c.layout.store, systemClock);
    const stored = (await store.get<Record<string, unknown>>('cluster/settings'))!.value;
    await store.put('cluster/settings', { ...stored, constructor: 1, retiredSetting: true });
    await store.put('cluster/policy', { downtimeMs: 40, oldKnob: 3 });
    await store.close();
    await c.ferryOk(['up']);
    // The restarted controller is the one the remaining checks talk to.
    const restarted = readEndpoint(c.layout, 'controller')!;
    daemons[0] = { ...daemons[0]!, url: restarted.url, pid: restarted.pid };
    const settings = await c.ferryJson<Record<string, unknown>>(['cluster', 'show']);
    assert.equal((settings.settings as Record<string, unknown>).migrationsPerNode, 2, 'known settings kept');
    assert.ok(!Object.hasOwn(settings.settings as object, 'retiredSetting'));
    const policy = await c.ferryJson<{ overrides: Record<string, unknown> }>(['cluster', 'policy']);
    assert.deepEqual(policy.overrides, { downtimeMs: 40 });
    const log = await c.ferryOk(['logs', 'controller']);
    assert.match(log, /dropped unknown stored setting 'retiredSetting'/);
    assert.match(log, /dropped unknown stored setting 'constructor'/);
    assert.match(log, /dropped unknown stored policy key 'oldKnob'/);
  });

  it('answers a heartbeat from a stranger with what is wrong with it', async () => {
    const controller = daemons[0]!.url;
    const cfg = JSON.parse(fs.readFileSync(c.layout.cluster, 'utf8')) as { id: string };
    const node = (await c.ferryJson<{ name: string; capabilities: unknown; migrationAddress: string }[]>(['node', 'list']))[0]!;
    const hb = {
      name: 'ghost',
      url: 'http://127.0.0.1:1',
      clusterId: cfg.id,
      migrationAddress: node.migrationAddress,
      capabilities: node.capabilities,
      vms: [],
    };
    const r = await send(controller, 'POST', '/api/v1/agents/heartbeat', { token: c.token, body: JSON.stringify(hb) });
    assert.ok(r.status >= 400 && r.status < 500);
    assert.equal(oneLine(r), "heartbeat from node 'ghost', which is not a member of this cluster");
    const other = await send(controller, 'POST', '/api/v1/agents/heartbeat', {
      token: c.token,
      body: JSON.stringify({ ...hb, name: 'node-1', clusterId: 'c-other' }),
    });
    assert.equal(oneLine(other), "heartbeat from node 'node-1' of another cluster (c-other)");
    await stillServing();
  });
});

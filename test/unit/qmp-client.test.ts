import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { isFerryError } from '../../src/domain/errors.js';
import { QmpClient, QmpError } from '../../src/qemu/qmp/client.js';

/**
 * A strict scripted QMP server: it answers only the commands the test
 * scripted, in order, and fails the test on anything else.
 */
class FakeQemu {
  readonly server: net.Server;
  readonly path: string;
  sock: net.Socket | undefined;
  readonly received: string[] = [];
  private script: ((msg: { execute: string; id?: string; arguments?: unknown }, sock: net.Socket) => void)[] = [];
  unexpected: string[] = [];

  constructor(dir: string, greeting = true) {
    this.path = path.join(dir, 'qmp.sock');
    this.server = net.createServer((sock) => {
      this.sock = sock;
      if (greeting) sock.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'test' }, capabilities: [] } }) + '\n');
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString();
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          const msg = JSON.parse(line) as { execute: string; id?: string };
          this.received.push(msg.execute);
          const step = this.script.shift();
          if (!step) this.unexpected.push(msg.execute);
          else step(msg, sock);
        }
      });
    });
  }

  expect(command: string, answer: (msg: { id?: string; arguments?: unknown }) => unknown): this {
    this.script.push((msg, sock) => {
      if (msg.execute !== command) {
        this.unexpected.push(msg.execute);
        return;
      }
      const out = answer(msg);
      if (out !== undefined) sock.write(JSON.stringify(out) + '\n');
    });
    return this;
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.path, () => r()));
  }

  close(): void {
    this.sock?.destroy();
    this.server.close();
  }
}

describe('QMP client', () => {
  let dir: string;
  let fake: FakeQemu | undefined;
  let client: QmpClient | undefined;
  const setup = async (greeting = true) => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-qmp-'));
    fake = new FakeQemu(dir, greeting);
    await fake.listen();
    return fake;
  };
  afterEach(() => {
    client?.close();
    fake?.close();
    fs.rmSync(dir, { recursive: true, force: true });
    client = undefined;
  });

  it('reads the greeting, negotiates capabilities and runs typed commands', async () => {
    const f = await setup();
    f.expect('qmp_capabilities', (m) => ({ return: {}, id: m.id })).expect('query-status', (m) => ({ return: { running: true, status: 'running' }, id: m.id }));
    client = await QmpClient.connect(f.path);
    assert.equal(client.greeting?.version.qemu.major, 7);
    const status = await client.execute('query-status', {});
    assert.equal(status.status, 'running');
    assert.deepEqual(f.received, ['qmp_capabilities', 'query-status']);
    assert.deepEqual(f.unexpected, []);
  });

  it('turns a QEMU error answer into a typed QmpError with its class', async () => {
    const f = await setup();
    f.expect('qmp_capabilities', (m) => ({ return: {}, id: m.id })).expect('migrate', (m) => ({
      error: { class: 'GenericError', desc: 'Failed to connect' },
      id: m.id,
    }));
    client = await QmpClient.connect(f.path);
    await assert.rejects(client.execute('migrate', { uri: 'tcp:127.0.0.1:1' }), (e: unknown) => {
      assert.ok(e instanceof QmpError);
      assert.equal(e.code, 'qmp-error');
      assert.equal(e.errorClass, 'GenericError');
      assert.match(e.message, /Failed to connect/);
      return true;
    });
  });

  it('matches answers to commands by id when they arrive out of order', async () => {
    const f = await setup();
    let first: string | undefined;
    f.expect('qmp_capabilities', (m) => ({ return: {}, id: m.id }))
      .expect('query-status', (m) => {
        first = m.id;
        return undefined;
      })
      .expect('query-migrate', (m) => {
        f.sock!.write(JSON.stringify({ return: { status: 'active' }, id: m.id }) + '\n');
        return { return: { running: false, status: 'paused' }, id: first };
      });
    client = await QmpClient.connect(f.path);
    const [status, mig] = await Promise.all([client.execute('query-status', {}), client.execute('query-migrate', {})]);
    assert.equal(status.status, 'paused');
    assert.equal(mig.status, 'active');
  });

  it('delivers events and waits for a matching one', async () => {
    const f = await setup();
    f.expect('qmp_capabilities', (m) => ({ return: {}, id: m.id }));
    client = await QmpClient.connect(f.path);
    const waiting = client.waitForEvent('MIGRATION', { match: (e) => e.data?.status === 'completed', timeoutMs: 2000 });
    const ts = { seconds: 1, microseconds: 0 };
    f.sock!.write(JSON.stringify({ event: 'MIGRATION', data: { status: 'active' }, timestamp: ts }) + '\n');
    f.sock!.write(JSON.stringify({ event: 'MIGRATION', data: { status: 'completed' }, timestamp: ts }) + '\n');
    const e = await waiting;
    assert.equal(e.data?.status, 'completed');
  });

  it('times out a command QEMU never answers', async () => {
    const f = await setup();
    f.expect('qmp_capabilities', (m) => ({ return: {}, id: m.id })).expect('query-status', () => undefined);
    client = await QmpClient.connect(f.path);
    await assert.rejects(client.execute('query-status', {}, { timeoutMs: 100 }), (e: unknown) => isFerryError(e, 'timeout'));
  });

  it('aborts a command when its AbortSignal fires', async () => {
    const f = await setup();
    f.expect('qmp_capabilities', (m) => ({ return: {}, id: m.id })).expect('query-status', () => undefined);
    client = await QmpClient.connect(f.path);
    const ac = new AbortController();
    const p = client.execute('query-status', {}, { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, (e: unknown) => isFerryError(e, 'aborted'));
  });

  it('fails pending commands and event waits with qemu-died when QEMU goes away', async () => {
    const f = await setup();
    f.expect('qmp_capabilities', (m) => ({ return: {}, id: m.id })).expect('query-migrate', () => {
      setTimeout(() => f.sock!.destroy(), 10);
      return undefined;
    });
    client = await QmpClient.connect(f.path);
    const event = client.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
    await assert.rejects(client.execute('query-migrate', {}), (e: unknown) => isFerryError(e, 'qemu-died'));
    await assert.rejects(event, (e: unknown) => isFerryError(e, 'qemu-died'));
    await assert.rejects(client.execute('query-status', {}), (e: unknown) => isFerryError(e, 'qemu-died'));
  });

  it('gives up when no greeting arrives', async () => {
    const f = await setup(false);
    await assert.rejects(QmpClient.connect(f.path, { timeoutMs: 150 }), (e: unknown) => isFerryError(e, 'timeout'));
  });
});

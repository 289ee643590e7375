/**
 * `ferry init` on this machine's loopback (the lab does it in namespaces):
 * bad input is one line and leaves the state directory empty; a controller
 * that cannot start takes everything `init` made with it; a cluster made
 * twice is refused; `ferry down` leaves nothing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort, processesMentioning, runFerry, socketsUnder } from '../helpers/cluster.js';

const ferry = runFerry;

describe('ferry init', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-init-'));
  const state = path.join(root, 'state');
  const shared = path.join(root, 'shared');
  const loopback = ['--network', 'management=127.0.0.0/8', '--address', 'management=127.0.0.1'];
  before(() => fs.mkdirSync(shared));
  after(async () => {
    await ferry(state, ['down', '--force']);
    for (const p of processesMentioning(root)) process.kill(Number(p.split(':')[0]), 'SIGKILL');
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('refuses bad input with one line and makes nothing', async () => {
    for (const [args, line, code] of [
      [['--shared', '/nonexistent/ferry'], "error: /nonexistent/ferry is not a directory (mount the cluster's shared volume there first)\n", 2],
      [['--shared', 'relative'], "error: --shared relative: the shared volume's mount point must be an absolute path\n", 2],
      [['--shared', shared, '--network', 'bogus'], 'error: --network bogus: expected NAME=CIDR[:ROLE], e.g. migration=10.0.2.0/24:migration\n', 2],
      [
        ['--shared', shared, '--network', 'management=10.254.254.0/24'],
        'error: this host has no address in network management (10.254.254.0/24); give one with --address management=ADDRESS\n',
        2,
      ],
      [['--shared', shared, ...loopback, '--network', 'management=10.1.0.0/24'], 'error: --network management is given twice\n', 2],
    ] as const) {
      const r = await ferry(state, ['init', ...args]);
      assert.deepEqual([r.code, r.stderr], [code, line], args.join(' '));
      assert.equal(fs.existsSync(state), false, `${args.join(' ')}: nothing made`);
    }
  });

  it('takes back everything it made when the controller cannot start', async () => {
    const taken = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => taken.once('listening', r));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const r = await ferry(state, ['init', '--name', 'solo', '--shared', shared, ...loopback, '--port', String(port)]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^error: controller did not start: .*EADDRINUSE.* \(see \S+controller\.log\)\n$/);
      assert.deepEqual(fs.readdirSync(state), ['logs'], 'only the logs stay, for reading what went wrong');
      assert.deepEqual(processesMentioning(root), [], 'no daemon left running');
    } finally {
      taken.close();
    }
  });

  it('makes a cluster once; its CLI speaks HTTPS to it; up starts its daemons again; down leaves nothing', async () => {
    const port = await freePort();
    const r = await ferry(state, ['init', '--name', 'solo', '--shared', shared, ...loopback, '--port', String(port)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^controller: https://127\\.0\\.0\\.1:${port} \\(CA fingerprint sha256 [0-9a-f]{64}\\)$`, 'm'));
    assert.match((await ferry(state, ['status'])).stdout, /^nodes: 1\/1 up/m);
    assert.match((await ferry(state, ['token', 'join'])).stdout, /^join\.[0-9a-f]{16}\.[0-9a-f]{48}\.[0-9a-f]{64}\n$/);
    const again = await ferry(state, ['init', '--name', 'solo', '--shared', shared, ...loopback]);
    assert.deepEqual([again.code, again.stderr], [2, `error: ${state} belongs to a cluster already (${state}/host.json); use another --state\n`]);
    // After `ferry down` (or a reboot without systemd), `ferry up` starts this host's own daemons again.
    assert.equal((await ferry(state, ['down'])).code, 0);
    const up = await ferry(state, ['up']);
    assert.deepEqual([up.code, up.stdout], [0, 'solo: started switch, controller, solo\n'], up.stderr);
    assert.match((await ferry(state, ['status'])).stdout, /^nodes: 1\/1 up/m);
    const d = await ferry(state, ['down']);
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(processesMentioning(root), []);
    assert.deepEqual(socketsUnder(root), []);
  });
});

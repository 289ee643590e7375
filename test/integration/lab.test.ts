/**
 * The lab (root): hosts as network namespaces with eth0 on a LAN bridge and
 * eth1 on a migration bridge, links shaped by tc, a client namespace, and
 * etcd members inside the hosts. `ferry lab down` leaves no namespace, link,
 * process or file behind (nor the cluster `lab up` made in the state
 * directory, its daemons running in the hosts).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Lab, labEtcdStatus } from '../../src/lab/lab.js';
import { projectRoot } from '../../src/config/paths.js';
import { EtcdStore } from '../../src/store/etcd-store.js';
import { pidAlive } from '../../src/system/process.js';
import { processesMentioning } from '../helpers/cluster.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function ferry(state: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(projectRoot(), 'dist/src/cli/main.js'), '--state', state, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

const linksNamed = (part: string) => fs.readdirSync('/sys/class/net').filter((n) => n.includes(part));
const namespacesNamed = (part: string) => (fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns').filter((n) => n.includes(part)) : []);

describe('the lab', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lab-'));
  let lab: Lab;
  before(async () => {
    const r = await ferry(state, ['lab', 'up', '--hosts', '3', '--link-mbit', '200', '--etcd', '3', '--json']);
    assert.equal(r.code, 0, r.stderr);
    lab = JSON.parse(r.stdout) as Lab;
  });
  after(async () => {
    await ferry(state, ['lab', 'down']);
    fs.rmSync(state, { recursive: true, force: true });
  });

  const inside = (host: string, cmd: string[]) =>
    ferry(state, ['lab', host === 'client' ? 'client' : 'exec', ...(host === 'client' ? [] : [host]), '--', ...cmd]);

  it('wires each host to the LAN and the migration network, and the client to the LAN', async () => {
    assert.deepEqual(
      lab.hosts.map((h) => h.name),
      ['host-1', 'host-2', 'host-3'],
    );
    assert.deepEqual(namespacesNamed(`fl-${lab.id}-`).sort(), [...lab.hosts.map((h) => h.netns), lab.client.netns].sort());
    const addr = await inside('host-2', ['ip', '-4', '-o', 'addr', 'show']);
    // The LAN address lives on vmbr0, the host bridge VMs' taps join; eth0 is its port.
    assert.match(addr.stdout, new RegExp(`vmbr0\\s+inet ${lab.hosts[1]!.lan.replaceAll('.', '\\.')}/24`));
    assert.match((await inside('host-2', ['ip', '-o', 'link', 'show', 'eth0'])).stdout, / master vmbr0 /);
    assert.match(addr.stdout, new RegExp(`eth1\\s+inet ${lab.hosts[1]!.migration.replaceAll('.', '\\.')}/24`));
    // Host to host on the migration network, the client to a host on the LAN, every 2 ms.
    const mig = await inside('host-1', ['ping', '-c', '3', '-i', '0.002', '-W', '1', lab.hosts[2]!.migration]);
    assert.equal(mig.code, 0, mig.stdout + mig.stderr);
    const lan = await inside('client', ['ping', '-c', '50', '-i', '0.002', '-W', '1', lab.hosts[1]!.lan]);
    assert.match(lan.stdout, / 50 received, 0% packet loss/);
    // The client is on the LAN only: the migration network is not reachable from it.
    assert.notEqual((await inside('client', ['ping', '-c', '1', '-W', '1', lab.hosts[0]!.migration])).code, 0);
    // Links shaped both ways.
    for (const dev of ['eth0', 'eth1']) assert.match((await inside('host-3', ['tc', 'class', 'show', 'dev', dev])).stdout, /htb 1:10 .*rate 200Mbit/);
    const port = lab.hosts[2]!.lanPort;
    assert.match(
      (await ferry(state, ['lab', 'show'])).stdout,
      new RegExp(`^host-3 +${lab.hosts[2]!.netns} +${lab.hosts[2]!.lan.replaceAll('.', '\\.')} `, 'm'),
    );
    assert.ok(fs.existsSync(`/sys/class/net/${port}/master`), 'the host port hangs on the LAN bridge');
  });

  it('runs three etcd members in the hosts; the cluster keeps working with a follower killed', async () => {
    assert.equal(lab.etcd.length, 3);
    const status = await labEtcdStatus(lab);
    assert.deepEqual(
      status.map((s) => s.answers),
      [true, true, true],
    );
    assert.equal(status.filter((s) => s.leads).length, 1, 'one leader');
    // (A leader killed means an election first: that and what Ferry does meanwhile belong to failover.)
    const follower = lab.etcd.find((m) => !status.find((s) => s.name === m.name)!.leads)!;
    assert.match((await ferry(state, ['lab', 'show'])).stdout, new RegExp(`${follower.name} \\(follower\\)`));
    const store = new EtcdStore({ endpoints: lab.etcd.map((m) => m.clientUrl) });
    try {
      await store.put('lab/check', 1);
      process.kill(follower.pid!, 'SIGKILL');
      await store.put('lab/check', 2);
      assert.equal((await store.get('lab/check'))?.value, 2);
    } finally {
      await store.close();
    }
  });

  it('refuses bad input with one line and changes nothing', async () => {
    const again = await ferry(state, ['lab', 'up', '--hosts', '2']);
    assert.equal(again.code, 2, 'a refusal (conflict) is exit 2');
    assert.equal(again.stderr, `error: a lab is up already in ${state} (3 hosts, id ${lab.id}); 'ferry lab down' first\n`);
    const unknown = await inside('host-9', ['true']);
    assert.equal(unknown.code, 2);
    assert.equal(unknown.stderr, "error: the lab has no host 'host-9' (it has host-1, host-2, host-3 and client)\n");
    assert.equal((await inside('host-1', ['sh', '-c', 'exit 7'])).code, 7, 'the command’s own exit code');
    const namespacesBefore = namespacesNamed('fl-').sort();
    const other = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lab-bad-'));
    try {
      for (const [args, line] of [
        [['--hosts', '0'], 'error: --hosts must be from 1 to 16, got 0\n'],
        [['--hosts', '2', '--etcd', '3'], 'error: --etcd 3 needs at least 3 hosts, got 2\n'],
        [['--hosts', '2', '--etcd', '2'], 'error: --etcd must be 1 or 3, got 2\n'],
      ] as const) {
        const r = await ferry(other, ['lab', 'up', ...args]);
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stderr, line);
      }
      assert.deepEqual(fs.readdirSync(other), [], 'nothing made');
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
    assert.deepEqual(namespacesNamed('fl-').sort(), namespacesBefore, 'no other lab was made');
  });

  it('goes down leaving no namespace, link, process or file', async () => {
    const pids = lab.etcd.map((m) => m.pid!);
    const r = await ferry(state, ['lab', 'down']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `lab ${lab.id} down\n`);
    assert.deepEqual(namespacesNamed(`fl-${lab.id}-`), []);
    assert.deepEqual(linksNamed(`fl${lab.id}`), []);
    assert.deepEqual(
      pids.filter((p) => pidAlive(p)),
      [],
    );
    assert.deepEqual(fs.readdirSync(state), [], 'the lab and the cluster it made are gone from the state directory');
    assert.deepEqual(processesMentioning(state), [], 'no daemon, QEMU or etcd left');
    assert.equal((await ferry(state, ['lab', 'down'])).stdout, `no lab in ${state}\n`);
  });
});

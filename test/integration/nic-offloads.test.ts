/**
 * NIC offloads (R10) with real QEMU. Nodes with a `tap` backend give VMs a
 * tap with the virtio-net header (so QEMU offers checksum and segmentation
 * offloads); `stream` nodes cannot. What each node offers and what a guest
 * negotiated both come from QEMU (x-query-virtio-status). A VM moves only to
 * a node whose backend offers what its guest uses; the target QEMU gets the
 * same offload settings; a refusal names the offloads.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { MigrationReport } from '../../src/domain/migration.js';
import type { NodeRecord } from '../../src/domain/records.js';
import { OFFLOADS } from '../../src/domain/nic.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { vmRoutes } from '../../src/api/routes/vms.js';

describe('NIC offloads', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 3, nicBackends: ['tap', 'tap', 'stream'], nodeMemoryMiB: 1024 });
  });
  after(async () => {
    await c?.stop();
  });

  const nicDevice = async (vm: string, node: string) => {
    const inst = (await c.agent(node).list()).find((i) => i.name === vm)!;
    return fs
      .readFileSync(`/proc/${inst.pid}/cmdline`, 'utf8')
      .split('\0')
      .find((a) => a.startsWith('virtio-net-pci'))!;
  };
  const view = (vm: string) => c.api.call(vmRoutes.show, { params: { name: vm } });
  const answers = async (vm: string) => waitFor(`${vm} to answer through the switch`, 20_000, async () => (await c.ferry(['vm', 'ping', vm])).code === 0);

  it("reports what each node's backend lets a NIC offer, from QEMU", async () => {
    const nodes = await c.ferryJson<NodeRecord[]>(['node', 'list']);
    const nic = (n: string) => nodes.find((x) => x.name === n)!.capabilities!.nic!;
    assert.equal(nic('node-1').backend, 'tap');
    assert.equal(nic('node-1').vnetHeader, true);
    for (const o of ['csum', 'guest_csum', 'host_tso4', 'guest_tso4']) assert.ok(nic('node-1').offloads.includes(o), o);
    assert.deepEqual(nic('node-3'), { backend: 'stream', offloads: ['gso'], vnetHeader: false });
  });

  it('runs a tap-backed VM on the shared switch with the offloads its guest negotiated', async () => {
    await c.createAndStart('full', { node: 'node-1', memoryMiB: 128 });
    await answers('full');
    const v = await view('full');
    assert.equal(v.nic?.backend, 'tap');
    for (const o of ['csum', 'guest_csum', 'host_tso4', 'guest_tso4']) assert.ok(v.nic!.negotiated.includes(o), `guest negotiated ${o}`);
    assert.ok((await nicDevice('full', 'node-1')).endsWith(OFFLOADS.map((o) => `${o}=on`).join(',')));
  });

  it('refuses a target whose backend cannot offer the offloads the guest uses, naming them', async () => {
    const used = (await view('full')).nic!.negotiated.filter((o) => o !== 'gso');
    const r = await c.ferry(['vm', 'migrate', 'full', '--to', 'node-3', '--check', '--json']);
    assert.equal(r.code, 1);
    assert.deepEqual((JSON.parse(r.stdout) as { blockers: string[] }).blockers, [
      `node 'node-3' (NIC backend stream) cannot offer NIC offloads the VM uses: ${used.join(', ')} and has no virtio-net header, which the VM's NIC runs with on 'node-1' (tap)`,
    ]);
    const refused = await c.ferry(['vm', 'migrate', 'full', '--to', 'node-3']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /cannot offer NIC offloads the VM uses: csum, guest_csum/);
    assert.equal((await c.vm('full')).node, 'node-1');
  });

  it('moves it to a node that offers them, where QEMU gets the same offload settings', async () => {
    const before = await nicDevice('full', 'node-1');
    const negotiated = (await view('full')).nic!.negotiated;
    const r = await c.ferry(['vm', 'migrate', 'full', '--to', 'node-2', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as MigrationReport).status, 'completed');
    assert.equal(await nicDevice('full', 'node-2'), before);
    assert.deepEqual((await view('full')).nic!.negotiated, negotiated, 'the guest keeps its offloads');
    await answers('full');
  });

  it('keeps the offloads a VM asks for as its configuration, and refuses unknown ones', async () => {
    const bad = await c.ferry(['vm', 'create', 'x', '--offloads', 'csum,tso']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr.trim(), /^error: unknown NIC offload tso \(known: csum, guest_csum, gso,/);
    assert.equal(
      (await c.api.call(vmRoutes.list, {})).some((v) => v.name === 'x'),
      false,
    );
    assert.equal((await c.ferry(['vm', 'create', 'few', '--node', 'node-1', '--memory', '128', '--offloads', 'csum,gso'])).code, 0);
    assert.equal((await c.ferry(['vm', 'start', 'few'])).code, 0);
    await waitFor('few to boot', 60_000, () => c.console('few').ticks.length > 0);
    assert.match(await nicDevice('few', 'node-1'), /,csum=on,guest_csum=off,gso=on,host_tso4=off,/);
    await waitFor('the guest driver to negotiate', 10_000, async () => (await view('few')).nic!.negotiated.includes('csum'));
    assert.ok((await view('few')).nic!.negotiated.every((o) => ['csum', 'gso'].includes(o)));
  });

  it('lets a stream VM onto a tap node, but not back: its NIC then runs with the header', async () => {
    await c.createAndStart('plain', { node: 'node-3', memoryMiB: 128 });
    assert.deepEqual((await view('plain')).nic!.negotiated, []);
    const up = await c.ferry(['vm', 'migrate', 'plain', '--to', 'node-1']);
    assert.equal(up.code, 0, up.stderr);
    await answers('plain');
    const back = await c.ferry(['vm', 'migrate', 'plain', '--to', 'node-3']);
    assert.equal(back.code, 2);
    assert.equal(back.stderr.trim(), "error: node 'node-3' (NIC backend stream) has no virtio-net header, which the VM's NIC runs with on 'node-1' (tap)");
  });
});

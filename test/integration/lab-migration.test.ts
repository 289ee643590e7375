/**
 * A Ferry cluster in the lab (root): three hosts as network namespaces, the
 * store in etcd inside host-1, the controller on host-1's LAN address, an
 * agent in every host. VMs move host to host over the migration network
 * (eth1), with real QEMU; each move ends with the VM's QEMU in the target
 * host's namespace and nothing in the source's.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { MigrationReport } from '../../src/domain/migration.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';

describe('a cluster in the lab', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.lab(['--hosts', '3', '--link-mbit', '1000']);
  });
  after(async () => {
    await c?.stop();
  });

  /** The lab namespaces the VM's QEMU processes run in. */
  const whereQemuRuns = async (vm: string): Promise<string[]> => {
    const all = await c.instances(['host-1', 'host-2', 'host-3']);
    const pids = [...all.values()].flat().flatMap((i) => (i.name === vm && i.pid ? [i.pid] : []));
    return pids.map((p) => TestCluster.netnsOf(p));
  };
  const host = (name: string) => c.labbed!.hosts.find((h) => h.name === name)!;

  it('runs its daemons in the hosts: nodes on their own addresses, the store in etcd', async () => {
    const nodes = await c.ferryJson<{ name: string; state: string; url: string; migrationAddress: string }[]>(['node', 'list']);
    assert.deepEqual(
      nodes.map((n) => [n.name, n.state, n.migrationAddress]),
      ['host-1', 'host-2', 'host-3'].map((h) => [h, 'up', host(h).migration]),
    );
    for (const n of nodes) assert.equal(new URL(n.url).hostname, host(n.name).lan, `${n.name}'s agent listens on its LAN address`);
    const status = await c.ferryOk(['status']);
    assert.match(status, new RegExp(`^store: etcd at ${c.labbed!.etcd[0]!.clientUrl}$`, 'm'));
  });

  it('live-migrates a VM host to host and back over the migration network, keeping a TCP stream whole', async () => {
    await c.createAndStart('web', { node: 'host-1', workload: 'tcp', memoryMiB: 128 });
    await c.createAndStart('cli', { node: 'host-3', workload: 'tcp-client:web', memoryMiB: 128 });
    assert.deepEqual(await whereQemuRuns('web'), [host('host-1').netns]);
    await waitFor('the stream to flow', 30_000, () => (c.console('cli').tcpClient?.received ?? 0) > 200);
    for (const [from, to] of [
      ['host-1', 'host-2'],
      ['host-2', 'host-1'],
    ] as const) {
      const before = c.console('cli').tcpClient!;
      const report = await c.ferryJson<MigrationReport>(['vm', 'migrate', 'web', '--to', to]);
      assert.equal(report.status, 'completed', JSON.stringify(report));
      assert.equal(report.from, from);
      assert.equal(report.to, to);
      assert.deepEqual(report.network && [report.network.name, report.network.sourceAddress, report.network.targetAddress], [
        'migration',
        host(from).migration,
        host(to).migration,
      ]);
      assert.deepEqual(await whereQemuRuns('web'), [host(to).netns], `web's QEMU runs in ${to} only`);
      const after = await waitFor('the stream to continue', 30_000, () => {
        const t = c.console('cli').tcpClient;
        return t && t.received > before.received + 200 ? t : undefined;
      });
      assert.equal(after.gaps, 0, `no gap: ${c.console('cli').tcpGaps.join('; ')}`);
      assert.equal(after.reconnects, 0, 'the same connection');
    }
  });

  it('quick-migrates and drains across lab hosts', async () => {
    const quick = await c.ferryJson<MigrationReport>(['vm', 'migrate', 'web', '--to', 'host-3', '--quick']);
    assert.equal(quick.status, 'completed', JSON.stringify(quick));
    assert.deepEqual(await whereQemuRuns('web'), [host('host-3').netns]);
    // host-3 holds web and cli now; a drain moves both off it, live.
    await c.ferryOk(['node', 'maintenance', 'host-3']);
    await waitFor('host-3 to be empty', 120_000, async () => (await c.instances(['host-3'])).get('host-3')!.length === 0);
    for (const vm of ['web', 'cli']) {
      const where = await whereQemuRuns(vm);
      assert.equal(where.length, 1);
      assert.ok([host('host-1').netns, host('host-2').netns].includes(where[0]!), `${vm} runs on host-1 or host-2`);
    }
    const t = c.console('cli').tcpClient!;
    await waitFor('the stream after the drain', 30_000, () => (c.console('cli').tcpClient?.received ?? 0) > t.received + 100);
    await c.ferryOk(['node', 'resume', 'host-3']);
  });
});

/**
 * Cluster networks (R6) with real QEMU: each node has a distinct loopback
 * address per network; a live migration crosses the best-ranked migration
 * network both nodes reach each other on, falls back when it is cut (an
 * unreachable route to one node's address, removed afterwards), never uses a
 * network whose role is `none`, and the report names the network used.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { NetworkView } from '../../src/controller/network/networks.js';
import type { MigrationReport } from '../../src/domain/migration.js';
import type { NodeRecord } from '../../src/domain/records.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';

describe('cluster networks', () => {
  let c: TestCluster;
  const cut: string[] = [];
  const cutAddress = (address: string) => {
    execFileSync('ip', ['route', 'add', 'unreachable', `${address}/32`, 'table', 'local']);
    cut.push(address);
  };
  before(async () => {
    c = await TestCluster.start({ nodes: 2, nodeMemoryMiB: 1024 });
    await c.createAndStart('a', { node: 'node-1', memoryMiB: 128, workload: 'memory:8' });
  });
  after(async () => {
    for (const address of cut) {
      try {
        execFileSync('ip', ['route', 'del', 'unreachable', `${address}/32`, 'table', 'local']);
      } catch {
        /* already gone */
      }
    }
    await c?.stop();
  });

  const nets = () => c.ferryJson<NetworkView[]>(['net', 'list']);
  const addressOf = async (network: string, node: string) => (await nets()).find((n) => n.name === network)!.addresses[node]!;

  it('lists each network with its role, metric, subnet and a distinct address per node, all reachable', async () => {
    const list = await nets();
    assert.deepEqual(
      list.map((n) => [n.name, n.role, n.metric]),
      [
        ['migration', 'migration', 100],
        ['storage', 'storage', 500],
        ['management', 'management', 1000],
      ],
    );
    const all = list.flatMap((n) => Object.values(n.addresses));
    assert.equal(new Set(all).size, 6, 'three networks × two nodes, six addresses');
    for (const n of list) {
      assert.equal(n.state, 'up');
      for (const [node, address] of Object.entries(n.addresses)) assert.ok(address.startsWith(n.subnet.replace(/0\/24$/, '')), `${node} on ${n.name}`);
    }
    const nodes = await c.ferryJson<NodeRecord[]>(['node', 'list']);
    assert.equal(new URL(nodes[0]!.url).hostname, await addressOf('management', 'node-1'), "the agent's API is on the management network");
    const human = await c.ferryOk(['net', 'list']);
    assert.match(human, /^NAME +ROLE +METRIC +SUBNET +STATE +NODES\nmigration +migration +100 /);
    // The local nodes' addresses are loopback ones: the kernel's interface for them is lo (speed unknown).
    await waitFor('the nodes to report their links', 15_000, async () => (await nets()).every((n) => n.nodes.every((x) => x.link)));
    assert.match(await c.ferryOk(['net', 'list']), /^migration +node-1 +lo +127\.\S+ +unknown +- +65536$/m);
  });

  it('migrates over the migration network and names it in the report', async () => {
    const r = await c.ferry(['vm', 'migrate', 'a', '--to', 'node-2', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.equal(report.status, 'completed');
    assert.deepEqual(report.network, {
      name: 'migration',
      sourceAddress: await addressOf('migration', 'node-1'),
      targetAddress: await addressOf('migration', 'node-2'),
      skipped: [],
    });
    const record = await c.api.call(migrationRoutes.show, { params: { id: report.id } });
    assert.equal(record.target?.address, await addressOf('migration', 'node-2'), 'the target QEMU listened on its migration-network address');
  });

  it('falls back to the next network when the preferred one is cut, and says why', async () => {
    const lost = await addressOf('migration', 'node-1');
    cutAddress(lost);
    const list = await nets();
    const migration = list.find((n) => n.name === 'migration')!;
    assert.equal(migration.state, 'partial');
    assert.deepEqual(
      migration.nodes.find((n) => n.node === 'node-1'),
      // Unreachable, though its interface is up: the route is gone, not the link.
      { node: 'node-1', address: lost, state: 'down', error: 'EHOSTUNREACH', link: { iface: 'lo', operState: 'unknown', mtu: 65536 } },
    );
    const r = await c.ferry(['vm', 'migrate', 'a', '--to', 'node-1']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `network: management \\(${await addressOf('management', 'node-2')} → ${await addressOf('management', 'node-1')}\\); skipped migration \\(${lost} unreachable`,
      ),
    );
    assert.equal((await c.vm('a')).node, 'node-1');
  });

  it('never uses a network whose role is none, and refuses when no network is left', async () => {
    assert.equal((await c.ferry(['net', 'set', 'management', '--role', 'none'])).code, 0);
    const check = await c.ferry(['vm', 'migrate', 'a', '--to', 'node-2', '--check', '--json']);
    assert.equal(check.code, 1);
    const blockers = (JSON.parse(check.stdout) as { blockers: string[] }).blockers;
    assert.equal(blockers.length, 1);
    assert.match(
      blockers[0]!,
      /^no usable migration network between 'node-1' and 'node-2' \(migration: \S+ unreachable from \S+: (EHOSTUNREACH|EADDRNOTAVAIL); storage: role storage; management: role none\)$/,
    );
    const refused = await c.ferry(['vm', 'migrate', 'a', '--to', 'node-2']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr.trim(), /^error: no usable migration network between 'node-1' and 'node-2'/);
    assert.equal((await c.vm('a')).node, 'node-1');
    assert.equal((await c.vm('a')).migrationId, undefined);
  });

  it('uses a network given the migration role with a better metric', async () => {
    const set = await c.ferry(['net', 'set', 'storage', '--role', 'migration', '--metric', '50']);
    assert.equal(set.code, 0, set.stderr);
    assert.equal(set.stdout.trim(), 'network storage: role migration, metric 50');
    const r = await c.ferry(['vm', 'migrate', 'a', '--to', 'node-2', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as MigrationReport).network?.name, 'storage');
    assert.deepEqual((JSON.parse(r.stdout) as MigrationReport).network?.skipped, []);
  });

  it('refuses bad network settings with one line and changes nothing', async () => {
    for (const [args, msg] of [
      [['net', 'set', 'storage', '--role', 'bogus'], "error: network role must be one of management, migration, storage, none, got 'bogus'"],
      [['net', 'set', 'storage', '--metric', '0'], "error: network metric must be a whole number from 1 to 100000, got '0'"],
      [['net', 'set', 'nope', '--role', 'migration'], "error: no network named 'nope' (see 'ferry net list')"],
      [['net', 'set', 'storage'], 'error: nothing to set: give --role and/or --metric'],
    ] as const) {
      const r = await c.ferry([...args]);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.stderr.trim(), msg);
    }
    const storage = (await nets()).find((n) => n.name === 'storage')!;
    assert.deepEqual([storage.role, storage.metric], ['migration', 50]);
  });

  it('moves a quick migration through the shared volume, not a network', async () => {
    const r = await c.ferry(['vm', 'migrate', 'a', '--to', 'node-1', '--quick', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.equal(report.mode, 'quick');
    assert.equal(report.network, undefined);
  });
});

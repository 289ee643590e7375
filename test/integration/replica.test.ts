/**
 * Replica (issue 8, item 4; R5) between two Ferry clusters started from
 * their own state directories, with real QEMU. The guest on the primary
 * writes numbered records to its disk synchronously (50/s). The replica
 * gets a full copy, then only changed blocks every 30 s, kept as recovery
 * points; the lag stays within the interval; a replica cluster that stops
 * answering turns the health critical and replication catches up when it
 * is back; a test failover starts a copy on an isolated switch while
 * replication goes on; a planned failover loses no acknowledged write;
 * `reverse` replicates back, and an unplanned failover on the old primary
 * (the other cluster gone) starts the VM from a chosen recovery point with
 * every write acknowledged before that sync.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { readEndpoint } from '../../src/config/cluster-config.js';
import type { IncomingView, RecoveryPoint } from '../../src/controller/replica/incoming.js';
import type { ReplicaStatus } from '../../src/controller/replica/replicas.js';
import { readRecords } from '../helpers/disk.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';

type Status = { outgoing: ReplicaStatus[]; incoming: IncomingView[] };

describe('replica to another cluster', () => {
  let a: TestCluster;
  let b: TestCluster;
  before(async () => {
    [a, b] = await Promise.all([TestCluster.start({ nodes: 1, nodeMemoryMiB: 512 }), TestCluster.start({ nodes: 1, nodeMemoryMiB: 512 })]);
    await a.createAndStart('db', { memoryMiB: 128, workload: 'disk:50' });
    await waitFor('the guest to write', 30_000, () => (a.console('db').diskAcked ?? 0) >= 30);
  });
  after(async () => {
    const pid = b ? readEndpoint(b.layout, 'controller')?.pid : undefined;
    if (pid) process.kill(pid, 'SIGCONT');
    await Promise.all([a?.stop(), b?.stop()]);
  });
  const url = (c: TestCluster) => readEndpoint(c.layout, 'controller')!.url;
  const status = (c: TestCluster) => c.ferryJson<Status>(['replica', 'status']);
  const acked = (c: TestCluster) => c.console('db').diskAcked ?? 0;

  it('refuses bad requests with one line and changes nothing', async () => {
    const cases: [string[], string][] = [
      [['db', '--to', url(b), '--token-file', b.layout.token, '--interval', '10s'], "error: --interval must be one of 30s, 5m, 15m, got '10s'"],
      [
        ['db', '--to', url(a), '--token-file', a.layout.token, '--interval', '30s'],
        `error: ${new URL(url(a)).origin} is this same cluster: a replica goes to a host outside it (another Ferry cluster or a standalone Ferry node)`,
      ],
      [['ghost', '--to', url(b), '--token-file', b.layout.token], "error: unknown VM 'ghost'"],
      [
        ['db', '--to', url(b), '--token-file', a.layout.token],
        `error: cannot use ${new URL(url(b)).origin} as a replica target: it refused the token (wrong --token-file?)`,
      ],
      [['db', '--to', url(b)], "error: 'replica enable' needs --to URL (the replica cluster's API) and --token-file FILE (its token)"],
    ];
    for (const [args, message] of cases) {
      const r = await a.ferry(['replica', 'enable', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim(), message);
    }
    assert.deepEqual(await status(a), { outgoing: [], incoming: [] });
    assert.deepEqual(await status(b), { outgoing: [], incoming: [] });
    const none = await a.ferry(['replica', 'failover', 'db', '--planned']);
    assert.equal(none.code, 2);
    assert.equal(none.stderr.trim(), "error: VM 'db' is not replicated from or to this cluster (see 'ferry replica status')");
  });

  it('sends a full copy, then only changed blocks every interval, keeping the lag within it', async () => {
    const s = await a.ferryJson<ReplicaStatus>(['replica', 'enable', 'db', '--to', url(b), '--token-file', b.layout.token, '--interval', '30s', '--keep', '3']);
    assert.equal(s.health, 'normal');
    assert.equal(s.lastSyncMode, 'full');
    assert.equal(s.syncs, 1);
    assert.ok(s.lastSyncBytes! > 0);
    // Two more syncs by the clock; the lag never exceeds the interval (plus the seconds a sync takes).
    let maxLag = 0;
    const last = await waitFor(
      'two scheduled syncs',
      80_000,
      async () => {
        const [o] = (await status(a)).outgoing;
        maxLag = Math.max(maxLag, o!.lagMs ?? 0);
        assert.equal(o!.health, 'normal', JSON.stringify(o));
        return o!.syncs >= 3 ? o : undefined;
      },
      1000,
    );
    assert.ok(maxLag <= 30_000 + 5000, `lag stayed within the interval (max ${maxLag} ms)`);
    assert.equal(last!.lastSyncMode, 'incremental');
    assert.ok(last!.lastSyncBytes! <= 8 * 1048576, `an interval's changed blocks: ${last!.lastSyncBytes} bytes`);
    const [inc] = (await status(b)).incoming;
    assert.equal(inc!.vm, 'db');
    assert.equal(inc!.source.url, url(a));
    assert.equal(inc!.points.length, 3);
    assert.deepEqual(
      inc!.points.map((p) => p.mode),
      ['full', 'incremental', 'incremental'],
    );
  });

  it('turns critical while the replica cluster does not answer and catches up when it is back', async () => {
    const pid = readEndpoint(b.layout, 'controller')!.pid;
    process.kill(pid, 'SIGSTOP');
    try {
      const r = await a.ferry(['replica', 'sync', 'db']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr.trim(), /^error: POST http:\/\/[^ ]+\/api\/v1\/replica-in\/db\/sync timed out after 5000 ms$/);
      const [o] = (await status(a)).outgoing;
      assert.equal(o!.health, 'critical');
      const n = acked(a);
      await waitFor('the guest to write on', 10_000, () => acked(a) > n + 20);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const before = acked(a);
    const caught = await a.ferryJson<{ point: RecoveryPoint; status: ReplicaStatus }>(['replica', 'sync', 'db']);
    assert.equal(caught.status.health, 'normal');
    assert.equal(caught.point.mode, 'incremental', 'the blocks changed while it was down were kept for this sync');
    assert.ok(caught.status.lagMs! < 10_000);
    // That point has everything acknowledged before it was taken.
    const t = await a.ferryJson<{ vm: string; point: RecoveryPoint }>(['replica', 'failover', 'db', '--test']);
    assert.equal(t.vm, 'db-test');
    assert.equal(t.point.id, caught.point.id);
    const copy = await b.vm('db-test');
    assert.equal(copy.state, 'running');
    assert.equal(copy.switch, 'replica-test', 'on the isolated switch');
    await waitFor('the test copy to boot', 60_000, () => b.console('db-test').diskStart !== undefined);
    assert.ok(b.console('db-test').diskStart! >= before, `test copy starts after record ${b.console('db-test').diskStart} ≥ ${before}`);
    // Replication goes on meanwhile; the primary still runs.
    const again = await a.ferryJson<{ point: RecoveryPoint }>(['replica', 'sync', 'db']);
    assert.ok(again.point.atMs > caught.point.atMs);
    assert.equal((await a.vm('db')).state, 'running');
    await b.ferryOk(['vm', 'stop', 'db-test']);
    await b.ferryOk(['vm', 'delete', 'db-test']);
  });

  it('disables a replica: the replica side drops its copy, the VM runs on', async () => {
    await a.createAndStart('aux', { memoryMiB: 128 });
    await a.ferryOk(['replica', 'enable', 'aux', '--to', url(b), '--token-file', b.layout.token, '--interval', '15m', '--keep', '1']);
    const held = (await status(b)).incoming.find((r) => r.vm === 'aux')!;
    assert.equal(held.points.length, 1);
    assert.equal(fs.existsSync(held.disk), true);
    assert.match(await a.ferryOk(['replica', 'disable', 'aux']), /^replication of aux disabled$/m);
    assert.deepEqual(
      (await status(a)).outgoing.map((o) => o.vm),
      ['db'],
    );
    assert.deepEqual(
      (await status(b)).incoming.map((r) => r.vm),
      ['db'],
    );
    assert.equal(fs.existsSync(held.disk), false, "the replica side's copy is gone");
    assert.equal((await a.vm('aux')).state, 'running');
    const again = await a.ferry(['replica', 'disable', 'aux']);
    assert.equal(again.code, 2);
    assert.equal(again.stderr.trim(), "error: VM 'aux' is not replicated (see 'ferry replica status')");
    await a.ferryOk(['vm', 'stop', 'aux']);
    await a.ferryOk(['vm', 'delete', 'aux']);
  });

  it('fails over planned: the VM stops here after a final sync and starts there with every acknowledged write', async () => {
    const r = await a.ferryJson<{ vm: string; mode: string }>(['replica', 'failover', 'db', '--planned']);
    assert.deepEqual([r.vm, r.mode], ['db', 'planned']);
    assert.equal((await a.vm('db')).state, 'stopped');
    const lastAcked = acked(a);
    assert.equal((await b.vm('db')).state, 'running');
    await waitFor('the VM to boot on the replica cluster', 60_000, () => b.console('db').diskStart !== undefined);
    assert.ok(b.console('db').diskStart! >= lastAcked, `nothing lost: continues after ${b.console('db').diskStart} ≥ ${lastAcked}`);
    assert.equal((await status(a)).outgoing[0]!.state, 'failed-over');
  });

  it('replicates back with reverse; an unplanned failover on the old primary starts from a chosen recovery point', async () => {
    await waitFor('writes on the replica cluster', 20_000, () => (acked(b) ?? 0) > (b.console('db').diskStart ?? 0) + 20);
    const s = await b.ferryJson<ReplicaStatus>(['replica', 'reverse', 'db']);
    assert.equal(s.target.url, new URL(url(a)).origin);
    assert.equal(s.health, 'normal');
    assert.equal(s.lastSyncMode, 'full');
    const before = acked(b);
    const chosen = await b.ferryJson<{ point: RecoveryPoint }>(['replica', 'sync', 'db']);
    await waitFor('more writes', 10_000, () => acked(b) > before + 50);
    await b.ferryJson(['replica', 'sync', 'db']);
    // The cluster the VM ran on is gone.
    assert.equal((await b.ferry(['down'])).code, 0);
    const [inc] = (await status(a)).incoming;
    assert.deepEqual(
      inc!.points.map((p) => p.mode),
      ['full', 'incremental', 'incremental'],
    );
    const bad = await a.ferry(['replica', 'failover', 'db', '--point', 'p-nope']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim(), `error: the replica of 'db' has no recovery point 'p-nope' (it has ${inc!.points.map((p) => p.id).join(', ')})`);
    const r = await a.ferryJson<{ vm: string; point: RecoveryPoint; mode: string }>(['replica', 'failover', 'db', '--point', chosen.point.id]);
    assert.deepEqual([r.vm, r.mode, r.point.id], ['db', 'unplanned', chosen.point.id]);
    const vm = await a.vm('db');
    assert.equal(vm.state, 'running');
    await waitFor('the VM to boot on the old primary', 60_000, () => {
      const start = a.console('db').diskStart;
      return start !== undefined && start >= before ? start : undefined;
    });
    const start = a.console('db').diskStart!;
    assert.ok(start >= before, `every write acknowledged before the chosen sync is there (${start} ≥ ${before})`);
    assert.ok(start < acked(b), `and it is that point, not a later one (${start} < ${acked(b)})`);
    await a.ferryOk(['vm', 'stop', 'db']);
    assert.deepEqual(readRecords(vm.diskPath).holes, []);
  });
});

/**
 * Online backups (issue 8, first part) with real QEMU. The guest writes
 * numbered records to its disk synchronously; a backup taken during the
 * writes restores to a consistent point (a prefix of the records, with every
 * record acknowledged before the backup was asked for); an incremental
 * backup copies only the changed blocks; a backup asked for during a
 * migration waits for it and then completes; bad requests are refused.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { BackupRecord } from '../../src/controller/storage/backups.js';
import { readRecords, writeBulk } from '../helpers/disk.js';
import { guestClockOffset } from '../helpers/guest-clock.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { finalReport } from '../helpers/migration.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';
import { requestMigration } from '../../src/api/routes/vms.js';

describe('online backups', () => {
  let c: TestCluster;
  let full: BackupRecord;
  let fullPoint = 0;
  before(async () => {
    c = await TestCluster.start({ nodes: 2, nodeMemoryMiB: 1024 });
    await c.createAndStart('db', { node: 'node-1', memoryMiB: 128, workload: 'disk:50' });
    await waitFor('the guest to write', 30_000, () => (c.console('db').diskAcked ?? 0) >= 50);
  });
  after(async () => {
    await c?.stop();
  });
  const acked = () => c.console('db').diskAcked ?? 0;

  it('backs up a running VM during writes to a consistent point, verified, and restores it as a new VM', async () => {
    const before = acked();
    full = await c.ferryJson<BackupRecord>(['backup', 'create', 'db']);
    const after = acked();
    assert.equal(full.status, 'completed');
    assert.equal(full.verified, true);
    assert.ok(full.bytes! > 0);
    // The disk is 1 GiB; the guest wrote a few MiB of it: a full backup copies what is allocated.
    assert.ok(full.bytes! < 64 * 1048576, `a full backup copied ${full.bytes} bytes of a 1 GiB disk with a few MiB written`);
    const r = await c.ferry(['backup', 'restore', full.id, '--as', 'db-copy']);
    assert.equal(r.code, 0, r.stderr);
    const copy = await c.vm('db-copy');
    assert.equal(copy.state, 'stopped');
    const records = readRecords(copy.diskPath);
    assert.deepEqual(records.holes, [], 'a point in time: no record after a missing one');
    assert.ok(records.last >= before, `every record acknowledged before the backup was asked for is in it (${records.last} ≥ ${before})`);
    assert.ok(records.last <= after + 60, `and nothing from well after it ended (${records.last} vs ${after})`);
    fullPoint = records.last;
    // The restored VM boots and its guest continues after the last record.
    assert.equal((await c.ferry(['vm', 'start', 'db-copy', '--node', 'node-2'])).code, 0);
    await waitFor('the copy to boot', 60_000, () => c.console('db-copy').diskStart !== undefined);
    assert.equal(c.console('db-copy').diskStart, fullPoint);
    assert.equal((await c.ferry(['vm', 'stop', 'db-copy'])).code, 0);
  });

  it('copies only changed blocks in an incremental backup, which restores through its chain', async () => {
    const start = acked();
    await waitFor('about 100 new records', 20_000, () => acked() >= start + 100);
    const before = acked();
    const inc = await c.ferryJson<BackupRecord>(['backup', 'create', 'db', '--incremental']);
    assert.equal(inc.mode, 'incremental');
    assert.equal(inc.parent, full.id);
    assert.equal((await c.ferry(['backup', 'restore', inc.id, '--as', 'db-inc'])).code, 0);
    const records = readRecords((await c.vm('db-inc')).diskPath);
    assert.deepEqual(records.holes, []);
    assert.ok(records.last >= before && records.last > fullPoint, `${records.last} ≥ ${before}`);
    // Records are 4 KiB blocks 1, 2, 3, …: the ones written since the full backup (fullPoint + 1 up to what the chain
    // holds, plus the one in flight at its point in time) lie in these 64 KiB clusters, and nothing older may be copied.
    // Counted from the restored chain, not the console's acknowledgements, which lag the guest under load.
    const touched = Math.floor((records.last + 1) / 16) - Math.floor((fullPoint + 1) / 16) + 1;
    assert.ok(
      inc.bytes! > 0 && inc.bytes! <= touched * 65536,
      `incremental copied ${inc.bytes} bytes; the writes since the full backup (records ${fullPoint + 1}..${records.last + 1}) touched ${touched} clusters`,
    );
    const list = await c.ferryJson<BackupRecord[]>(['backup', 'list', 'db']);
    assert.deepEqual(
      list.map((b) => [b.id, b.mode, b.status]),
      [
        [full.id, 'full', 'completed'],
        [inc.id, 'incremental', 'completed'],
      ],
    );
    const refused = await c.ferry(['backup', 'delete', full.id]);
    assert.equal(refused.code, 2);
    assert.equal(refused.stderr.trim(), `error: backup '${full.id}' is the base of ${inc.id}: delete those first`);
  });

  it('makes a backup asked for during a migration wait for it, then completes it where the VM runs', async () => {
    const m = await requestMigration(c.api, 'db', { to: 'node-2', policy: { bandwidthMiBps: 16 } });
    await waitFor('the migration to copy memory', 20_000, async () => (await c.api.call(migrationRoutes.show, { params: { id: m.id } })).phase === 'memory');
    const before = acked();
    const b = await c.ferryJson<BackupRecord>(['backup', 'create', 'db']);
    assert.equal((await finalReport(c, m.id)).report.status, 'completed', 'the migration was not disturbed');
    assert.equal(b.status, 'completed');
    assert.ok(b.waitedMs! > 0, `the backup waited for the migration (${b.waitedMs} ms)`);
    assert.equal(b.node, 'node-2', 'and ran where the VM had moved');
    assert.equal((await c.ferry(['backup', 'restore', b.id, '--as', 'db-moved'])).code, 0);
    const records = readRecords((await c.vm('db-moved')).diskPath);
    assert.deepEqual(records.holes, []);
    assert.ok(records.last >= before);
  });

  it('lets a migration started mid-backup complete; the backup waits, then finishes from the shared volume and merges on the new node', async () => {
    // The VM is on node-2 now (previous test). A capped copy keeps the backup running while the VM moves.
    const boot = c.console('db').ticks.at(-1)!.bootId;
    const before = acked();
    // The guest's clock against the host's, so its records' times compare with the backup's freeze.
    const offset = await guestClockOffset(c, 'db');
    // 40 MiB of data far from the records, so the capped copy (8 MiB/s: about 5 s) is still running while the VM moves.
    await writeBulk(c, 'db', 40);
    const pending = c.ferryJson<BackupRecord>(['backup', 'create', 'db', '--bandwidth', '8']);
    const running = await waitFor('the backup to freeze the disk', 20_000, async () =>
      (await c.ferryJson<BackupRecord[]>(['backup', 'list', 'db'])).find((b) => b.status === 'running'),
    );
    const frozenDisk = (await c.vm('db')).diskPath;
    assert.match(frozenDisk, /\/shared\/overlays\/db-b-[^/]+\.qcow2$/, 'the VM writes into an overlay on the shared volume');
    const m = await requestMigration(c.api, 'db', { to: 'node-1', policy: { bandwidthMiBps: 12 } });
    assert.equal((await finalReport(c, m.id)).report.status, 'completed', 'the migration did not wait for the backup');
    const b = await pending;
    assert.equal(b.id, running.id);
    assert.equal(b.status, 'completed');
    assert.equal(b.verified, true);
    assert.equal(b.node, 'node-2', 'frozen where the VM ran');
    assert.equal(b.mergedOn, 'node-1', "merged in the target's QEMU");
    assert.equal(b.movedTo, 'node-1');
    // The copy waited while the VM moved, then finished from the files on the shared volume.
    assert.ok(
      b.copyPausedMs! > 1000 && b.waitedMs! >= b.copyPausedMs! + (b.mergeWaitedMs ?? 0),
      `the record shows the wait (copy paused ${b.copyPausedMs} ms, merge waited ${b.mergeWaitedMs} ms)`,
    );
    assert.equal(b.mergeError, undefined);
    // The VM is back on its disk image, the overlay is gone, the guest never rebooted and keeps writing.
    const vm = await c.vm('db');
    assert.deepEqual([vm.node, vm.state], ['node-1', 'running']);
    assert.doesNotMatch(vm.diskPath, /overlays/);
    assert.ok(!fs.existsSync(frozenDisk), 'the overlay file is removed');
    assert.equal(c.console('db').ticks.at(-1)!.bootId, boot);
    const n = acked();
    await waitFor('writes after the merge', 10_000, () => acked() > n + 20);
    // The backup is the point in time it was started.
    assert.equal((await c.ferry(['backup', 'restore', b.id, '--as', 'db-mid'])).code, 0);
    const records = readRecords((await c.vm('db-mid')).diskPath);
    assert.deepEqual(records.holes, []);
    assert.ok(records.last >= before, `restored ${records.last}: every record acknowledged before the request (${before}) is in it`);
    // The next incremental builds on it: the change bitmap came through the move and the merge.
    const inc = await c.ferryJson<BackupRecord>(['backup', 'create', 'db', '--incremental']);
    assert.equal(inc.parent, b.id);
    assert.ok(inc.bytes! <= 8 * 1048576, `incremental after the move copied ${inc.bytes} bytes`);
    assert.equal((await c.ferry(['backup', 'restore', inc.id, '--as', 'db-after'])).code, 0);
    const after = readRecords((await c.vm('db-after')).diskPath);
    assert.deepEqual(after.holes, []);
    assert.ok(after.last > records.last);
    // Every write the guest acknowledged is on its disk image after the merge.
    assert.equal((await c.ferry(['vm', 'stop', 'db'])).code, 0);
    const last = acked();
    const frozen = { from: b.freezeStartedAtMs!, to: b.frozenAtMs! };
    const onDisk = readRecords((await c.vm('db')).diskPath);
    assert.deepEqual(onDisk.holes, []);
    assert.ok(onDisk.last >= last, `${onDisk.last} ≥ ${last}`);
    // The backup is exactly the freeze, in time. Its last record began before the freeze ended; the record
    // after the next one began only once the one after the last was on the disk, after the freeze began.
    // (In host time, a record began between its guest time − offset.hi and − offset.lo.)
    const began = (n: number) => onDisk.times.get(n)!;
    assert.ok(
      began(records.last) - offset.hi <= frozen.to,
      `record ${records.last}, the backup's last, began before the freeze ended (${began(records.last) - offset.hi} ≤ ${frozen.to})`,
    );
    assert.ok(
      began(records.last + 2) - offset.lo >= frozen.from,
      `record ${records.last + 2} began after the freeze began (${began(records.last + 2) - offset.lo} ≥ ${frozen.from}): nothing written before the freeze is missing`,
    );
    assert.equal((await c.ferry(['vm', 'start', 'db'])).code, 0);
  });

  it('refuses what cannot be done with one line', async () => {
    for (const [args, msg] of [
      [['backup', 'restore', 'nope'], "error: no backup 'nope' (see 'ferry backup list')"],
      [
        ['backup', 'create', 'db-copy', '--incremental'],
        "error: VM 'db-copy' has no completed backup to build an incremental one on: take a full backup first",
      ],
      [['backup', 'create', 'ghost'], "error: unknown VM 'ghost'"],
      [['backup', 'restore', full.id], "error: VM 'db' is running: stop it to restore its disk in place, or restore --as NAME"],
    ] as const) {
      const r = await c.ferry([...args]);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.stderr.trim(), msg);
    }
  });
});

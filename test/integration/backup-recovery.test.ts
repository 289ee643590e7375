/**
 * A controller killed in the middle of an online backup (real QEMU, the
 * guest writing numbered records): the VM keeps running on overlay + frozen
 * image meanwhile; the restarted controller stops the copy's leftover
 * qemu-storage-daemon, records the backup as failed and merges the overlay
 * back where the VM runs; no acknowledged write is lost and the next backup
 * works.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { after, before, describe, it } from 'node:test';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { Cluster } from '../../src/cli/context.js';
import type { BackupRecord } from '../../src/controller/storage/backups.js';
import { readRecords, writeBulk } from '../helpers/disk.js';
import { TestCluster, processesMentioning, waitFor } from '../helpers/cluster.js';

describe('backup recovery after a controller crash', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 1, nodeMemoryMiB: 512 });
    await c.createAndStart('db', { memoryMiB: 128, workload: 'disk:50' });
    await waitFor('the guest to write', 30_000, () => (c.console('db').diskAcked ?? 0) >= 30);
  });
  after(async () => {
    await c?.stop();
  });
  const acked = () => c.console('db').diskAcked ?? 0;
  const storageDaemons = () => processesMentioning(c.dir).filter((p) => p.includes('qemu-storage-daemon'));
  // What Ferry's older copies left in the system temporary directory; none may appear now.
  const tmpBefore = new Set(fs.readdirSync(os.tmpdir()));
  const tmpQsd = () => fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('ferry-qsd-') && !tmpBefore.has(f));

  it('merges the overlay back after a restart, keeps every write, and the next backup works', async () => {
    const image = (await c.vm('db')).diskPath;
    const boot = c.console('db').ticks.at(-1)!.bootId;
    // A slow copy (40 MiB at 4 MiB/s) that the crash interrupts.
    await writeBulk(c, 'db', 40);
    const pending = c.ferry(['backup', 'create', 'db', '--bandwidth', '4']);
    await waitFor(
      'the disk to be frozen and copied',
      20_000,
      async () => (await c.vm('db')).diskPath.includes('/shared/overlays/') && storageDaemons().length === 1,
    );
    const overlay = (await c.vm('db')).diskPath;
    // The copy's QMP socket lives under the state directory, not the system's temporary one.
    assert.equal(fs.readdirSync(c.layout.run).filter((f) => f.startsWith('qsd-copy-')).length, 1);
    assert.deepEqual(tmpQsd(), [], 'nothing in the system temporary directory');
    process.kill(readEndpoint(c.layout, 'controller')!.pid, 'SIGKILL');
    const lost = await pending;
    assert.equal(lost.code, 1, 'an operation that failed, not bad usage');
    assert.match(lost.stderr, /^error: lost http:\/\/127\.0\.0\.1:\d+ during POST \/api\/v1\/backups: /);
    assert.equal(lost.stderr.trim().split('\n').length, 1);
    const n = acked();
    await waitFor('the guest to write on, on its overlay', 10_000, () => acked() > n + 20);
    await c.ferryOk(['up']);
    c.client = Cluster.connect(c.layout);
    const [b] = await waitFor('the backup to be settled', 60_000, async () => {
      const list = await c.ferryJson<BackupRecord[]>(['backup', 'list', 'db']);
      return list[0]?.status === 'failed' ? list : undefined;
    });
    assert.equal(b!.error, 'the controller stopped during the backup');
    assert.ok(!fs.existsSync(b!.file), 'no half-written backup file');
    await waitFor('the overlay to be merged back', 60_000, async () => (await c.vm('db')).diskPath === image);
    assert.ok(!fs.existsSync(overlay), 'the overlay file is gone');
    assert.deepEqual(storageDaemons(), [], "the copy's daemon was stopped");
    assert.deepEqual(
      fs.readdirSync(c.layout.run).filter((f) => f.startsWith('qsd-')),
      [],
      'its pid file and socket directory are gone',
    );
    assert.equal(c.console('db').ticks.at(-1)!.bootId, boot, 'the VM kept running throughout');
    const m = acked();
    await waitFor('writes after the merge', 10_000, () => acked() > m + 20);
    // The change bitmap was kept through the failed backup: a new full one and an incremental work.
    const full = await c.ferryJson<BackupRecord>(['backup', 'create', 'db']);
    assert.equal(full.status, 'completed');
    const inc = await c.ferryJson<BackupRecord>(['backup', 'create', 'db', '--incremental']);
    assert.ok(inc.bytes! <= 8 * 1048576);
    await c.ferryOk(['vm', 'stop', 'db']);
    const last = acked();
    const records = readRecords(image);
    assert.deepEqual(records.holes, []);
    assert.ok(records.last >= last, `every acknowledged write is on the image (${records.last} ≥ ${last})`);
  });

  it('finishes a backup of a VM stopped during it and merges its overlay offline; delete waits for the backup', async () => {
    await c.ferryOk(['vm', 'start', 'db']);
    await waitFor('the guest to write again', 60_000, () => (c.console('db').diskStart ?? 0) > 0 && acked() > (c.console('db').diskStart ?? 0) + 20);
    const image = (await c.vm('db')).diskPath;
    // 40 MiB to copy at 4 MiB/s: the VM stops long before the copy ends.
    await writeBulk(c, 'db', 40);
    const pending = c.ferryJson<BackupRecord>(['backup', 'create', 'db', '--bandwidth', '4']);
    await waitFor('the disk to be frozen', 20_000, async () => (await c.vm('db')).diskPath.includes('/shared/overlays/'));
    const overlay = (await c.vm('db')).diskPath;
    await c.ferryOk(['vm', 'stop', 'db']);
    const last = acked();
    const refused = await c.ferry(['vm', 'delete', 'db']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr.trim(), /^error: a backup of VM 'db' is running \(b-[^)]+\); delete the VM after it$/);
    const b = await pending;
    assert.equal(b.status, 'completed');
    assert.equal(b.mergedOn, 'node-1');
    const vm = await c.vm('db');
    assert.deepEqual([vm.state, vm.diskPath], ['stopped', image]);
    assert.ok(!fs.existsSync(overlay));
    // The writes made on the overlay after the freeze were merged into the image.
    const records = readRecords(image);
    assert.deepEqual(records.holes, []);
    assert.ok(records.last >= last, `${records.last} ≥ ${last}`);
    // The merged change bitmap still serves an incremental backup of the started VM.
    await c.ferryOk(['vm', 'start', 'db']);
    const inc = await c.ferryJson<BackupRecord>(['backup', 'create', 'db', '--incremental']);
    assert.equal(inc.parent, b.id);
  });

  it('ferry down during a backup stops the copy, merges the overlay back and leaves nothing; the backup fails with exit 1', async () => {
    if ((await c.vm('db')).state !== 'running') await c.ferryOk(['vm', 'start', 'db']);
    await waitFor('the guest to write', 60_000, () => c.console('db').ticks.length > 0 && (c.console('db').diskAcked ?? 0) > 0);
    const image = (await c.vm('db')).diskPath;
    const pending = c.ferry(['backup', 'create', 'db', '--bandwidth', '4']);
    await waitFor('the copy', 20_000, async () => (await c.vm('db')).diskPath.includes('/shared/overlays/') && storageDaemons().length === 1);
    const down = await c.ferry(['down']);
    assert.equal(down.code, 0, down.stderr);
    const backup = await pending;
    assert.equal(backup.code, 1, backup.stdout);
    assert.match(
      backup.stderr,
      /^error: backup b-[a-z0-9-]+ of db was cancelled: the cluster is going down; the VM's disk is whole \(its overlay was merged back\)\n$/,
    );
    assert.deepEqual(processesMentioning(c.dir), [], 'no copy daemon and no QEMU survive down');
    assert.deepEqual(tmpQsd(), []);
    assert.deepEqual(fs.existsSync(c.layout.run) ? fs.readdirSync(c.layout.run) : [], [], 'no pid file, socket or directory under run/');
    assert.deepEqual(fs.readdirSync(`${c.layout.shared}/overlays`), [], 'no overlay left: the acknowledged writes are in the disk');
    const last = acked();
    const records = readRecords(image);
    assert.deepEqual(records.holes, []);
    assert.ok(records.last >= last, `every acknowledged write is on the image (${records.last} ≥ ${last})`);
    // Back up: the VM's start action starts it, the backup is recorded as cancelled.
    const up = await c.ferry(['up']);
    assert.match(up.stdout, /^start actions: started db$/m);
    c.client = Cluster.connect(c.layout);
    const [b] = await c.ferryJson<BackupRecord[]>(['backup', 'list', 'db']).then((l) => l.filter((x) => x.status === 'failed').slice(-1));
    assert.match(b!.error ?? '', /was cancelled: the cluster is going down/);
    assert.ok(!fs.existsSync(b!.file), 'no half-written backup file');
  });
});

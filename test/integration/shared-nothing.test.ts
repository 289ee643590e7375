/**
 * Shared-nothing live migration with real QEMU: a VM whose disk is on its node's own storage (not the shared
 * volume) is refused a plain live migration with a hint; `--with-storage
 * DIR` copies the disk into DIR on the target while the guest writes
 * numbered records synchronously (QEMU mirror into the target's NBD export,
 * write-blocking, ended with the source paused before switchover); every
 * acknowledged write is on the copy, the source's disk is gone, and a copy
 * that cannot be made leaves the VM running on its original disk.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MigrationReport } from '../../src/domain/migration.js';
import { readRecords } from '../helpers/disk.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { finalReport } from '../helpers/migration.js';
import { requestMigration } from '../../src/api/routes/vms.js';

describe('shared-nothing live migration', () => {
  let c: TestCluster;
  let localDisk = '';
  before(async () => {
    c = await TestCluster.start({ nodes: 2, nodeMemoryMiB: 1024 });
    await c.createAndStart('sn', { node: 'node-1', memoryMiB: 128, workload: 'disk:50' });
    await waitFor('the guest to write', 30_000, () => (c.console('sn').diskAcked ?? 0) >= 30);
    // Each node's own storage, outside the shared volume, is a storage root of the cluster.
    await c.ferryOk(['cluster', 'set', 'storageRoots', `${path.join(c.dir, 'local-node-1')},${path.join(c.dir, 'local-node-2')}`]);
    fs.mkdirSync(path.join(c.dir, 'local-node-2'), { recursive: true });
    // Onto node-1's own storage.
    const moved = await c.ferryJson<{ diskPath: string }>(['vm', 'move-storage', 'sn', '--to', path.join(c.dir, 'local-node-1')]);
    localDisk = moved.diskPath;
  });
  after(async () => {
    await c?.stop();
  });
  const acked = () => c.console('sn').diskAcked ?? 0;
  const bootId = () => c.console('sn').ticks.at(-1)!.bootId;

  it('refuses a plain migration of a VM whose disk is not on the shared volume, and bad --with-storage requests', async () => {
    const hint = `VM 'sn''s disk ${localDisk} is not on the shared volume: migrate it with --with-storage DIR to copy the disk along`;
    const r = await c.ferry(['vm', 'migrate', 'sn', '--to', 'node-2']);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim(), `error: ${hint}`);
    const check = await c.ferry(['vm', 'migrate', 'sn', '--to', 'node-2', '--check']);
    assert.equal(check.code, 1);
    assert.match(check.stdout, new RegExp(`- ${hint.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    const quick = await c.ferry(['vm', 'migrate', 'sn', '--to', 'node-2', '--quick', '--with-storage', path.join(c.dir, 'local-node-2')]);
    assert.equal(quick.code, 2);
    assert.equal(quick.stderr.trim(), 'error: --with-storage copies the disk during a live migration; a quick migration needs the disk on the shared volume');
    await assert.rejects(
      requestMigration(c.api, 'sn', { to: 'node-2', withStorage: 'relative/dir' }),
      /^FerryError: --with-storage must be an absolute directory inside a storage root, got 'relative\/dir'; storage roots: /,
    );
    // Outside every storage root, however it is spelled: refused before anything moves, naming the roots.
    const roots = `${path.join(c.dir, 'shared')}, ${path.join(c.dir, 'local-node-1')}, ${path.join(c.dir, 'local-node-2')}`;
    for (const [given, why] of [
      ['../../etc', "must be an absolute directory inside a storage root, got '../../etc'"],
      ['/etc', "must be inside a storage root, got '/etc'"],
      [path.join(c.dir, 'local-node-2', '..', '..', 'etc'), `must be inside a storage root, got '${path.join(c.dir, 'local-node-2', '..', '..', 'etc')}'`],
      ['/proc/ferry-nowhere', "cannot be under /proc, /sys, /dev, got '/proc/ferry-nowhere'"],
    ]) {
      const out = await c.ferry(['vm', 'migrate', 'sn', '--to', 'node-2', '--with-storage', given!]);
      assert.equal(out.code, 2, given);
      assert.equal(out.stderr, `error: --with-storage ${why}; storage roots: ${roots} (cluster setting storageRoots)\n`);
    }
    // A symbolic link inside a root that leads out of it is refused too.
    fs.symlinkSync('/etc', path.join(c.dir, 'local-node-2', 'escape'));
    const link = await c.ferry(['vm', 'migrate', 'sn', '--to', 'node-2', '--with-storage', path.join(c.dir, 'local-node-2', 'escape')]);
    assert.equal(link.code, 2);
    assert.match(link.stderr, /^error: --with-storage must be inside a storage root, got '\/etc'/);
    fs.rmSync(path.join(c.dir, 'local-node-2', 'escape'));
    assert.ok(!fs.existsSync('/etc/sn.qcow2'));
    const vm = await c.vm('sn');
    assert.deepEqual([vm.node, vm.diskPath, vm.state, vm.migrationId], ['node-1', localDisk, 'running', undefined]);
  });

  it('leaves the VM running on its own disk when the copy cannot be made', async () => {
    const boot = bootId();
    // Inside a root, but not a directory anything can be created in.
    fs.writeFileSync(path.join(c.dir, 'local-node-2', 'a-file'), '');
    const m = await c.ferry(['vm', 'migrate', 'sn', '--to', 'node-2', '--with-storage', path.join(c.dir, 'local-node-2', 'a-file', 'sub'), '--json']);
    assert.equal(m.code, 1, m.stderr);
    const report = JSON.parse(m.stdout) as MigrationReport;
    assert.equal(report.status, 'failed');
    const vm = await c.vm('sn');
    assert.deepEqual([vm.node, vm.diskPath, vm.state], ['node-1', localDisk, 'running']);
    assert.equal((await c.instances(['node-2'])).get('node-2')!.length, 0, 'nothing left on node-2');
    const n = acked();
    await waitFor('writes to go on', 10_000, () => acked() > n + 20);
    assert.equal(bootId(), boot);
  });

  it('copies the disk along while the guest writes, and every acknowledged write is on the copy', async () => {
    const boot = bootId();
    const dir = path.join(c.dir, 'local-node-2');
    const before = acked();
    const m = await c.ferry(['vm', 'migrate', 'sn', '--to', 'node-2', '--with-storage', dir, '--json']);
    assert.equal(m.code, 0, m.stderr);
    const report = JSON.parse(m.stdout) as MigrationReport;
    assert.equal(report.status, 'completed');
    const copy = path.join(dir, 'sn.qcow2');
    assert.equal(report.storage!.from, localDisk);
    assert.equal(report.storage!.to, copy);
    assert.ok(report.storage!.copiedBytes > 0, `the mirror copied ${report.storage!.copiedBytes} bytes`);
    const vm = await c.vm('sn');
    assert.deepEqual([vm.node, vm.diskPath, vm.state], ['node-2', copy, 'running']);
    assert.ok(!fs.existsSync(localDisk), "the source's disk is removed");
    assert.equal(bootId(), boot, 'no reboot');
    await waitFor('writes to go on, on node-2', 10_000, () => acked() > before + 50);
    // The copy is the VM's disk now: it migrates back the same way.
    const back = await requestMigration(c.api, 'sn', { to: 'node-1', withStorage: path.join(c.dir, 'local-node-1') });
    assert.equal((await finalReport(c, back.id)).report.status, 'completed');
    assert.equal((await c.vm('sn')).node, 'node-1');
    const n = acked();
    await waitFor('writes on node-1 again', 10_000, () => acked() > n + 20);
    assert.equal((await c.ferry(['vm', 'stop', 'sn'])).code, 0);
    const lastAcked = acked();
    const records = readRecords((await c.vm('sn')).diskPath);
    assert.deepEqual(records.holes, []);
    assert.ok(records.last >= lastAcked, `every acknowledged write is there (${records.last} ≥ ${lastAcked})`);
  });
});

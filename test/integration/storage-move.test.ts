/**
 * Live storage move with real QEMU: the guest
 * writes numbered records synchronously while its disk moves to another
 * directory; it keeps running and writing, every acknowledged write is on
 * the new disk, the VM migrates from there, and a move that cannot be done
 * leaves the VM on its original disk.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MigrationReport } from '../../src/domain/migration.js';
import { readRecords } from '../helpers/disk.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';

describe('live storage move', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 2, nodeMemoryMiB: 1024 });
    await c.createAndStart('vol', { node: 'node-1', memoryMiB: 128, workload: 'disk:50' });
    await waitFor('the guest to write', 30_000, () => (c.console('vol').diskAcked ?? 0) >= 30);
  });
  after(async () => {
    await c?.stop();
  });
  const acked = () => c.console('vol').diskAcked ?? 0;

  it('refuses a move it cannot make and leaves the VM on its original disk', async () => {
    const original = (await c.vm('vol')).diskPath;
    const blocked = path.join(c.dir, 'shared', 'a-file');
    fs.writeFileSync(blocked, '');
    const r = await c.ferry(['vm', 'move-storage', 'vol', '--to', path.join(blocked, 'sub')]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr, `error: cannot write to ${path.join(blocked, 'sub')}: ENOTDIR\n`);
    const vm = await c.vm('vol');
    assert.deepEqual([vm.diskPath, vm.state], [original, 'running']);
    const n = acked();
    await waitFor('writes to go on', 10_000, () => acked() > n + 20);
  });

  it('puts a disk only inside a storage root: the shared volume and the storageRoots setting', async () => {
    const original = (await c.vm('vol')).diskPath;
    const shared = path.join(c.dir, 'shared');
    for (const [given, why] of [
      ['/etc', "must be inside a storage root, got '/etc'"],
      ['/proc', "cannot be under /proc, /sys, /dev, got '/proc'"],
      ['etc', "must be an absolute directory inside a storage root, got 'etc'"],
      [`${shared}/../../../etc`, `must be inside a storage root, got '${shared}/../../../etc'`],
    ]) {
      const r = await c.ferry(['vm', 'move-storage', 'vol', '--to', given!]);
      assert.equal(r.code, 2, given);
      assert.equal(r.stderr, `error: --to ${why}; storage roots: ${shared} (cluster setting storageRoots)\n`);
    }
    assert.ok(!fs.existsSync('/etc/vol.qcow2'));
    // The backup store is confined the same way.
    const store = await c.ferry(['cluster', 'set', 'backupStore', '/etc/ferry-backups']);
    assert.equal(store.code, 2);
    assert.equal(
      store.stderr,
      `error: backupStore must be inside a storage root, got '/etc/ferry-backups'; storage roots: ${shared} (cluster setting storageRoots)\n`,
    );
    // A root added by the setting takes disks; the shared volume stays one.
    const extra = path.join(c.dir, 'local-disks');
    await c.ferryOk(['cluster', 'set', 'storageRoots', extra]);
    const shown = await c.ferryJson<{ settings: { storageRoots: string[] } }>(['cluster', 'show']);
    assert.deepEqual(shown.settings.storageRoots, [extra]);
    const moved = await c.ferryJson<{ diskPath: string }>(['vm', 'move-storage', 'vol', '--to', extra]);
    assert.equal(moved.diskPath, path.join(extra, 'vol.qcow2'));
    const back = await c.ferryJson<{ diskPath: string }>(['vm', 'move-storage', 'vol', '--to', path.dirname(original)]);
    assert.equal(back.diskPath, original);
    const bad = await c.ferry(['cluster', 'set', 'storageRoots', '/proc,relative']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim().split('\n').length, 1);
  });

  it("moves the running VM's disk while it writes, and every acknowledged write is on the new disk", async () => {
    const original = (await c.vm('vol')).diskPath;
    // A second volume on the shared storage: the VM still live-migrates without copying its disk.
    const dir = path.join(c.dir, 'shared', 'volume-2');
    const bootId = c.console('vol').ticks.at(-1)!.bootId;
    const r = await c.ferry(['vm', 'move-storage', 'vol', '--to', dir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const moved = JSON.parse(r.stdout) as { diskPath: string; state: string; movedBytes: number };
    assert.equal(moved.diskPath, path.join(dir, 'vol.qcow2'));
    assert.equal(moved.state, 'running');
    assert.ok(moved.movedBytes > 0);
    assert.ok(!fs.existsSync(original), 'the original image is gone');
    const n = acked();
    await waitFor('writes to go on, on the new disk', 10_000, () => acked() > n + 20);
    assert.equal(c.console('vol').ticks.at(-1)!.bootId, bootId, 'no reboot');
    // It migrates from the new volume: the target opens the moved image.
    const m = await c.ferry(['vm', 'migrate', 'vol', '--to', 'node-2', '--json']);
    assert.equal(m.code, 0, m.stderr);
    assert.equal((JSON.parse(m.stdout) as MigrationReport).status, 'completed');
    const after = acked();
    await waitFor('writes after the migration', 10_000, () => acked() > after + 10);
    assert.equal((await c.ferry(['vm', 'stop', 'vol'])).code, 0);
    const lastAcked = acked();
    const records = readRecords(moved.diskPath);
    assert.deepEqual(records.holes, []);
    assert.ok(records.last >= lastAcked, `every acknowledged write is there (${records.last} ≥ ${lastAcked})`);
  });
});

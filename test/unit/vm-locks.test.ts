/** The VM lock table: which operations on one VM may overlap, as a table, and the in-memory locks that follow it. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VmLockTable } from '../../src/controller/core/locks.js';
import { ScaledClock } from '../../src/domain/clock.js';
import { isFerryError } from '../../src/domain/errors.js';
import { OVERLAP, VM_OPERATIONS, VmOperation as Op, decide } from '../../src/domain/vm-locks.js';

describe('which operations on a VM may overlap', () => {
  // asked, held → share | wait | preempt | refuse
  const table: [Op, Op, 'share' | 'wait' | 'preempt' | 'refuse'][] = [
    [Op.Migration, Op.Migration, 'refuse'],
    [Op.Migration, Op.Backup, 'share'],
    [Op.Migration, Op.DiskFreeze, 'wait'],
    [Op.Migration, Op.ReplicaSync, 'preempt'],
    [Op.Migration, Op.StorageMove, 'refuse'],
    [Op.Migration, Op.Stop, 'refuse'],
    [Op.Backup, Op.Migration, 'share'],
    [Op.Backup, Op.Backup, 'refuse'],
    [Op.DiskFreeze, Op.Migration, 'wait'],
    [Op.DiskFreeze, Op.ReplicaSync, 'wait'],
    [Op.ReplicaSync, Op.Migration, 'refuse'],
    [Op.ReplicaSync, Op.Backup, 'refuse'],
    [Op.ReplicaSync, Op.ReplicaSync, 'wait'],
    [Op.StorageMove, Op.Migration, 'refuse'],
    [Op.StorageMove, Op.Backup, 'refuse'],
    [Op.Save, Op.Migration, 'refuse'],
    [Op.Save, Op.ReplicaSync, 'preempt'],
    [Op.Stop, Op.Migration, 'refuse'],
    [Op.Stop, Op.Backup, 'share'],
    [Op.Stop, Op.DiskFreeze, 'wait'],
    [Op.Stop, Op.ReplicaSync, 'preempt'],
    [Op.Delete, Op.Backup, 'refuse'],
    [Op.Start, Op.Stop, 'refuse'],
    [Op.Configure, Op.Migration, 'share'],
    [Op.Configure, Op.Save, 'refuse'],
  ];
  for (const [asked, held, want] of table) {
    it(`${asked} while ${held} holds the VM: ${want}`, () => {
      const d = decide('web', asked, [{ kind: held, id: 'x-1' }]);
      const got = d.action === 'go' ? 'share' : d.action === 'refuse' ? 'refuse' : d.preempt.length ? 'preempt' : 'wait';
      assert.equal(got, want);
    });
  }

  it('has a rule for every pair of operations', () => {
    for (const a of VM_OPERATIONS) for (const b of VM_OPERATIONS) assert.ok(OVERLAP[a][b] !== undefined, `${a} × ${b}`);
  });

  it('names the operation that holds the VM when it refuses, in the words users know', () => {
    const msg = (asked: Op, held: Op) => {
      const d = decide('web', asked, [{ kind: held, id: held === Op.Migration ? 'm-1' : 'b-1' }]);
      return d.action === 'refuse' ? d.message : '';
    };
    assert.equal(msg(Op.Migration, Op.Migration), "a migration of VM 'web' is already running (m-1)");
    assert.equal(msg(Op.Stop, Op.Migration), "VM 'web' is migrating; cancel the migration first");
    assert.equal(msg(Op.Delete, Op.Backup), "a backup of VM 'web' is running (b-1); delete the VM after it");
    assert.equal(msg(Op.StorageMove, Op.Migration), "VM 'web' is migrating; move its storage after the migration");
    assert.equal(msg(Op.Start, Op.Stop), "VM 'web' has another operation in progress (stop b-1)");
  });

  it('goes when nothing holds the VM', () => assert.deepEqual(decide('web', Op.Migration, []), { action: 'go' }));
});

describe('the lock table', () => {
  const clock = new ScaledClock(100);

  it('lets the asker wait for a holder it must wait for, then go', async () => {
    const locks = new VmLockTable(clock);
    const freeze = await locks.acquire('web', Op.DiskFreeze);
    let got = false;
    const migration = locks.acquire('web', Op.Migration, { id: 'm-1' }).then((l) => ((got = true), l));
    await clock.sleep(50);
    assert.equal(got, false, 'waits while the disk is frozen');
    freeze.release();
    const lease = await migration;
    assert.deepEqual(
      locks.holders('web').map((h) => [h.kind, h.id]),
      [['migration', 'm-1']],
    );
    lease.release();
    assert.equal(locks.isHeld('web'), false);
  });

  it("preempts a replica sync: its lease's signal says a migration wants the VM", async () => {
    const locks = new VmLockTable(clock);
    const sync = await locks.acquire('web', Op.ReplicaSync);
    const migration = locks.acquire('web', Op.Migration, { id: 'm-2' });
    await clock.sleep(10);
    assert.equal(sync.signal.aborted, true);
    sync.release();
    (await migration).release();
  });

  it('refuses at once with the message, and times out a wait', async () => {
    const locks = new VmLockTable(clock);
    const m = await locks.acquire('web', Op.Migration, { id: 'm-3' });
    await assert.rejects(locks.acquire('web', Op.Migration), (e: unknown) => isFerryError(e, 'invalid-state') && /already running \(m-3\)/.test(e.message));
    assert.equal(locks.refusal('web', Op.Stop), "VM 'web' is migrating; cancel the migration first");
    await assert.rejects(locks.acquire('web', Op.DiskFreeze, { waitMs: 500 }), (e: unknown) => isFerryError(e, 'timeout'));
    m.release();
    const b = await locks.acquire('web', Op.Backup, { id: 'b-1' });
    (await locks.acquire('web', Op.Migration)).release();
    b.release();
  });
});

/**
 * Component tests: controller and agents in one process over the strict
 * fake hypervisor. One table injects a failure at every phase of a live
 * migration, a quick migration, a backup and a replica sync, another
 * crashes the controller at every phase; each row asserts the end state on
 * both hosts (the VM runs on exactly one, nothing is left on the other, the
 * record says what happened) and that the same operation then succeeds.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { backupRoutes } from '../../src/api/routes/storage.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';
import { replicaRoutes } from '../../src/api/routes/replicas.js';
import { requestMigration, vmRoutes } from '../../src/api/routes/vms.js';
import { STEPS } from '../../src/domain/migration.js';
import { ComponentCluster } from '../../src/testing/component.js';
import type { Fault } from '../../src/testing/fake-hypervisor.js';

const BACKUP_PHASES = ['freeze', 'copy', 'verify', 'merge'];
const SYNC_PHASES = ['open', 'copy', 'close', 'record'];

async function finished(c: ComponentCluster, id: string) {
  await c.until(`migration ${id} to end`, async () => (await c.api.call(migrationRoutes.show, { params: { id } })).report !== undefined);
  return (await c.api.call(migrationRoutes.show, { params: { id } })).report!;
}

/** The VM runs on exactly `node`, nothing of it elsewhere, and its record agrees. */
async function runsOnlyOn(c: ComponentCluster, vm: string, node: string): Promise<void> {
  assert.deepEqual(c.copiesOf(vm), [{ node, runState: 'running' }], `${vm} runs on ${node} and nowhere else`);
  const record = await c.api.call(vmRoutes.show, { params: { name: vm } });
  assert.deepEqual([record.node, record.state, record.migrationId], [node, 'running', undefined]);
  assert.deepEqual([...c.world.endpoints.keys()], [], 'no incoming endpoint is left');
  assert.deepEqual([...c.switch.probes], [], 'no blackout probe is left');
}

describe('live and quick migration, a failure at every phase', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 2 });
    await c.runVm('web', 'node-1');
  });
  after(() => c?.stop());
  afterEach(() => {
    c.world.clearFaults();
    assert.deepEqual(c.world.violations, [], 'the controller asked the hypervisor nothing QEMU would refuse');
  });

  // Which call of which host each phase fails in (the phase's own work).
  const liveFaults: Record<string, Fault> = {
    connect: { node: 'node-1', op: 'get', vm: 'web' },
    config: { node: 'node-1', op: 'spec', vm: 'web' },
    create: { node: 'node-2', op: 'launch', vm: 'web' },
    memory: { node: 'node-1', op: 'sendTo', vm: 'web' },
    disks: { node: 'node-2', op: 'transferProgress', vm: 'web' },
    resume: { node: 'node-2', op: 'resume', vm: 'web' },
    network: { op: 'switch.moves' },
  };
  const quickFaults: Record<string, Fault> = { ...liveFaults, memory: { node: 'node-1', op: 'pause', vm: 'web' } };

  it('names a fault for every phase of the tables', () => {
    assert.deepEqual(Object.keys(liveFaults), [...STEPS]);
    assert.deepEqual(Object.keys(quickFaults).sort(), [...STEPS].sort());
  });

  for (const [mode, faults] of [
    ['live', liveFaults],
    ['quick', quickFaults],
  ] as const) {
    for (const step of STEPS) {
      it(`${mode}: a failure in ${step} ${step === 'network' ? 'fails the migration after the handover, naming the step' : 'leaves the VM running on its source'}, and a retry succeeds`, async () => {
        const from = (await c.api.call(vmRoutes.show, { params: { name: 'web' } })).node;
        const to = from === 'node-1' ? 'node-2' : 'node-1';
        const fault = { ...faults[step]!, ...(faults[step]!.node ? { node: faults[step]!.node === 'node-1' ? from : to } : {}) };
        c.world.fault(fault);
        const m = await requestMigration(c.api, 'web', { to, mode });
        const r = await finished(c, m.id);
        c.world.clearFaults();
        if (step === 'network') {
          assert.equal(r.status, 'failed', JSON.stringify(r));
          assert.equal(
            r.error,
            `network: the switch did not see ${(await c.api.call(vmRoutes.show, { params: { name: 'web' } })).mac} on ${to} after the announce; the VM runs on ${to} without network`,
          );
          await runsOnlyOn(c, 'web', to);
          const vm = await c.api.call(vmRoutes.show, { params: { name: 'web' } });
          assert.deepEqual([vm.node, vm.state, vm.migrationId], [to, 'running', undefined], 'the record says where the VM is');
          return;
        }
        assert.equal(r.status, 'failed');
        assert.match(r.error ?? '', /injected failure/);
        assert.deepEqual(r.cleanupErrors ?? [], [], 'the undo went through');
        await runsOnlyOn(c, 'web', from);
        assert.deepEqual(
          [...c.world.files].filter((f) => f.endsWith('.state')),
          [],
          'no saved state is left',
        );
        const retry = await finished(c, (await requestMigration(c.api, 'web', { to, mode })).id);
        assert.equal(retry.status, 'completed', JSON.stringify(retry));
        await runsOnlyOn(c, 'web', to);
      });
    }
  }
});

describe('a controller that dies at any phase of a migration', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 2 });
    await c.runVm('db', 'node-1');
  });
  after(() => c?.stop());

  for (const step of STEPS) {
    it(`dying before ${step}: the next controller ${['disks', 'resume', 'network'].includes(step) ? 'finishes the move' : 'undoes it'} from the saved phase`, async () => {
      const from = (await c.api.call(vmRoutes.show, { params: { name: 'db' } })).node;
      const to = from === 'node-1' ? 'node-2' : 'node-1';
      c.phaseFaults = [{ operation: 'live-migration', phase: step, kind: 'hang' }];
      const m = await requestMigration(c.api, 'db', { to });
      await c.until(`the migration to reach ${step}`, async () => (await c.api.call(migrationRoutes.show, { params: { id: m.id } })).phase === step);
      await c.restartController();
      const r = await finished(c, m.id);
      if (['disks', 'resume', 'network'].includes(step)) {
        assert.equal(r.status, 'completed', JSON.stringify(r));
        assert.ok(r.warnings?.includes('completed by a restarted controller (or the one that took over)'));
        await runsOnlyOn(c, 'db', to);
      } else {
        assert.equal(r.status, 'failed');
        assert.equal(r.error, 'the controller restarted (or another took over) during the migration; rolled back to the source');
        await runsOnlyOn(c, 'db', from);
      }
      assert.deepEqual(c.world.violations, []);
      // The VM moves again afterwards.
      const here = (await c.api.call(vmRoutes.show, { params: { name: 'db' } })).node;
      const again = await finished(c, (await requestMigration(c.api, 'db', { to: here === 'node-1' ? 'node-2' : 'node-1' })).id);
      assert.equal(again.status, 'completed');
    });
  }
});

describe('backups, a failure or a controller crash at every phase', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 1 });
    await c.runVm('db', 'node-1');
  });
  after(() => c?.stop());

  /** The VM runs on its own image again, not frozen, and no overlay is left. */
  async function unfrozen(): Promise<void> {
    const vm = await c.api.call(vmRoutes.show, { params: { name: 'db' } });
    assert.doesNotMatch(vm.diskPath, /overlays/);
    assert.equal(c.hypervisor('node-1').guests()[0]!.frozen, undefined, 'the disk is merged back');
    assert.deepEqual(
      [...c.world.files].filter((f) => f.includes('/overlays/')),
      [],
      'no overlay is left',
    );
    assert.deepEqual(c.copiesOf('db'), [{ node: 'node-1', runState: 'running' }]);
  }

  const faults: Record<string, Fault> = {
    freeze: { node: 'node-1', op: 'freezeDisk' },
    copy: { op: 'volume.copyFrozen' },
    verify: { op: 'volume.verify' },
    merge: { node: 'node-1', op: 'mergeOverlay', times: 1 },
  };

  it('names a fault for every phase', () => assert.deepEqual(Object.keys(faults), BACKUP_PHASES));

  for (const phase of BACKUP_PHASES) {
    it(`a failure in ${phase} ${phase === 'merge' ? 'keeps the backup and says the merge failed' : 'fails the backup and merges the disk back'}`, async () => {
      c.world.fault(faults[phase]!);
      const r = await c.api.call(backupRoutes.create, { body: { vm: 'db' } }).then(
        (b) => ({ ok: true as const, b }),
        (e: Error) => ({ ok: false as const, e }),
      );
      c.world.clearFaults();
      const [b] = (await c.api.call(backupRoutes.list, { query: { vm: 'db' } })).slice(-1);
      if (phase === 'merge') {
        assert.ok(r.ok);
        assert.equal(b!.status, 'completed');
        assert.match(b!.mergeError ?? '', /injected failure of mergeOverlay/);
        // The VM runs on overlay + image; the next backup's merge puts it back.
      } else {
        assert.equal(r.ok, false);
        assert.equal(b!.status, 'failed');
        assert.match(b!.error ?? '', /injected failure/);
        assert.ok(!c.world.files.has(b!.file), 'no half-written backup file');
        await unfrozen();
      }
      if (phase !== 'merge') {
        const ok = await c.api.call(backupRoutes.create, { body: { vm: 'db' } });
        assert.equal(ok.status, 'completed');
        await unfrozen();
      }
      assert.deepEqual(c.world.violations, []);
    });
  }
});

describe('backups, a controller crash at every phase', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 1 });
    await c.runVm('db', 'node-1');
  });
  after(() => c?.stop());

  async function unfrozen(): Promise<void> {
    const vm = await c.api.call(vmRoutes.show, { params: { name: 'db' } });
    assert.doesNotMatch(vm.diskPath, /overlays/);
    assert.equal(c.hypervisor('node-1').guests()[0]!.frozen, undefined, 'the disk is merged back');
    assert.deepEqual(
      [...c.world.files].filter((f) => f.includes('/overlays/')),
      [],
      'no overlay is left',
    );
    assert.deepEqual(c.copiesOf('db'), [{ node: 'node-1', runState: 'running' }]);
  }

  for (const phase of BACKUP_PHASES) {
    it(`a controller dying before ${phase}: the next one ${phase === 'merge' ? 'merges and completes the backup' : 'fails it and merges the disk back'}`, async () => {
      c.phaseFaults = [{ operation: 'backup', phase, kind: 'hang' }];
      void c.api.call(backupRoutes.create, { body: { vm: 'db' } }).catch(() => {});
      await c.until(`the backup to reach ${phase}`, async () => (await c.api.call(backupRoutes.list, { query: { vm: 'db' } })).at(-1)?.phase === phase);
      const id = (await c.api.call(backupRoutes.list, { query: { vm: 'db' } })).at(-1)!.id;
      await c.restartController();
      await c.until('the backup to be settled', async () => {
        const b = (await c.api.call(backupRoutes.list, { query: { vm: 'db' } })).find((x) => x.id === id)!;
        return b.status === 'completed' || b.status === 'failed';
      });
      const b = (await c.api.call(backupRoutes.list, { query: { vm: 'db' } })).find((x) => x.id === id)!;
      assert.equal(b.status, phase === 'merge' ? 'completed' : 'failed', JSON.stringify(b));
      if (phase !== 'merge') assert.equal(b.error, 'the controller stopped during the backup');
      await c.until('the disk to be merged back', async () => c.hypervisor('node-1').guests()[0]!.frozen === undefined);
      await unfrozen();
    });
  }
});

describe('replica syncs, a failure or a controller crash at every phase', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 1 });
    await c.runVm('app', 'node-1');
    const s = await c.api.call(replicaRoutes.enable, { params: { vm: 'app' }, body: { to: 'http://far.component', token: 'far-token', interval: '15m' } });
    assert.equal(s.syncs, 1, 'the initial full sync ran');
  });
  after(() => c?.stop());

  // The record phase only writes this controller's own bookkeeping: its failure is injected at the phase itself.
  const faults: Record<string, Fault | 'phase'> = {
    open: { op: 'remote.openSync' },
    copy: { node: 'node-1', op: 'replicaSync' },
    close: { op: 'remote.closeSync', times: 1 },
    record: 'phase',
  };

  it('names a fault for every phase', () => assert.deepEqual(Object.keys(faults), SYNC_PHASES));

  for (const phase of SYNC_PHASES) {
    it(`a failure in ${phase} is recorded, nothing stays open on the replica side, and the next sync works`, async () => {
      const before = await c.api.call(replicaRoutes.status, {});
      const syncs = before.outgoing[0]!.syncs;
      const f = faults[phase]!;
      if (f === 'phase') c.phaseFaults = [{ operation: 'replica-sync', phase, kind: 'fail' }];
      else c.world.fault(f);
      const r = await c.api.call(replicaRoutes.sync, { params: { vm: 'app' } }).then(
        () => 'synced',
        (e: Error) => e.message,
      );
      c.world.clearFaults();
      const after = (await c.api.call(replicaRoutes.status, {})).outgoing[0]!;
      if (phase === 'record') {
        // Past the commit the replica side holds the point; the bookkeeping failure is a warning.
        assert.equal(r, 'synced');
      } else {
        assert.match(r, /injected/);
        assert.equal(after.syncs, syncs, 'no sync counted');
        assert.match(after.lastError ?? '', /injected/);
      }
      assert.equal(c.remote.open, 0, 'no export left open on the replica side');
      const next = await c.api.call(replicaRoutes.sync, { params: { vm: 'app' } });
      assert.ok(next.point, 'the next sync made a recovery point');
      assert.equal(next.status.health, 'normal');
    });
  }

  for (const phase of SYNC_PHASES) {
    it(`a controller dying before ${phase}: the next one closes the sync on the replica side`, async () => {
      c.phaseFaults = [{ operation: 'replica-sync', phase, kind: 'hang' }];
      void c.api.call(replicaRoutes.sync, { params: { vm: 'app' } }).catch(() => {});
      await c.until('the sync to reach the phase', async () => (await c.store.get<{ phase: string }>('replica-syncs/app'))?.value.phase === phase);
      await c.restartController();
      await c.until('the sync to be settled', async () => (await c.store.get('replica-syncs/app')) === undefined);
      assert.equal(c.remote.open, 0, 'no export left open on the replica side');
      const next = await c.api.call(replicaRoutes.sync, { params: { vm: 'app' } });
      assert.ok(next.point);
    });
  }
});

/**
 * Component tests: the store stops taking writes while a live migration
 * runs (etcd paused, its quorum lost for a while). Found by probing the
 * lab: a single progress save that etcd did not answer failed the memory
 * phase while QEMU's transfer went on, the outcome could not be saved
 * either, and the migration stayed "running" for good, holding its VM.
 * Now an operation waits out a short outage; after a long one it is undone
 * once the store answers; a run that ended unsaved is taken up again from
 * its saved phase. Each ends with the VM on exactly one host and free to
 * move again.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { migrationRoutes } from '../../src/api/routes/migrations.js';
import { requestMigration, vmRoutes } from '../../src/api/routes/vms.js';
import { RECORD_PATIENCE_MS } from '../../src/ports/store.js';
import { ComponentCluster } from '../../src/testing/component.js';

describe('a store that stops taking writes during a migration', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 2, factor: 50 });
    await c.runVm('web', 'node-1');
    // A transfer of 10 s by the clock, however slowly a loaded machine polls it, so the outage begins while memory flows.
    c.world.transferMs = 10_000;
  });
  after(() => c?.stop());

  const show = (id: string) => c.api.call(migrationRoutes.show, { params: { id } });
  const nodeOf = async () => (await c.api.call(vmRoutes.show, { params: { name: 'web' } })).node;
  /** Starts a migration away from where web runs and returns once its memory is moving. */
  const migrating = async () => {
    const from = await nodeOf();
    const to = from === 'node-1' ? 'node-2' : 'node-1';
    const m = await requestMigration(c.api, 'web', { to });
    await c.until('memory to flow', async () => ((await show(m.id)).progress?.transferredBytes ?? 0) > 0);
    return { id: m.id, from, to };
  };
  const report = async (id: string) => {
    await c.until(`migration ${id} to end`, async () => (await show(id)).report !== undefined, 60_000);
    return (await show(id)).report!;
  };
  /** The VM runs on `node` only, its record says so, and it moves again (its lock was let go). */
  const settledOn = async (node: string) => {
    assert.deepEqual(c.copiesOf('web'), [{ node, runState: 'running' }]);
    const vm = await c.api.call(vmRoutes.show, { params: { name: 'web' } });
    assert.deepEqual([vm.node, vm.state, vm.migrationId], [node, 'running', undefined]);
    assert.deepEqual(c.world.violations, []);
  };

  it('waits out a short outage and completes the move', async () => {
    const m = await migrating();
    c.storeAway(5_000);
    const r = await report(m.id);
    assert.equal(r.status, 'completed', JSON.stringify(r));
    await settledOn(m.to);
  });

  it('undoes a move the store did not answer for longer than an operation waits, once it answers again', async () => {
    const m = await migrating();
    c.storeAway(RECORD_PATIENCE_MS + 10_000);
    const r = await report(m.id);
    assert.equal(r.status, 'failed', JSON.stringify(r));
    assert.match(r.error ?? '', /^the cluster store did not answer put migrations\/m-\S+: deadline exceeded$/);
    await settledOn(m.from);
  });

  it('takes up a migration whose run ended unsaved, from its saved phase', async () => {
    const m = await migrating();
    // Longer than the phase and its undo both wait: the run ends with nothing saved, the record still says memory.
    c.storeAway(2 * RECORD_PATIENCE_MS + 10_000);
    const r = await report(m.id);
    assert.ok(
      (r.status === 'completed' && r.warnings?.includes('completed after its run ended while the store did not answer')) ||
        (r.status === 'failed' && r.error === 'its run ended while the store did not answer; rolled back to the source'),
      JSON.stringify(r),
    );
    await settledOn(r.status === 'completed' ? m.to : m.from);
    const again = await requestMigration(c.api, 'web', { to: r.status === 'completed' ? m.from : m.to });
    assert.equal((await report(again.id)).status, 'completed');
  });
});

/**
 * Maintenance mode (R12) with real QEMU: dry runs change nothing and name
 * blockers; a live drain empties the node through the migration queue with
 * every VM running and intact; a save drain saves them; a node in
 * maintenance takes no VMs until resumed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { keptRunning } from '../../src/guest/console.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';
import { nodeRoutes } from '../../src/api/routes/nodes.js';
import { vmRoutes } from '../../src/api/routes/vms.js';

const NODES = ['node-1', 'node-2', 'node-3'];

describe('maintenance mode', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 3, nodeMemoryMiB: 768 });
    await c.createAndStart('m1', { node: 'node-1', memoryMiB: 256, workload: 'memory:4' });
    await c.createAndStart('m2', { node: 'node-1', memoryMiB: 128, workload: 'tcp' });
    await c.createAndStart('m3', { node: 'node-1', memoryMiB: 128 });
    await c.createAndStart('other', { node: 'node-2', memoryMiB: 512 });
  });
  after(async () => {
    await c?.stop();
  });

  it('a dry run prints the plan and changes nothing', async () => {
    const r = await c.ferry(['node', 'maintenance', 'node-1', '--drain', 'live', '--dry-run', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { plan: { steps: { vm: string; to: string }[]; blockers: string[]; estimatedMs: number } };
    assert.deepEqual(res.plan.blockers, []);
    assert.deepEqual(
      res.plan.steps.map((s) => s.vm),
      ['m1', 'm2', 'm3'],
      'biggest first',
    );
    assert.ok(res.plan.steps.every((s) => s.to === 'node-2' || s.to === 'node-3'));
    assert.ok(res.plan.estimatedMs > 0);
    const human = await c.ferry(['node', 'maintenance', 'node-1', '--drain', 'live', '--dry-run']);
    assert.match(human.stdout, /drain plan node-1 \(live\): 3 VM\(s\), estimated/);
    assert.match(human.stdout, /1\. m1 \(256 MiB\) → node-3/);
    const nodes = await c.ferryJson<{ name: string; state: string }[]>(['node', 'list']);
    assert.equal(nodes.find((n) => n.name === 'node-1')!.state, 'up');
    assert.deepEqual((await c.api.call(migrationRoutes.list, {})).length, 0);
  });

  it('names blockers and refuses a drain it cannot finish, touching nothing', async () => {
    // node-2 holds 512 of 768 MiB: with node-3 in maintenance, m1 (256) fits, m2 and m3 do not.
    await c.api.call(nodeRoutes.maintenance, { params: { name: 'node-3' }, body: { drain: 'live' } });
    const dry = await c.ferry(['node', 'maintenance', 'node-1', '--drain', 'live', '--dry-run']);
    assert.equal(dry.code, 1, 'a dry run with blockers exits 1');
    assert.match(dry.stdout, /blockers:\n {2}- no node has room for VM 'm2' \(needs 128 MiB; node-2: 0 MiB free\)/);
    const real = await c.ferry(['node', 'maintenance', 'node-1', '--drain', 'live']);
    assert.equal(real.code, 2);
    assert.match(real.stderr, /^error: cannot drain 'node-1': no node has room for VM 'm2'.*; no node has room for VM 'm3'/);
    assert.equal((await c.ferryJson<{ name: string; state: string }[]>(['node', 'list'])).find((n) => n.name === 'node-1')!.state, 'up');
    for (const v of ['m1', 'm2', 'm3']) assert.equal((await c.vm(v)).node, 'node-1');
    // A node in maintenance takes no VMs.
    const mig = await c.ferry(['vm', 'migrate', 'm3', '--to', 'node-3']);
    assert.equal(mig.code, 2);
    assert.match(mig.stderr, /node 'node-3' is maintenance/);
    await c.ferryOk(['node', 'resume', 'node-3']);
    const again = await c.ferry(['node', 'resume', 'node-3']);
    assert.equal(again.code, 2);
  });

  it('drains live: the node ends empty, every VM runs elsewhere, unharmed; resume takes it back', async () => {
    const r = await c.ferry(['node', 'maintenance', 'node-1', '--drain', 'live']);
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    assert.match(r.stdout, /m1: on node-3/);
    const all = await c.instances(NODES);
    assert.deepEqual(all.get('node-1'), [], 'node-1 is empty');
    for (const v of ['m1', 'm2', 'm3']) {
      const rec = await c.vm(v);
      assert.notEqual(rec.node, 'node-1');
      assert.equal(rec.state, 'running');
      assert.ok(keptRunning(c.console(v)).ok, v);
    }
    const migrations = await c.api.call(migrationRoutes.list, {});
    assert.ok(migrations.filter((m) => m.from === 'node-1').every((m) => m.priority === 'drain' && m.status === 'completed'));
    assert.equal((await c.ferryJson<{ name: string; state: string }[]>(['node', 'list'])).find((n) => n.name === 'node-1')!.state, 'maintenance');
    const start = await c.api.call(vmRoutes.create, { body: { name: 'late', memoryMiB: 64, node: 'node-1' } }).then(() => c.ferry(['vm', 'start', 'late']));
    assert.equal(start.code, 2, 'no new VM on a node in maintenance');
    await c.ferryOk(['node', 'resume', 'node-1']);
    await c.ferryOk(['vm', 'start', 'late']);
    assert.equal((await c.vm('late')).node, 'node-1');
    await c.ferryOk(['vm', 'stop', 'late']);
  });

  it('drains by saving: every VM ends saved on the shared volume and restores', async () => {
    const on3 = (await c.ferryJson<{ name: string; node: string; state: string }[]>(['vm', 'list']))
      .filter((v) => v.node === 'node-3' && v.state === 'running')
      .map((v) => v.name);
    assert.ok(on3.length >= 1);
    const r = await c.ferry(['node', 'maintenance', 'node-3', '--drain', 'save']);
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    for (const v of on3) assert.equal((await c.vm(v)).state, 'saved');
    assert.deepEqual((await c.instances(['node-3'])).get('node-3'), []);
    // A saved VM restores on any suitable node: its own is still in maintenance.
    await c.ferryOk(['vm', 'start', on3[0]!]);
    assert.notEqual((await c.vm(on3[0]!)).node, 'node-3');
    await c.ferryOk(['node', 'resume', 'node-3']);
    await waitFor('the restored VM to tick', 20_000, () => keptRunning(c.console(on3[0]!)).ok && c.console(on3[0]!).ticks.length > 3);
  });
});

describe('maintenance refusals', () => {
  it('refuses to drain the last up node live, and an unknown node', async () => {
    const c = await TestCluster.start({ nodes: 1 });
    try {
      await c.createAndStart('only', { memoryMiB: 128 });
      const r = await c.ferry(['node', 'maintenance', 'node-1', '--drain', 'live']);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /^error: cannot drain 'node-1': no other node is up: nothing can take the VMs of 'node-1'/);
      assert.equal((await c.vm('only')).state, 'running');
      const unknown = await c.ferry(['node', 'maintenance', 'node-7', '--drain', 'live']);
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /^error: unknown node 'node-7'/);
      const badMode = await c.ferry(['node', 'maintenance', 'node-1', '--drain', 'teleport']);
      assert.equal(badMode.code, 2);
      assert.match(badMode.stderr, /^error: --drain must be live or save, got 'teleport'/);
    } finally {
      await c.stop();
    }
  });
});

/**
 * Rebalancing (R14) with real QEMU: an overloaded node sheds VMs by live
 * migration at rebalance priority until loads are within the threshold,
 * then balancing stays put; automatic mode does the same by itself and never
 * moves a VM twice within one interval.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { eventRoutes } from '../../src/api/routes/events.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';

describe('rebalancing', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 3, nodeMemoryMiB: 1024 });
    for (const v of ['b1', 'b2', 'b3']) await c.createAndStart(v, { node: 'node-1', memoryMiB: 256 });
  });
  after(async () => {
    await c?.stop();
  });

  it('plans on a dry run, moves VMs off the overloaded node, then stays stable', async () => {
    const dry = await c.ferryJson<{ plan: { moves: { vm: string; from: string; to: string }[] }; migrations: unknown[] }>(['cluster', 'balance', '--dry-run']);
    assert.equal(dry.plan.moves.length, 2);
    assert.ok(dry.plan.moves.every((m) => m.from === 'node-1'));
    assert.deepEqual(dry.migrations, []);
    assert.equal((await c.api.call(migrationRoutes.list, {})).length, 0, 'a dry run moves nothing');
    const r = await c.ferry(['cluster', 'balance']);
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    assert.match(r.stdout, /load now: node-1 \d+(\.\d)?%, node-2 0%, node-3 0%/);
    const nodes = new Set((await Promise.all(['b1', 'b2', 'b3'].map((v) => c.vm(v)))).map((v) => v.node));
    assert.deepEqual([...nodes].sort(), ['node-1', 'node-2', 'node-3'], 'one VM per node');
    const migrations = await c.api.call(migrationRoutes.list, {});
    assert.ok(migrations.every((m) => m.priority === 'rebalance' && m.status === 'completed'));
    const again = await c.ferry(['cluster', 'balance']);
    assert.match(again.stdout, /balanced: no moves/);
    assert.equal((await c.api.call(migrationRoutes.list, {})).length, migrations.length);
  });

  it('balances by itself in automatic mode, never moving a VM twice within an interval', async () => {
    // Two more on node-1: 3 vCPUs on a 2-CPU node against 1 on each other node.
    await c.createAndStart('b4', { node: 'node-1', memoryMiB: 256 });
    await c.createAndStart('b5', { node: 'node-1', memoryMiB: 256 });
    const bad = await c.ferry(['cluster', 'set', 'balanceAuto', 'maybe']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error: balanceAuto must be true or false, got 'maybe'/);
    await c.ferryOk(['cluster', 'set', 'balanceIntervalS', '5']);
    const since = Date.now();
    await c.ferryOk(['cluster', 'set', 'balanceAuto', 'true']);
    const moved = await waitFor(
      'an automatic rebalance move',
      30_000,
      async () => {
        const ms = await c.api.call(migrationRoutes.list, {});
        return ms.find((m) => m.requestedAtMs >= since && m.status === 'completed');
      },
      250,
    );
    assert.equal(moved.priority, 'rebalance');
    assert.equal(moved.from, 'node-1');
    await new Promise((r) => setTimeout(r, 6000));
    await c.ferryOk(['cluster', 'set', 'balanceAuto', 'false']);
    const all = (await c.api.call(migrationRoutes.list, {})).filter((m) => m.status === 'completed');
    for (const vm of new Set(all.map((m) => m.vm))) {
      const times = all
        .filter((m) => m.vm === vm)
        .map((m) => m.requestedAtMs)
        .sort((a, b) => a - b);
      for (let i = 1; i < times.length; i++) assert.ok(times[i]! - times[i - 1]! >= 5000, `${vm} moved twice within 5 s`);
    }
    const events = await c.api.call(eventRoutes.list, {});
    assert.ok(events.some((e) => e.type === 'cluster.balance' && /automatic/.test(e.message)));
  });
});

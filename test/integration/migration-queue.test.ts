/**
 * Migration slots and the queue (R11) with real QEMU: 4 nodes, more requests
 * than slots; the per-node limit is never exceeded (checked from the saved
 * start and end times), two migrations overlap at the default, the queue
 * keeps its order, and a queued migration can be cancelled.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MigrationRecord } from '../../src/domain/migration.js';
import { projectRoot } from '../../src/config/paths.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { finalReport, startMigration } from '../helpers/migration.js';
import { eventRoutes } from '../../src/api/routes/events.js';

const SLOW = { maxBandwidthBytesPerSec: 16 * 1024 * 1024 };

/** The most migrations any node took part in at one instant. */
function maxPerNode(ms: MigrationRecord[]): number {
  let max = 0;
  for (const m of ms) {
    for (const node of [m.from, m.to]) {
      const at = m.startedAtMs!;
      const overlapping = ms.filter((o) => (o.from === node || o.to === node) && o.startedAtMs! <= at && at < o.finishedAtMs!);
      max = Math.max(max, overlapping.length);
    }
  }
  return max;
}

function maxOverall(ms: MigrationRecord[]): number {
  return Math.max(...ms.map((m) => ms.filter((o) => o.startedAtMs! <= m.startedAtMs! && m.startedAtMs! < o.finishedAtMs!).length));
}

describe('migration slots and queue', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 4 });
    for (const [name, node] of [
      ['a1', 'node-1'],
      ['a2', 'node-1'],
      ['b1', 'node-3'],
      ['b2', 'node-3'],
    ] as const) {
      await c.createAndStart(name, { node, memoryMiB: 128, workload: 'memory:4' });
    }
  });
  after(async () => {
    await c?.stop();
  });

  it('runs two at once on disjoint pairs at the default of one per node, never more per node', async () => {
    const show = await c.ferryJson<{ settings: { migrationsPerNode: number } }>(['cluster', 'show']);
    assert.equal(show.settings.migrationsPerNode, 1);
    const ids: string[] = [];
    for (const [vm, to] of [
      ['a1', 'node-2'],
      ['a2', 'node-2'],
      ['b1', 'node-4'],
      ['b2', 'node-4'],
    ] as const) {
      ids.push((await startMigration(c, vm, to, SLOW)).id);
    }
    const list = await c.ferryJson<(MigrationRecord & { queuePosition?: number })[]>(['migration', 'list']);
    const queued = list.filter((m) => m.status === 'queued');
    assert.deepEqual(
      queued.map((m) => [m.vm, m.queuePosition]),
      [
        ['a2', 1],
        ['b2', 2],
      ],
      'queued in order with their positions',
    );
    const human = await c.ferryOk(['migration', 'list']);
    assert.match(human, /queued #1/);
    const finals = [];
    for (const id of ids) finals.push(await finalReport(c, id));
    for (const f of finals) assert.equal(f.report.status, 'completed', f.report.error);
    assert.equal(maxPerNode(finals), 1, 'no node ever had two migrations at once');
    assert.equal(maxOverall(finals), 2, 'two ran at the same time');
    assert.ok(finals[1]!.report.queuedMs > 0, 'a2 waited for its slot');
    assert.ok(finals[1]!.startedAtMs! >= finals[0]!.finishedAtMs!, 'a2 started only after a1 freed node-1/node-2');
    const events = await c.api.call(eventRoutes.list, {});
    for (const id of ids) {
      const types = events.filter((e) => e.migration === id).map((e) => e.type);
      assert.deepEqual([types[0], types[1], types.at(-1)], ['migration.queued', 'migration.started', 'migration.completed']);
    }
  });

  it('cancels a queued migration without touching the VM, and more slots start more at once', async () => {
    // a1, a2 are on node-2 now; b1, b2 on node-4.
    const first = await startMigration(c, 'a1', 'node-1', SLOW);
    const second = await startMigration(c, 'a2', 'node-1', SLOW);
    assert.equal(second.status, 'queued');
    const r = await c.ferry(['migration', 'cancel', second.id]);
    assert.equal(r.code, 0, r.stderr);
    const cancelled = await finalReport(c, second.id);
    assert.equal(cancelled.report.status, 'cancelled');
    assert.deepEqual(cancelled.report.steps, [], 'it never started');
    const a2 = await c.vm('a2');
    assert.deepEqual([a2.node, a2.state, a2.migrationId], ['node-2', 'running', undefined]);
    assert.equal((await finalReport(c, first.id)).report.status, 'completed');

    // `ferry events --follow --json` prints each new event as one JSON line.
    const follower = spawn(process.execPath, [path.join(projectRoot(), 'dist/src/cli/main.js'), '--state', c.dir, 'events', '--follow', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let followed = '';
    follower.stdout.on('data', (d: Buffer) => (followed += d.toString()));
    await waitFor('the follower to print the history', 10_000, () => followed.includes('migration.completed'));
    await c.ferryOk(['cluster', 'set', 'migrationsPerNode', '2']);
    const setting = await waitFor('the setting event to be followed', 10_000, () =>
      followed
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { type: string; data?: { value?: number } })
        .find((e) => e.type === 'cluster.setting'),
    );
    follower.kill('SIGINT');
    assert.equal(setting.data?.value, 2);
    const bad = await c.ferry(['cluster', 'set', 'migrationsPerNode', '0']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error: migrationsPerNode must be a whole number from 1 to 16, got '0'/);
    const x = await startMigration(c, 'b1', 'node-3', SLOW);
    const y = await startMigration(c, 'b2', 'node-3', SLOW);
    assert.equal(y.status, 'running', 'with two slots per node both start at once');
    const done = [await finalReport(c, x.id), await finalReport(c, y.id)];
    assert.equal(maxPerNode(done), 2);
    await waitFor('VMs settled', 10_000, async () => ((await c.vm('b2')).node === 'node-3' ? true : undefined));
  });
});

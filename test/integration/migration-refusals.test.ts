/**
 * Every refusal of `ferry vm migrate`: exit 2, one clear error line, and
 * nothing changed (the VM runs where it did, nothing on the target, no
 * migration started).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { TestCluster } from '../helpers/cluster.js';
import { finalReport, startMigration, waitForPhase } from '../helpers/migration.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';
import { vmRoutes } from '../../src/api/routes/vms.js';

const NODES = ['node-1', 'node-2', 'node-3'];

describe('live migration refusals', () => {
  let c: TestCluster;
  let other: TestCluster;
  before(async () => {
    // 512 MiB per node, so "the target lacks the memory" is easy to arrange.
    c = await TestCluster.start({ nodes: 3, nodeMemoryMiB: 512 });
    other = await TestCluster.start({ nodes: 1 });
    await c.createAndStart('web', { node: 'node-1', memoryMiB: 384 });
    await c.createAndStart('filler', { node: 'node-2', memoryMiB: 256 });
    await c.api.call(vmRoutes.create, { body: { name: 'parked', node: 'node-1', memoryMiB: 64 } });
  });
  after(async () => {
    await other?.stop();
    await c?.stop();
  });

  async function refused(args: string[], pattern: RegExp): Promise<void> {
    const migrationsBefore = await c.api.call(migrationRoutes.list, {});
    const r = await c.ferry(['vm', 'migrate', ...args]);
    assert.equal(r.code, 2, `ferry vm migrate ${args.join(' ')}: exit ${r.code}, ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one error line');
    assert.match(r.stderr.trim(), pattern);
    const web = await c.vm('web');
    assert.deepEqual([web.node, web.state, web.migrationId], ['node-1', 'running', undefined]);
    const all = await c.instances(NODES);
    assert.deepEqual(
      all
        .get('node-1')!
        .map((i) => i.name)
        .sort(),
      ['web'],
    );
    assert.deepEqual(
      all.get('node-2')!.map((i) => i.name),
      ['filler'],
    );
    assert.deepEqual(
      all.get('node-3')!.map((i) => i.name),
      [],
    );
    assert.equal((await c.api.call(migrationRoutes.list, {})).length, migrationsBefore.length, 'no migration started');
  }

  it('refuses an unknown VM', () => refused(['ghost', '--to', 'node-2'], /^error: unknown VM 'ghost'$/));
  it('refuses an unknown node', () => refused(['web', '--to', 'node-9'], /^error: unknown node 'node-9'$/));
  it("refuses the VM's own node", () => refused(['web', '--to', 'node-1'], /^error: VM 'web' already runs on node 'node-1'$/));
  it('refuses a node of another cluster, naming it (R4)', async () => {
    const foreign = readEndpoint(other.layout, 'node-1')!.url;
    await refused(
      ['web', '--to', foreign],
      new RegExp(`^error: node 'node-1' at ${foreign} is not a member of this cluster \\(it belongs to cluster [0-9a-f-]+\\)`),
    );
  });
  it('refuses a VM that is not running', () =>
    refused(['parked', '--to', 'node-2'], /^error: VM 'parked' is stopped: only a running VM can be live-migrated$/));
  it('refuses a target without the memory', () => refused(['web', '--to', 'node-2'], /^error: node 'node-2' has 256 MiB free, VM 'web' needs 384 MiB$/));
  it('refuses a usage mistake', async () => {
    const r = await c.ferry(['vm', 'migrate', 'web']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^error: 'vm migrate' needs --to NODE/);
  });

  it('refuses a second migration of a VM that is migrating', async () => {
    const m = await startMigration(c, 'web', 'node-3', { maxBandwidthBytesPerSec: 8 * 1024 * 1024 });
    await waitForPhase(c, m.id, 'memory');
    const r = await c.ferry(['vm', 'migrate', 'web', '--to', 'node-3']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.trim(), new RegExp(`^error: a migration of VM 'web' is already running \\(${m.id}\\)$`));
    const cancelled = await c.ferry(['migration', 'cancel', m.id]);
    assert.equal(cancelled.code, 0, cancelled.stderr);
    const final = await finalReport(c, m.id);
    assert.equal(final.report.status, 'cancelled');
    const again = await c.ferry(['migration', 'cancel', m.id]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already ended \(cancelled\)/);
  });
});

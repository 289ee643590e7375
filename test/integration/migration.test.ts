/**
 * Live migration with real QEMU: the guest keeps running, a TCP client in
 * another VM loses nothing, memory-heavy guests converge, the VM never runs
 * on two hosts, and the report is complete and consistent.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { keptRunning } from '../../src/guest/console.js';
import { STEPS, type MigrationReport } from '../../src/domain/migration.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { HostSampler, finalReport, startMigration } from '../helpers/migration.js';
import { vmRoutes } from '../../src/api/routes/vms.js';

const NODES = ['node-1', 'node-2', 'node-3'];

function assertReport(r: MigrationReport, vm: string, from: string, to: string): void {
  assert.equal(r.vm, vm);
  assert.equal(r.mode, 'live');
  assert.equal(r.from, from);
  assert.equal(r.to, to);
  assert.equal(r.status, 'completed', r.error);
  assert.deepEqual(
    r.steps.map((s) => s.name),
    [...STEPS],
    'all seven steps, in order',
  );
  const sum = r.steps.reduce((s, x) => s + x.ms, 0);
  assert.ok(sum <= r.totalMs, `steps sum ${sum} ≤ total ${r.totalMs}`);
  assert.ok(r.totalMs > 0);
  assert.equal(typeof r.downtimeMs, 'number');
  assert.ok(r.downtimeMs! >= 0);
  assert.equal(typeof r.guestBlackoutMs, 'number', 'the probe measured a blackout');
  assert.ok(r.guestBlackoutMs! > 0);
  assert.ok(r.transferredBytes > 0);
  assert.ok(r.rounds >= 1);
  assert.equal(r.error, undefined);
}

describe('live migration', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  it('moves a guest rewriting memory; it keeps running, never on two hosts, and answers at its new port', async () => {
    const vm = await c.createAndStart('busy', { node: 'node-1', workload: 'memory:32', memoryMiB: 256 });
    await waitFor('the memory workload to run', 30_000, () => (c.console('busy').memoryWrittenMiB ?? 0) > 32);
    const ticksBefore = c.console('busy').ticks.length;
    const sampler = new HostSampler(c, 'busy', NODES);
    const r = await c.ferry(['vm', 'migrate', 'busy', '--to', 'node-2', '--json']);
    await sampler.stop();
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assertReport(report, 'busy', 'node-1', 'node-2');
    assert.equal(sampler.maxRunning, 1, 'never running on two hosts');
    assert.deepEqual([...sampler.runningOn].sort(), ['node-1', 'node-2']);
    assert.ok(sampler.samples > 5);

    const after = await c.vm('busy');
    assert.equal(after.node, 'node-2');
    assert.equal(after.state, 'running');
    const instances = await c.instances(NODES);
    assert.deepEqual(
      instances.get('node-1')!.map((i) => i.name),
      [],
      'nothing left on the source',
    );
    assert.equal(instances.get('node-2')!.find((i) => i.name === 'busy')?.runState, 'running');

    await waitFor('ticks after the move', 10_000, () => c.console('busy').ticks.length > ticksBefore + 2);
    const kept = keptRunning(c.console('busy'));
    assert.ok(kept.ok, `no reboot, counter continuous: ${kept.reason ?? ''}`);
    const ticks = c.console('busy').ticks;
    assert.ok(ticks.at(-1)!.uptimeS > ticks[0]!.uptimeS, 'uptime continued');
    const macs = await c.switch.macs();
    assert.equal(macs.find((m) => m.mac === vm.mac)?.node, 'node-2', 'the switch moved the MAC to the target');
    const ping = await c.api.call(vmRoutes.ping, { params: { name: 'busy' }, body: {} });
    assert.equal(ping.answered, true);

    const list = await c.ferryJson<{ id: string; status: string }[]>(['migration', 'list']);
    assert.ok(list.some((m) => m.id === report.id && m.status === 'completed'));
    const shown = await c.ferryJson<{ report: MigrationReport }>(['migration', 'show', report.id]);
    assert.deepEqual(shown.report, report, 'the controller kept the report');
    await c.ferryOk(['vm', 'stop', 'busy']);
  });

  it('keeps a TCP connection from another VM: the counter stream arrives complete and in order', async () => {
    await c.createAndStart('svc', { node: 'node-1', workload: 'tcp', memoryMiB: 128 });
    await c.createAndStart('cli', { node: 'node-3', workload: 'tcp-client:svc', memoryMiB: 128 });
    await waitFor('the stream to flow', 30_000, () => (c.console('cli').tcpClient?.received ?? 0) > 200);
    const before = c.console('cli').tcpClient!;
    const m = await startMigration(c, 'svc', 'node-2');
    const final = await finalReport(c, m.id);
    assertReport(final.report, 'svc', 'node-1', 'node-2');
    const after = await waitFor('the stream to continue from the new host', 30_000, () => {
      const t = c.console('cli').tcpClient;
      return t && t.received > before.received + 300 ? t : undefined;
    });
    assert.equal(after.gaps, 0, `no gap: ${c.console('cli').tcpGaps.join('; ')}`);
    assert.equal(after.reconnects, 0, 'the same connection');
    assert.equal(after.connected, true);
    assert.equal(after.last, after.received, 'every number arrived exactly once, in order');
    await c.ferryOk(['vm', 'stop', 'cli']);
    await c.ferryOk(['vm', 'stop', 'svc']);
  });

  it('shows step and progress in vm show while a capped migration runs', async () => {
    await c.createAndStart('slow', { node: 'node-2', workload: 'memory:8', memoryMiB: 256 });
    await waitFor('the memory workload to run', 30_000, () => (c.console('slow').memoryWrittenMiB ?? 0) > 8);
    const m = await startMigration(c, 'slow', 'node-3', { maxBandwidthBytesPerSec: 24 * 1024 * 1024 });
    const shown = await waitFor(
      'progress in vm show',
      30_000,
      async () => {
        const v = await c.ferryJson<{
          state: string;
          migration?: {
            id: string;
            phase: string;
            progress?: { transferredBytes: number; remainingBytes: number; rounds: number; dirtyRateBytesPerSec: number; estimatedRemainingMs?: number };
          };
        }>(['vm', 'show', 'slow']);
        return v.migration?.phase === 'memory' && (v.migration.progress?.transferredBytes ?? 0) > 0 ? v : undefined;
      },
      50,
    );
    assert.equal(shown.migration!.id, m.id);
    const p = shown.migration!.progress!;
    assert.ok(p.remainingBytes > 0);
    assert.ok(p.rounds >= 1);
    assert.equal(typeof p.dirtyRateBytesPerSec, 'number');
    assert.equal(typeof p.estimatedRemainingMs, 'number');
    const human = await c.ferryOk(['vm', 'show', 'slow']);
    assert.match(human, /migration\s+m-\S+: node-2 → node-3, step (memory|disks|resume|network)/);
    const final = await finalReport(c, m.id);
    assertReport(final.report, 'slow', 'node-2', 'node-3');
    await c.ferryOk(['vm', 'stop', 'slow']);
  });
});

/**
 * Quick migration (R7) and save/restore with real QEMU: the guest is paused,
 * its state goes through the shared volume and comes back on a node; it does
 * not reboot, its TCP peer keeps the connection, and a failure leaves it
 * running on the source.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { keptRunning } from '../../src/guest/console.js';
import { STEPS, type MigrationReport } from '../../src/domain/migration.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { assertStillOnSource, finalReport, startMigration, waitForPhase } from '../helpers/migration.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';
import { requestMigration } from '../../src/api/routes/vms.js';

const NODES = ['node-1', 'node-2', 'node-3'];

describe('quick migration and save/restore', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  const statesLeft = () => (fs.existsSync(c.layout.states) ? fs.readdirSync(c.layout.states) : []);

  it('pauses, saves to the shared volume and restores on the target; the TCP peer keeps its connection', async () => {
    await c.createAndStart('qsvc', { node: 'node-1', workload: 'tcp', memoryMiB: 128 });
    await c.createAndStart('qcli', { node: 'node-2', workload: 'tcp-client:qsvc', memoryMiB: 128 });
    await waitFor('the stream', 30_000, () => (c.console('qcli').tcpClient?.received ?? 0) > 200);
    const before = c.console('qcli').tcpClient!;
    const r = await c.ferry(['vm', 'migrate', 'qsvc', '--to', 'node-3', '--quick', '--json']);
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.equal(report.mode, 'quick');
    assert.equal(report.status, 'completed', report.error);
    assert.deepEqual(
      report.steps.map((s) => s.name),
      [...STEPS],
    );
    assert.equal(typeof report.pausedMs, 'number');
    assert.ok(report.pausedMs! > 0 && report.pausedMs! <= report.totalMs, `pausedMs ${report.pausedMs} within totalMs ${report.totalMs}`);
    assert.ok(report.guestBlackoutMs! >= report.pausedMs! * 0.5, 'the probe saw the pause');
    assert.equal((await c.vm('qsvc')).node, 'node-3');
    assert.deepEqual(statesLeft(), [], 'the saved state is removed after the move');
    const after = await waitFor('the stream to continue', 30_000, () => {
      const t = c.console('qcli').tcpClient;
      return t && t.received > before.received + 300 ? t : undefined;
    });
    assert.deepEqual([after.gaps, after.reconnects, after.connected], [0, 0, true]);
    assert.equal(after.last, after.received);
    const kept = keptRunning(c.console('qsvc'));
    assert.ok(kept.ok, kept.reason);
    await c.ferryOk(['vm', 'stop', 'qcli']);
    await c.ferryOk(['vm', 'stop', 'qsvc']);
  });

  it('a quick migration whose target dies leaves the VM running on the source, and the next one succeeds', async () => {
    await c.createAndStart('qbusy', { node: 'node-1', workload: 'memory:8', memoryMiB: 256 });
    await waitFor('the workload', 30_000, () => (c.console('qbusy').memoryWrittenMiB ?? 0) > 8);
    const m = await startMigration(c, 'qbusy', 'node-2', { maxBandwidthBytesPerSec: 8 * 1024 * 1024 });
    assert.equal((await c.api.call(migrationRoutes.show, { params: { id: m.id } })).mode, 'live');
    await finalReport(c, (await c.api.call(migrationRoutes.cancel, { params: { id: m.id } })).id);
    const q = await requestMigration(c.api, 'qbusy', {
      to: 'node-2',
      mode: 'quick',
      tuning: { maxBandwidthBytesPerSec: 8 * 1024 * 1024 },
    });
    assert.equal(q.mode, 'quick');
    const running = await waitForPhase(c, q.id, 'memory', 2 * 1024 * 1024);
    const target = (await c.agent(running.to).list()).find((i) => i.name === 'qbusy')!;
    process.kill(target.pid, 'SIGKILL');
    const final = await finalReport(c, q.id);
    assert.equal(final.report.status, 'failed');
    await assertStillOnSource(c, 'qbusy', 'node-1', NODES);
    assert.deepEqual(statesLeft(), []);
    const retry = await requestMigration(c.api, 'qbusy', { to: 'node-2', mode: 'quick' });
    assert.equal((await finalReport(c, retry.id)).report.status, 'completed');
    await c.ferryOk(['vm', 'stop', 'qbusy']);
  });

  it('saves a running VM and restores it with its memory intact', async () => {
    await c.createAndStart('sleeper', { node: 'node-1', workload: 'memory:4', memoryMiB: 128 });
    const boot = c.console('sleeper').boots[0]!;
    await waitFor('a few ticks', 20_000, () => c.console('sleeper').ticks.length >= 3);
    const saved = await c.ferryJson<{ state: string; savedState: string }>(['vm', 'save', 'sleeper']);
    assert.equal(saved.state, 'saved');
    assert.ok(fs.existsSync(saved.savedState), 'the state is on the shared volume');
    const all = await c.instances(NODES);
    assert.ok(
      [...all.values()].every((l) => !l.some((i) => i.name === 'sleeper')),
      'no QEMU runs it while saved',
    );
    const ticksAtSave = c.console('sleeper').ticks.length;
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(c.console('sleeper').ticks.length, ticksAtSave, 'a saved VM does not run');
    const started = await c.ferry(['vm', 'start', 'sleeper']);
    assert.equal(started.code, 0, started.stderr);
    assert.match(started.stdout, /restored from its saved state/);
    await waitFor('ticks after the restore', 20_000, () => c.console('sleeper').ticks.length >= ticksAtSave + 2);
    const con = c.console('sleeper');
    assert.equal(con.boots.length, 1, 'no reboot');
    assert.equal(con.ticks.at(-1)!.bootId, boot.bootId);
    const kept = keptRunning(con);
    assert.ok(kept.ok, `the counter continued from where it stopped: ${kept.reason ?? ''}`);
    assert.equal(fs.existsSync(saved.savedState), false, 'the saved state is removed once restored');
    const bad = await c.ferry(['vm', 'save', 'ghost']);
    assert.equal(bad.code, 2);
    await c.ferryOk(['vm', 'stop', 'sleeper']);
  });
});

/**
 * Migration policies with real QEMU (issue 6): --plan measures and predicts
 * without moving; a policy that gives up aborts and leaves the VM running on
 * its source; a policy that allows post-copy finishes a migration pre-copy
 * cannot; cluster, VM and migration policies layer; reports carry the
 * prediction and the live figures.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { keptRunning } from '../../src/guest/console.js';
import type { MigrationReport } from '../../src/domain/migration.js';
import { TestCluster } from '../helpers/cluster.js';
import { HostSampler, assertStillOnSource } from '../helpers/migration.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';

describe('migration policies', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 2, nodeMemoryMiB: 1024 });
    await c.createAndStart('calm', { node: 'node-1', memoryMiB: 128 });
    await c.createAndStart('busy', { node: 'node-1', memoryMiB: 128, workload: 'memory:96' });
  });
  after(async () => {
    await c?.stop();
  });

  const migrations = () => c.api.call(migrationRoutes.list, {});

  it('--plan measures the guest and the link, predicts and names the strategy, and moves nothing', async () => {
    const human = await c.ferry(['vm', 'migrate', 'calm', '--to', 'node-2', '--plan']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(
      human.stdout,
      /^plan: calm node-1 → node-2 over migration\n {2}measured: guest RAM 128\.0 MiB, not zero [\d.]+ MiB, dirty rate .*, link [\d.]+ [MG]iB\/s\n {2}strategy: pre-copy: /,
    );
    assert.match(human.stdout, /predicted: total \d+ ms \(transfer \d+ ms\), \d+ rounds, downtime \d+ ms/);
    const plan = await c.ferryJson<{ ok: boolean; predicted: { strategy: string; input: { nonZeroBytes: number; ramBytes: number } } }>([
      'vm',
      'migrate',
      'busy',
      '--to',
      'node-2',
      '--plan',
      '--policy',
      'qemu-defaults',
      '--bandwidth',
      '16',
    ]);
    assert.equal(plan.ok, true);
    assert.equal(plan.predicted.strategy, 'pre-copy (expected to abort)', 'at 16 MiB/s without convergence help a 96 MiB/s guest cannot finish');
    assert.ok(plan.predicted.input.nonZeroBytes > 0 && plan.predicted.input.nonZeroBytes <= plan.predicted.input.ramBytes);
    assert.deepEqual(await migrations(), [], 'planning moved nothing');
    assert.equal((await c.vm('calm')).node, 'node-1');
  });

  it('carries the prediction and the live figures in the report', async () => {
    const r = await c.ferry(['vm', 'migrate', 'calm', '--to', 'node-2', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.equal(report.status, 'completed');
    assert.equal(report.predicted?.strategy, 'pre-copy');
    assert.ok(report.predicted!.totalMs > 0 && report.transferMs! > 0);
    assert.equal(typeof report.dirtyRateBytesPerSec, 'number');
    assert.deepEqual(report.policy, {
      bandwidthMiBps: null,
      downtimeMs: 30,
      completionTimeoutSPerGiB: 150,
      progressTimeoutS: 30,
      escalation: ['auto-converge'],
      multifdChannels: 1,
      xbzrle: false,
    });
  });

  it('aborts when pre-copy makes no progress, leaving the VM running on its source', async () => {
    const sampler = new HostSampler(c, 'busy', ['node-1', 'node-2']);
    const policy = path.join(c.dir, 'giveup.json');
    fs.writeFileSync(policy, JSON.stringify({ bandwidthMiBps: 24, escalation: [], progressTimeoutS: 2 }));
    const r = await c.ferry(['vm', 'migrate', 'busy', '--to', 'node-2', '--policy', policy, '--json']);
    await sampler.stop();
    assert.equal(r.code, 1);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.equal(report.status, 'failed');
    assert.match(report.error!, /^pre-copy did not converge: no progress for 2 s \(remaining stuck above \d+ MiB\); aborted, the VM keeps running on node-1$/);
    assert.equal(report.escalation?.startsWith('pre-copy did not converge'), true);
    await assertStillOnSource(c, 'busy', 'node-1', ['node-1', 'node-2']);
    assert.ok(sampler.maxRunning <= 1, 'never two hosts running the VM');
  });

  it('switches to post-copy when the policy allows it, and the guest finishes on the target without a reboot', async () => {
    const bootId = c.console('busy').ticks.at(-1)!.bootId;
    // No auto-converge: pre-copy cannot finish at 24 MiB/s, so the plan is post-copy after round 1.
    const policy = path.join(c.dir, 'postcopy.json');
    fs.writeFileSync(policy, JSON.stringify({ bandwidthMiBps: 24, escalation: ['postcopy'], progressTimeoutS: 5 }));
    const r = await c.ferry(['vm', 'migrate', 'busy', '--to', 'node-2', '--policy', policy, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.equal(report.status, 'completed');
    assert.equal(typeof report.postcopyAfterMs, 'number', 'post-copy started');
    assert.equal(report.predicted?.strategy, 'post-copy after round 1');
    assert.ok(report.escalation, 'the report says why');
    assert.equal((await c.vm('busy')).node, 'node-2');
    const ticks = c.console('busy').ticks.length;
    await new Promise((res) => setTimeout(res, 3000));
    const con = c.console('busy');
    assert.ok(con.ticks.length >= ticks + 2);
    assert.equal(con.ticks.at(-1)!.bootId, bootId, 'the same boot: no restart');
    assert.ok(keptRunning(con).ok, keptRunning(con).reason);
  });

  it("layers the cluster default, the VM's policy and the migration's", async () => {
    const cluster = path.join(c.dir, 'policy-cluster.json');
    fs.writeFileSync(cluster, JSON.stringify({ downtimeMs: 250, progressTimeoutS: 12 }));
    assert.equal((await c.ferry(['cluster', 'policy', '--policy', cluster])).code, 0);
    const vmPolicy = path.join(c.dir, 'vm.json');
    fs.writeFileSync(vmPolicy, JSON.stringify({ downtimeMs: 80 }));
    const set = await c.ferry(['vm', 'set', 'calm', '--policy', vmPolicy]);
    assert.equal(set.code, 0, set.stderr);
    assert.equal(set.stdout.trim(), 'VM calm: migration policy {"downtimeMs":80}');
    const r = await c.ferry(['vm', 'migrate', 'calm', '--to', 'node-1', '--bandwidth', '200', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const p = (JSON.parse(r.stdout) as MigrationReport).policy!;
    assert.deepEqual([p.downtimeMs, p.progressTimeoutS, p.bandwidthMiBps], [80, 12, 200]);
    const shown = await c.ferryJson<{ overrides: Record<string, unknown> }>(['cluster', 'policy']);
    assert.deepEqual(shown.overrides, { downtimeMs: 250, progressTimeoutS: 12 });
    assert.equal((await c.ferry(['cluster', 'policy', 'reset'])).code, 0);
    const bad = await c.ferry(['vm', 'migrate', 'calm', '--to', 'node-2', '--policy', 'turbo']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim(), "error: 'turbo' is neither a policy file nor a named policy (ferry, qemu-defaults)");
    const badField = path.join(c.dir, 'bad.json');
    fs.writeFileSync(badField, JSON.stringify({ downtime: 5 }));
    const r2 = await c.ferry(['vm', 'migrate', 'calm', '--to', 'node-2', '--policy', badField]);
    assert.equal(r2.code, 2);
    assert.match(r2.stderr.trim(), /^error: unknown policy field 'downtime'/);
  });
});

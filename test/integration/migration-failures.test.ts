/**
 * Failures during a live migration leave the VM running where it was:
 * target QEMU killed, migration connection cut, source or target agent
 * killed, cancel from the CLI, Ctrl-C on `ferry vm migrate`, and a
 * controller restart. After each, nothing is left on the target, the report
 * says what happened, and the next migration of the same VM succeeds.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { readEndpoint } from '../../src/config/cluster-config.js';
import type { MigrationRecord, MigrationReport } from '../../src/domain/migration.js';
import { pidAlive } from '../../src/qemu/qemu-vm.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { HostSampler, assertStillOnSource, finalReport, startMigration, waitForPhase } from '../helpers/migration.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';

const NODES = ['node-1', 'node-2', 'node-3'];
/** Slow enough to hit the memory step: ~130 MiB of non-zero pages at 12 MiB/s. */
const SLOW = { maxBandwidthBytesPerSec: 12 * 1024 * 1024 };

describe('live migration failures leave the VM on the source', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 3 });
    await c.createAndStart('victim', { node: 'node-1', workload: 'memory:8', memoryMiB: 256 });
    await waitFor('the workload', 30_000, () => (c.console('victim').memoryWrittenMiB ?? 0) > 8);
  });
  after(async () => {
    await c?.stop();
  });

  /** Runs one failure case from the VM's current node to `to`, then proves a clean retry works. */
  async function failureCase(
    to: string,
    inject: (m: MigrationRecord, source: string) => Promise<void>,
    expected: { status: 'failed' | 'cancelled'; error: RegExp },
    afterInject: () => Promise<void> = async () => {},
    agentWasDown = false,
  ): Promise<MigrationReport> {
    const source = (await c.vm('victim')).node;
    const sampler = new HostSampler(c, 'victim', NODES);
    const m = await startMigration(c, 'victim', to, SLOW);
    const running = await waitForPhase(c, m.id, 'memory', 4 * 1024 * 1024);
    await inject(running, source);
    const final = await finalReport(c, m.id);
    await afterInject();
    await sampler.stop();
    assert.equal(final.report.status, expected.status, `status (error: ${final.report.error ?? '-'})`);
    assert.match(final.report.error ?? '', expected.error);
    assert.ok(sampler.maxRunning <= 1, 'never running on two hosts');
    await assertStillOnSource(c, 'victim', source, NODES, { agentWasDown });
    // A following migration of the same VM succeeds (no cap: quick).
    const retry = await startMigration(c, 'victim', to);
    const ok = await finalReport(c, retry.id);
    assert.equal(ok.report.status, 'completed', ok.report.error);
    assert.equal((await c.vm('victim')).node, to);
    return final.report;
  }

  it('target QEMU killed during the memory step', async () => {
    await failureCase(
      'node-2',
      async (m) => {
        const target = (await c.agent(m.to).list()).find((i) => i.name === 'victim')!;
        process.kill(target.pid, 'SIGKILL');
      },
      { status: 'failed', error: /.+/ },
    );
  });

  it('migration connection cut', async () => {
    await failureCase(
      'node-3',
      async (m) => {
        execFileSync('ss', ['-K', 'dst', m.target!.address, 'dport', '=', String(m.target!.port)]);
      },
      { status: 'failed', error: /QEMU reported the transfer failed|incoming migration/ },
    );
  });

  it('cancelled with ferry migration cancel', async () => {
    const report = await failureCase(
      'node-1',
      async (m) => {
        const r = await c.ferry(['migration', 'cancel', m.id]);
        assert.equal(r.code, 0, r.stderr);
      },
      { status: 'cancelled', error: /cancelled by user/ },
    );
    assert.ok(report.steps.some((s) => s.name === 'memory'));
  });

  it('Ctrl-C on a running ferry vm migrate cancels it', async () => {
    const source = (await c.vm('victim')).node;
    let cliPid = 0;
    const cli = c.ferry(['vm', 'migrate', 'victim', '--to', 'node-2', '--bandwidth', '12', '--json'], { onSpawn: (pid) => (cliPid = pid) });
    const m = await waitFor('the migration to start', 20_000, async () => {
      const list = await c.api.call(migrationRoutes.list, {});
      return list.find((x) => x.status === 'running' && x.vm === 'victim');
    });
    await waitForPhase(c, m.id, 'memory', 4 * 1024 * 1024);
    process.kill(cliPid, 'SIGINT');
    const r = await cli;
    assert.equal(r.code, 1, 'exit 1: not completed');
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.equal(report.status, 'cancelled');
    await assertStillOnSource(c, 'victim', source, NODES);
  });

  it('target agent killed', async () => {
    await failureCase(
      'node-2',
      async (m) => {
        process.kill(readEndpoint(c.layout, m.to)!.pid, 'SIGKILL');
      },
      { status: 'failed', error: /agent of node 'node-2' is unreachable/ },
      async () => {
        // The node's agent comes back (as an operator's `ferry up` would bring it).
        const r = await c.ferry(['up']);
        assert.equal(r.code, 0, r.stderr);
      },
    );
  });

  it('source agent killed', async () => {
    await failureCase(
      'node-3',
      async (m, source) => {
        process.kill(readEndpoint(c.layout, source)!.pid, 'SIGKILL');
      },
      { status: 'failed', error: /unreachable/ },
      async () => {
        const r = await c.ferry(['up']);
        assert.equal(r.code, 0, r.stderr);
      },
      true,
    );
  });

  it('controller killed mid-migration: the restarted controller settles it, the VM runs on exactly one host', async () => {
    const source = (await c.vm('victim')).node;
    const to = NODES.find((n) => n !== source)!;
    const sampler = new HostSampler(c, 'victim', NODES);
    const m = await startMigration(c, 'victim', to, SLOW);
    await waitForPhase(c, m.id, 'memory', 4 * 1024 * 1024);
    const controllerPid = readEndpoint(c.layout, 'controller')!.pid;
    process.kill(controllerPid, 'SIGKILL');
    await waitFor('the controller to die', 5000, () => !pidAlive(controllerPid));
    const r = await c.ferry(['up']);
    assert.equal(r.code, 0, r.stderr);
    c.client = (await import('../../src/cli/context.js')).Cluster.connect(c.layout);
    const final = await finalReport(c, m.id, 60_000);
    await sampler.stop();
    assert.ok(['completed', 'failed'].includes(final.report.status));
    assert.ok(sampler.maxRunning <= 1, 'never running on two hosts');
    const vm = await waitFor('the VM to settle', 20_000, async () => {
      const v = await c.vm('victim');
      return v.migrationId ? undefined : v;
    });
    const all = await c.instances(NODES);
    const hosts = [...all.entries()].filter(([, list]) => list.some((i) => i.name === 'victim')).map(([n]) => n);
    assert.deepEqual(hosts, [vm.node], 'exactly one host runs it, the one the store names');
    if (final.report.status === 'failed') assert.equal(vm.node, source);
    const retry = await startMigration(
      c,
      'victim',
      NODES.find((n) => n !== vm.node)!,
    );
    assert.equal((await finalReport(c, retry.id)).report.status, 'completed');
  });
});

/**
 * Helpers for migration tests: watch every host while a migration runs, and
 * check the invariants every migration test asserts (DESIGN.md).
 */
import assert from 'node:assert/strict';
import type { MigrationRecord, MigrationReport } from '../../src/domain/migration.js';
import { keptRunning } from '../../src/guest/console.js';
import type { TestCluster } from './cluster.js';
import { waitFor } from './cluster.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';
import { requestMigration } from '../../src/api/routes/vms.js';

/** Samples every node's agent until stopped: how many hosts ran the VM at once. */
export class HostSampler {
  private stopped = false;
  private readonly loop: Promise<void>;
  maxRunning = 0;
  samples = 0;
  /** Samples in which no host ran the VM (switchover, or a failure). */
  zeroRunning = 0;
  readonly runningOn = new Set<string>();

  constructor(c: TestCluster, vm: string, nodes: string[], intervalMs = 20) {
    this.loop = (async () => {
      while (!this.stopped) {
        const all = await c.instances(nodes);
        let running = 0;
        for (const [node, list] of all) {
          if (list.some((i) => i.name === vm && i.runState === 'running')) {
            running++;
            this.runningOn.add(node);
          }
        }
        this.samples++;
        this.maxRunning = Math.max(this.maxRunning, running);
        if (running === 0) this.zeroRunning++;
        await new Promise((r) => setTimeout(r, intervalMs));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

export async function startMigration(c: TestCluster, vm: string, to: string, tuning: Record<string, unknown> = {}): Promise<MigrationRecord> {
  return requestMigration(c.api, vm, { to, tuning });
}

export async function finalReport(c: TestCluster, id: string, timeoutMs = 120_000): Promise<MigrationRecord & { report: MigrationReport }> {
  return waitFor(
    `migration ${id} to end`,
    timeoutMs,
    async () => {
      const m = await c.api.call(migrationRoutes.show, { params: { id: id } });
      return m.report ? (m as MigrationRecord & { report: MigrationReport }) : undefined;
    },
    100,
  );
}

export async function waitForPhase(c: TestCluster, id: string, phase: string, minTransferred = 0): Promise<MigrationRecord> {
  return waitFor(
    `migration ${id} to reach ${phase}`,
    60_000,
    async () => {
      const m = await c.api.call(migrationRoutes.show, { params: { id: id } });
      if (m.status !== 'running' && m.status !== 'queued') throw new Error(`migration ended early: ${m.status} ${m.error ?? ''}`);
      return m.phase === phase && (m.progress?.transferredBytes ?? 0) >= minTransferred ? m : undefined;
    },
    20,
  );
}

/** Invariants 1–3 and 7 after a failed migration: the VM runs on the source, alone, and kept running. */
export async function assertStillOnSource(c: TestCluster, vm: string, source: string, nodes: string[], opts: { agentWasDown?: boolean } = {}): Promise<void> {
  const record = await waitFor(`${vm} to be settled`, 20_000, async () => {
    const r = await c.vm(vm);
    return !r.migrationId ? r : undefined;
  });
  assert.equal(record.node, source, 'the store still places the VM on the source');
  assert.equal(record.state, 'running');
  const all = await waitFor('no target leftovers', 20_000, async () => {
    const m = await c.instances(nodes);
    return [...m.entries()].every(([n, list]) => n === source || !list.some((i) => i.name === vm)) ? m : undefined;
  });
  const onSource = all.get(source)!.find((i) => i.name === vm);
  assert.equal(onSource?.runState, 'running', `${vm} runs on ${source}`);
  const ticks = c.console(vm).ticks.length;
  await waitFor(`${vm} to keep ticking`, 10_000, () => c.console(vm).ticks.length >= ticks + 2);
  const kept = keptRunning(c.console(vm), { allowMissedLines: opts.agentWasDown });
  assert.ok(kept.ok, `the guest kept running: ${kept.reason ?? ''}`);
}

/**
 * Rebalancing (R14): on request (`ferry cluster balance`) or by itself
 * every balanceIntervalS when balanceAuto is on. Moves go through the
 * migration queue at rebalance priority, behind drains and users.
 */
import type { Clock } from '../domain/clock.js';
import { type BalancePlan, planBalance } from '../domain/balance.js';
import type { MigrationRecord } from '../domain/migration.js';
import type { NodeLoad } from '../domain/placement.js';
import type { VmRecord } from '../domain/records.js';
import type { EventSink } from '../ports/events.js';
import type { Logger } from '../ports/logger.js';
import type { Settings } from '../ports/settings.js';

export interface BalanceResult {
  plan: BalancePlan;
  dryRun: boolean;
  migrations: { vm: string; id: string; from: string; to: string }[];
}

export interface BalancerDeps {
  clock: Clock;
  settings: Settings;
  events: EventSink;
  log: Logger;
  vms: () => Promise<VmRecord[]>;
  loads: () => Promise<NodeLoad[]>;
  migrations: () => Promise<MigrationRecord[]>;
  migrate: (vm: string, to: string) => Promise<{ id: string }>;
}

export class Balancer {
  private lastAutoMs = 0;
  private running = false;

  constructor(private readonly d: BalancerDeps) {}

  async plan(): Promise<BalancePlan> {
    const settings = await this.d.settings.get();
    const since = this.d.clock.nowMs() - settings.balanceIntervalS * 1000;
    // A VM that moved within the interval stays put.
    const recentlyMoved = new Set((await this.d.migrations()).filter((m) => m.status === 'completed' && (m.finishedAtMs ?? 0) >= since).map((m) => m.vm));
    return planBalance(await this.d.loads(), await this.d.vms(), { thresholdPct: settings.balanceThresholdPct, recentlyMoved });
  }

  async balance(dryRun: boolean, reason = 'requested'): Promise<BalanceResult> {
    const plan = await this.plan();
    const migrations: BalanceResult['migrations'] = [];
    if (!dryRun) {
      for (const m of plan.moves) {
        const r = await this.d.migrate(m.vm, m.to);
        migrations.push({ vm: m.vm, id: r.id, from: m.from, to: m.to });
      }
      await this.d.events.emit({
        type: 'cluster.balance',
        message: plan.moves.length
          ? `balance (${reason}): ${plan.moves.map((m) => `${m.vm} ${m.from}→${m.to}`).join(', ')}`
          : `balance (${reason}): balanced, no moves`,
        data: { plan },
      });
    }
    return { plan, dryRun, migrations };
  }

  /** Checks every `tickMs` whether automatic balancing is due, until `signal` aborts. */
  async run(signal: AbortSignal, tickMs = 2000): Promise<void> {
    while (!signal.aborted) {
      await this.tick().catch((e: unknown) => this.d.log.warn({ err: String(e) }, 'automatic balancing failed'));
      await this.d.clock.sleep(tickMs, signal).catch(() => {});
    }
  }

  private async tick(): Promise<void> {
    const s = await this.d.settings.get();
    const now = this.d.clock.nowMs();
    if (!s.balanceAuto || this.running || now - this.lastAutoMs < s.balanceIntervalS * 1000) return;
    // Wait for earlier moves to finish before judging the load again.
    if ((await this.d.migrations()).some((m) => m.status === 'queued' || m.status === 'running')) return;
    this.running = true;
    try {
      this.lastAutoMs = now;
      await this.balance(false, 'automatic');
    } finally {
      this.running = false;
    }
  }
}

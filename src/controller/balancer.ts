/**
 * Runs rebalancing (R14): on request (`ferry cluster balance`) or by itself
 * every balanceIntervalS when balanceAuto is on. Moves go through the
 * migration queue at rebalance priority, behind drains and users.
 */
import type { Clock } from '../domain/clock.js';
import type { MigrationService } from './migration/service.js';
import { type BalancePlan, planBalance } from '../domain/balance.js';
import type { Controller } from './controller.js';

export interface BalanceResult {
  plan: BalancePlan;
  dryRun: boolean;
  migrations: { vm: string; id: string; from: string; to: string }[];
}

export class Balancer {
  private timer: NodeJS.Timeout | undefined;
  private lastAutoMs = 0;
  private running = false;

  constructor(
    private readonly c: Controller,
    private readonly migrations: MigrationService,
    private readonly clock: Clock,
  ) {}

  async plan(): Promise<BalancePlan> {
    const settings = await this.c.settings();
    const since = this.clock.nowMs() - settings.balanceIntervalS * 1000;
    // A VM that moved within the interval stays put.
    const recentlyMoved = new Set((await this.migrations.list()).filter((m) => m.status === 'completed' && (m.finishedAtMs ?? 0) >= since).map((m) => m.vm));
    return planBalance(await this.c.loads(), await this.c.vms(), { thresholdPct: settings.balanceThresholdPct, recentlyMoved });
  }

  async balance(dryRun: boolean, reason = 'requested'): Promise<BalanceResult> {
    const plan = await this.plan();
    const migrations: BalanceResult['migrations'] = [];
    if (!dryRun) {
      for (const m of plan.moves) {
        const r = await this.migrations.request(m.vm, { to: m.to, priority: 'rebalance' });
        migrations.push({ vm: m.vm, id: r.id, from: m.from, to: m.to });
      }
      await this.c.event({
        type: 'cluster.balance',
        message: plan.moves.length ? `balance (${reason}): ${plan.moves.map((m) => `${m.vm} ${m.from}→${m.to}`).join(', ')}` : `balance (${reason}): balanced, no moves`,
        data: { plan },
      });
    }
    return { plan, dryRun, migrations };
  }

  /** Checks every `tickMs` whether automatic balancing is due. */
  start(tickMs = 2000): void {
    this.timer ??= setInterval(() => void this.tick().catch((e: unknown) => this.c.log(`balance: ${String(e)}`)), tickMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async tick(): Promise<void> {
    const s = await this.c.settings();
    const now = this.clock.nowMs();
    if (!s.balanceAuto || this.running || now - this.lastAutoMs < s.balanceIntervalS * 1000) return;
    // Wait for earlier moves to finish before judging the load again.
    if ((await this.migrations.list()).some((m) => m.status === 'queued' || m.status === 'running')) return;
    this.running = true;
    try {
      this.lastAutoMs = now;
      await this.balance(false, 'automatic');
    } finally {
      this.running = false;
    }
  }
}

/**
 * Maintenance mode (R12): a node stops taking VMs, then every VM on it is
 * live-migrated away (through the migration queue at drain priority) or
 * saved to the shared volume. A plan with blockers changes nothing.
 */
import { ErrorCode, FerryError, errors } from '../domain/errors.js';
import type { NodeRecord } from '../domain/records.js';
import type { MigrationService } from './migration/service.js';
import { update } from '../ports/store.js';
import type { Controller } from './controller.js';
import { type DrainMode, type DrainPlan, planDrain } from '../domain/drain.js';
import { validateName } from '../domain/validate.js';

export interface DrainResult {
  plan: DrainPlan;
  dryRun: boolean;
  /** Live drains: the queued migrations, by VM. */
  migrations: { vm: string; id: string; to: string }[];
}

export class Maintenance {
  constructor(
    private readonly c: Controller,
    private readonly migrations: MigrationService,
  ) {}

  async plan(node: string, mode: DrainMode): Promise<DrainPlan> {
    validateName('node', node);
    if (mode !== 'live' && mode !== 'save') throw errors.invalid('drain', `--drain must be live or save, got '${String(mode)}'`);
    await this.c.node(node);
    return planDrain(node, mode, await this.c.vms(), await this.c.loads());
  }

  async drain(node: string, mode: DrainMode, dryRun: boolean): Promise<DrainResult> {
    const plan = await this.plan(node, mode);
    if (dryRun) return { plan, dryRun, migrations: [] };
    if (plan.blockers.length > 0) {
      throw new FerryError(ErrorCode.InsufficientResources, `cannot drain '${node}': ${plan.blockers.join('; ')}`, { details: { blockers: plan.blockers } });
    }
    await this.setState(node, 'maintenance');
    await this.c.event({ type: 'node.maintenance', node, message: `node ${node} in maintenance: ${mode} drain of ${plan.steps.length} VM(s)`, data: { plan } });
    const migrations: DrainResult['migrations'] = [];
    if (mode === 'live') {
      for (const step of plan.steps) {
        const m = await this.migrations.request(step.vm, { to: step.to, priority: 'drain' });
        migrations.push({ vm: step.vm, id: m.id, to: step.to! });
      }
    } else {
      // Saves run one after another in the background; `vm list` shows each VM turn saved.
      void (async () => {
        for (const step of plan.steps) {
          await this.c.saveVm(step.vm).catch((e: unknown) =>
            this.c.event({ type: 'node.drain-error', node, vm: step.vm, message: `saving ${step.vm} failed: ${(e as Error).message}` }),
          );
        }
        await this.c.event({ type: 'node.drained', node, message: `node ${node} drained (save)` });
      })();
    }
    return { plan, dryRun, migrations };
  }

  async resume(node: string): Promise<NodeRecord> {
    validateName('node', node);
    const current = await this.c.node(node);
    if (current.state !== 'maintenance') throw errors.invalidState(`node '${node}' is ${current.state}, not in maintenance`, { node });
    const next = await this.setState(node, 'up');
    await this.c.event({ type: 'node.resumed', node, message: `node ${node} left maintenance` });
    return next;
  }

  private setState(node: string, state: 'up' | 'maintenance'): Promise<NodeRecord> {
    return update<NodeRecord>(this.c.store, `nodes/${node}`, (cur) => {
      if (!cur) throw errors.nodeNotFound(node);
      return { ...cur, state };
    });
  }
}

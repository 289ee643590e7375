/**
 * Maintenance mode (R12): a node stops taking VMs, then every VM on it is
 * live-migrated away (through the migration queue at drain priority) or
 * saved to the shared volume. A plan with blockers changes nothing.
 */
import { ErrorCode, FerryError, errors } from '../domain/errors.js';
import { type DrainMode, type DrainPlan, planDrain } from '../domain/drain.js';
import type { NodeLoad } from '../domain/placement.js';
import type { NodeRecord, VmRecord } from '../domain/records.js';
import type { EventSink } from '../ports/events.js';
import type { NodeDirectory } from '../ports/node-directory.js';

export interface DrainResult {
  plan: DrainPlan;
  dryRun: boolean;
  /** Live drains: the queued migrations, by VM. */
  migrations: { vm: string; id: string; to: string }[];
}

export interface MaintenanceDeps {
  nodes: NodeDirectory;
  events: EventSink;
  /** VMs as the API shows them (with the migration holding each, if any). */
  vms: () => Promise<VmRecord[]>;
  loads: () => Promise<NodeLoad[]>;
  migrate: (vm: string, to: string) => Promise<{ id: string }>;
  save: (vm: string) => Promise<unknown>;
}

export class Maintenance {
  constructor(private readonly d: MaintenanceDeps) {}

  async plan(node: string, mode: DrainMode): Promise<DrainPlan> {
    await this.d.nodes.get(node);
    return planDrain(node, mode, await this.d.vms(), await this.d.loads());
  }

  async drain(node: string, mode: DrainMode, dryRun: boolean): Promise<DrainResult> {
    const plan = await this.plan(node, mode);
    if (dryRun) return { plan, dryRun, migrations: [] };
    if (plan.blockers.length > 0) {
      throw new FerryError(ErrorCode.InsufficientResources, `cannot drain '${node}': ${plan.blockers.join('; ')}`, { details: { blockers: plan.blockers } });
    }
    await this.d.nodes.setState(node, 'maintenance');
    await this.d.events.emit({
      type: 'node.maintenance',
      node,
      message: `node ${node} in maintenance: ${mode} drain of ${plan.steps.length} VM(s)`,
      data: { plan },
    });
    const migrations: DrainResult['migrations'] = [];
    if (mode === 'live') {
      for (const step of plan.steps) {
        const m = await this.d.migrate(step.vm, step.to!);
        migrations.push({ vm: step.vm, id: m.id, to: step.to! });
      }
    } else {
      // Saves run one after another in the background; `vm list` shows each VM turn saved.
      void (async () => {
        for (const step of plan.steps) {
          await this.d
            .save(step.vm)
            .catch((e: unknown) =>
              this.d.events.emit({ type: 'node.drain-error', node, vm: step.vm, message: `saving ${step.vm} failed: ${(e as Error).message}` }),
            );
        }
        await this.d.events.emit({ type: 'node.drained', node, message: `node ${node} drained (save)` });
      })();
    }
    return { plan, dryRun, migrations };
  }

  async resume(node: string): Promise<NodeRecord> {
    const current = await this.d.nodes.get(node);
    if (current.state !== 'maintenance') throw errors.invalidState(`node '${node}' is ${current.state}, not in maintenance`, { node });
    const next = await this.d.nodes.setState(node, 'up');
    await this.d.events.emit({ type: 'node.resumed', node, message: `node ${node} left maintenance` });
    return next;
  }
}

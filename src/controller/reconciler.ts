/**
 * Once a second the controller compares what the agents report with what
 * the store says: nodes that stopped answering go down, a running VM whose
 * QEMU its node no longer reports has exited, and QEMU processes a node
 * runs that the store does not place there (the leftovers of a migration
 * whose agent was unreachable during cleanup) are removed, but never at
 * the cost of the only running copy. VMs some operation holds are left alone.
 */
import type { Clock } from '../domain/clock.js';
import { QEMU_EXITED } from '../domain/ha.js';
import { describeRunState, type NicLink, RunState, runningRecord, type VmRecord, VmState } from '../domain/records.js';
import { switchOf } from '../domain/switches.js';
import type { EventSink } from '../ports/events.js';
import type { VmLocks } from '../ports/locks.js';
import type { Logger } from '../ports/logger.js';
import type { VmRepository } from '../ports/vm-repository.js';
import type { StoreNodes } from './core/nodes.js';

export interface ReconcilerDeps {
  nodes: StoreNodes;
  vms: VmRepository;
  locks: VmLocks;
  events: EventSink;
  clock: Clock;
  log: Logger;
  /** Tells the switch what exists again (it may have restarted). */
  syncSwitches: () => Promise<void>;
}

export class Reconciler {
  constructor(private readonly d: ReconcilerDeps) {}

  async tick(): Promise<void> {
    await this.d.nodes.expire();
    await this.strayInstances();
    await this.d.syncSwitches().catch((e: unknown) => this.d.log.warn({ err: String(e) }, 'switch sync failed'));
    await this.exited();
    await this.unfinishedStarts();
    await this.nicLinks();
    await this.runStates();
  }

  /** Each running VM's run state as its node last reported it (and the agent's count of I/O-error resumes). */
  private readonly states = new Map<string, { runState: RunState; resumes: number }>();

  /** A running VM whose guest stopped running (an I/O error, a pause, a panic) or runs again: an event, once. */
  private async runStates(): Promise<void> {
    const { vms, nodes, locks, events } = this.d;
    const seen = new Set<string>();
    for (const vm of await vms.list()) {
      if (vm.state !== VmState.Running) continue;
      const inst = nodes.reported(vm.node)?.vms.find((i) => i.name === vm.name);
      if (!inst || inst.runState === RunState.Incoming || inst.runState === RunState.Migrated) continue;
      seen.add(vm.name);
      const now = { runState: inst.runState, resumes: inst.ioErrorResumes ?? 0 };
      const before = this.states.get(vm.name);
      // Migrations, saves and backups pause guests on purpose: only what nobody asked for is news.
      if (before?.runState === now.runState || (before === undefined && now.runState === RunState.Running) || locks.isHeld(vm.name)) {
        this.states.set(vm.name, now);
        continue;
      }
      let message: string;
      if (now.runState === RunState.Running)
        message =
          before?.runState === RunState.IoError && now.resumes > before.resumes
            ? `VM ${vm.name} runs again: ${vm.node} resumed it once its disk had room`
            : `VM ${vm.name} runs again on ${vm.node}`;
      else if (now.runState === RunState.IoError)
        message = `VM ${vm.name} is ${describeRunState(now.runState)} on ${vm.node}; it goes on by itself once the disk has room (or: ferry vm resume ${vm.name})`;
      else message = `VM ${vm.name} is ${describeRunState(now.runState)} on ${vm.node}`;
      await events.emit({
        type: 'vm.run-state',
        vm: vm.name,
        node: vm.node,
        message,
        data: { runState: now.runState, ...(before ? { was: before.runState } : {}) },
      });
      this.states.set(vm.name, now);
    }
    for (const name of this.states.keys()) if (!seen.has(name)) this.states.delete(name);
  }

  /** Each running VM's NIC link as its node last reported it; a change is an event. */
  private readonly links = new Map<string, NicLink>();

  private async nicLinks(): Promise<void> {
    const { vms, nodes, events } = this.d;
    const seen = new Set<string>();
    for (const vm of await vms.list()) {
      if (vm.state !== VmState.Running) continue;
      const link = nodes.reported(vm.node)?.vms.find((i) => i.name === vm.name)?.network;
      if (!link) continue;
      seen.add(vm.name);
      const before = this.links.get(vm.name);
      if (before === link || (before === undefined && link === 'connected')) {
        this.links.set(vm.name, link);
        continue;
      }
      const sw = switchOf(vm);
      await events.emit({
        type: 'vm.network',
        vm: vm.name,
        node: vm.node,
        message:
          link === 'disconnected'
            ? `VM ${vm.name}'s NIC is cut off from switch ${sw} on ${vm.node} (QEMU reconnects when the switch is back)`
            : `VM ${vm.name}'s NIC is connected to switch ${sw} on ${vm.node} again`,
        data: { network: link, switch: sw },
      });
      this.links.set(vm.name, link);
    }
    for (const name of this.links.keys()) if (!seen.has(name)) this.links.delete(name);
  }

  /**
   * A VM left `starting` with no operation on it: its start ended without recording how (the store did not take
   * the last write). Its node says which: the QEMU runs there (running), or it does not (stopped, with why).
   */
  private async unfinishedStarts(): Promise<void> {
    const { vms, nodes, locks, clock, events } = this.d;
    for (const vm of await vms.list()) {
      if (vm.state !== VmState.Starting || locks.isHeld(vm.name)) continue;
      const live = nodes.reported(vm.node);
      // Only a heartbeat sent after the start's own last write tells.
      if (!live || live.atMs < (vm.stateSinceMs ?? 0) + 1500) continue;
      const runs = live.vms.some((i) => i.name === vm.name);
      const now = clock.nowMs();
      const changed = await vms
        .update(vm.name, (cur) => {
          if (cur.state !== VmState.Starting || cur.node !== vm.node || locks.isHeld(vm.name)) return cur;
          if (!runs) return { ...cur, state: VmState.Stopped, stateSinceMs: now, error: 'its start did not finish (the store did not take its outcome)' };
          return runningRecord(cur, now);
        })
        .catch(() => undefined);
      if (changed?.stateSinceMs !== now) continue;
      await events.emit({
        type: runs ? 'vm.started' : 'vm.exited',
        vm: vm.name,
        node: vm.node,
        message: runs ? `VM ${vm.name} runs on ${vm.node} (its start had not recorded it)` : `VM ${vm.name} did not start on ${vm.node}; it is stopped`,
      });
    }
  }

  /**
   * A running VM whose QEMU its node (a healthy one: it reports) no longer lists, with no operation on it, has
   * crashed: `vm.crashed` for every VM; HA VMs start again in place (failover.ts), the others stay stopped.
   */
  private async exited(): Promise<void> {
    const { vms, nodes, locks, clock, events } = this.d;
    for (const vm of await vms.list()) {
      if (vm.state !== VmState.Running || locks.isHeld(vm.name)) continue;
      const live = nodes.reported(vm.node);
      if (!live || live.atMs < (vm.stateSinceMs ?? 0) + 1500) continue;
      if (live.vms.some((i) => i.name === vm.name)) continue;
      const now = clock.nowMs();
      const changed = await vms
        .update(vm.name, (cur) =>
          cur.state === VmState.Running && cur.node === vm.node && !locks.isHeld(vm.name)
            ? { ...cur, state: VmState.Stopped, stateSinceMs: now, error: QEMU_EXITED }
            : cur,
        )
        .catch(() => undefined);
      if (changed?.error === QEMU_EXITED && changed.stateSinceMs === now) {
        await events.emit({
          type: 'vm.crashed',
          vm: vm.name,
          node: vm.node,
          message: `VM ${vm.name} crashed on ${vm.node}: its QEMU exited without being asked${vm.ha && !vm.haHeld ? ' (HA: it starts again in place)' : ''}`,
        });
      }
    }
  }

  private async strayInstances(): Promise<void> {
    const { vms, nodes, locks } = this.d;
    const byName = new Map((await vms.list()).map((v) => [v.name, v]));
    for (const live of nodes.liveNodes()) {
      for (const inst of live.vms) {
        const vm = byName.get(inst.name);
        if (vm && (vm.node === live.node || locks.isHeld(vm.name))) continue;
        if (vm && (vm.state === VmState.Starting || vm.state === VmState.Stopping)) continue;
        // Only trust heartbeats sent after the VM's last change, from both nodes.
        const since = (vm?.stateSinceMs ?? 0) + 2000;
        if (live.atMs < since) continue;
        if (vm && (nodes.reported(vm.node)?.atMs ?? Infinity) < since) continue;
        const recordedRuns = vm ? (nodes.reported(vm.node)?.vms ?? []).some((i) => i.name === vm.name && i.runState === RunState.Running) : false;
        if (inst.runState === RunState.Running && !recordedRuns) {
          if (vm && vm.state === VmState.Running) await this.follow(vm, live.node);
          continue;
        }
        await this.removeStray(inst.name, inst.pid, inst.runState, live.node);
      }
    }
  }

  /** The VM really runs there and nowhere else: the record follows it. */
  private async follow(vm: VmRecord, node: string): Promise<void> {
    await this.d.vms.update(vm.name, (cur) => ({ ...cur, node }));
    await this.d.events.emit({ type: 'vm.relocated', vm: vm.name, node, message: `VM ${vm.name} found running on ${node}; record updated` });
  }

  private async removeStray(name: string, pid: number, runState: string, node: string): Promise<void> {
    try {
      // Look again right before acting: an operation may have claimed the VM since the heartbeat.
      const fresh = await this.d.vms.find(name);
      if (this.d.locks.isHeld(name) || fresh?.node === node) return;
      const agent = await this.d.nodes.agent(node);
      if (!(await agent.kill(name, { pid }))) return;
      await this.d.events.emit({ type: 'vm.stray-removed', vm: name, node, message: `removed stray QEMU of ${name} (${runState}) on ${node}` });
    } catch (e) {
      this.d.log.warn({ vm: name, node, err: String(e) }, 'removing a stray QEMU failed');
    }
  }
}

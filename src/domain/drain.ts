/**
 * Maintenance drain planning (R12). Pure: the node, its VMs and the other
 * nodes' load in; a plan (VM → target, in order, with an estimate) and every
 * blocker out. Targets are up nodes only (never one in maintenance), with
 * room for the VM; the biggest VMs are placed first, each on the node with
 * the most memory left after the moves planned so far, which spreads the load.
 */
import { nodeRefusal, type VmRecord } from './records.js';
import { cpuBlockers } from './compat.js';
import { type NodeLoad, freeMiB, switchBlocker } from './placement.js';

export type DrainMode = 'live' | 'save';

export interface DrainStep {
  order: number;
  vm: string;
  memoryMiB: number;
  /** Target node for a live drain; absent when the VM is saved. */
  to?: string;
  estimatedMs: number;
}

export interface DrainPlan {
  node: string;
  mode: DrainMode;
  steps: DrainStep[];
  blockers: string[];
  /** Estimated time for the whole drain at one migration per node at a time. */
  estimatedMs: number;
}

/**
 * Rough per-VM time: non-zero memory at the loopback rate QEMU reaches here
 * (about 400 MiB/s measured on 256 MiB guests under TCG), plus fixed setup.
 */
export function estimateMoveMs(memoryMiB: number): number {
  return Math.round(150 + (memoryMiB / 400) * 1000);
}

export function planDrain(node: string, mode: DrainMode, vms: VmRecord[], loads: NodeLoad[]): DrainPlan {
  const blockers: string[] = [];
  const onNode = vms.filter((v) => v.node === node && (v.state === 'running' || v.state === 'migrating' || v.state === 'starting'));
  for (const v of onNode) {
    if (v.migrationId) blockers.push(`VM '${v.name}' is migrating; wait for it or cancel it`);
    else if (v.state !== 'running') blockers.push(`VM '${v.name}' is ${v.state} and cannot move`);
  }
  const movable = onNode.filter((v) => v.state === 'running' && !v.migrationId).sort((a, b) => b.memoryMiB - a.memoryMiB || a.name.localeCompare(b.name));
  const targets = loads.filter((l) => l.node.name !== node && !nodeRefusal(l.node));
  if (mode === 'live' && movable.length > 0 && targets.length === 0) {
    blockers.push(`no other node is up: nothing can take the VMs of '${node}'`);
  }
  const free = new Map(targets.map((l) => [l.node.name, freeMiB(l)]));
  const steps: DrainStep[] = [];
  for (const v of movable) {
    const step: DrainStep = { order: steps.length + 1, vm: v.name, memoryMiB: v.memoryMiB, estimatedMs: estimateMoveMs(v.memoryMiB) };
    if (mode === 'live') {
      // Only nodes whose CPU can run the guest (same vendor, every feature it uses) and that carry its switch.
      const compatible = new Set(targets.filter((l) => canHost(v, l)).map((l) => l.node.name));
      const best = [...free.entries()].filter(([n, f]) => compatible.has(n) && f >= v.memoryMiB).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0];
      if (!best) {
        if (targets.length > 0 && compatible.size === 0) {
          const cpuOk = targets.some((l) => canRunCpu(v, l));
          blockers.push(
            cpuOk
              ? `no up node carries switch '${v.switch}' of VM '${v.name}'`
              : `no up node has a CPU compatible with VM '${v.name}' (${v.guestCpu?.vendor} ${v.guestCpu?.model})`,
          );
        } else if (targets.length > 0) {
          const room = [...free.entries()]
            .filter(([n]) => compatible.has(n))
            .map(([n, f]) => `${n}: ${f} MiB free`)
            .join(', ');
          blockers.push(`no node has room for VM '${v.name}' (needs ${v.memoryMiB} MiB; ${room})`);
        }
        continue;
      }
      step.to = best[0];
      free.set(best[0], best[1] - v.memoryMiB);
    }
    steps.push(step);
  }
  // One move at a time leaves this node (one slot per node): the estimate is the sum.
  const estimatedMs = steps.reduce((s, x) => s + x.estimatedMs, 0);
  return { node, mode, steps, blockers, estimatedMs };
}

/** Whether a node can take the VM: its CPU, and its virtual switch bound there. */
export function canHost(vm: VmRecord, load: NodeLoad): boolean {
  return canRunCpu(vm, load) && switchBlocker(vm.switch ?? 'default', load) === undefined;
}

/** Whether a node's CPU can run the VM's guest CPU (true when either is unknown). */
export function canRunCpu(vm: VmRecord, load: NodeLoad): boolean {
  const cpu = load.node.capabilities?.cpu;
  return !vm.guestCpu || !cpu || cpuBlockers(vm.guestCpu, cpu, load.node.name).length === 0;
}

/**
 * Rebalancing (R14). Pure: node loads and VMs in, live migrations out.
 *
 * A node's load is the larger of its memory use (committed MiB ÷ total) and
 * its CPU use (vCPUs ÷ host CPUs), in percent. While the most and least
 * loaded up nodes differ by more than the threshold, move the VM from the
 * most loaded node that narrows that gap the most, if one does and fits.
 * VMs moved within the last interval stay put, so nothing ping-pongs.
 */
import { nodeRefusal, type VmRecord } from './records.js';
import { canHost } from './drain.js';
import type { NodeLoad } from './placement.js';

export interface BalanceMove {
  vm: string;
  from: string;
  to: string;
  memoryMiB: number;
}

export interface BalancePlan {
  /** Load in percent per up node, before and after the planned moves. */
  before: Record<string, number>;
  after: Record<string, number>;
  moves: BalanceMove[];
  thresholdPct: number;
}

interface NodeState {
  name: string;
  totalMiB: number;
  cpus: number;
  usedMiB: number;
  vcpus: number;
}

function loadPct(n: NodeState): number {
  const mem = n.totalMiB > 0 ? n.usedMiB / n.totalMiB : 1;
  const cpu = n.cpus > 0 ? n.vcpus / n.cpus : 0;
  return Math.round(Math.max(mem, cpu) * 1000) / 10;
}

export function planBalance(loads: NodeLoad[], vms: VmRecord[], opts: { thresholdPct: number; recentlyMoved: Set<string>; maxMoves?: number }): BalancePlan {
  const nodes = new Map<string, NodeState>();
  for (const l of loads) {
    if (nodeRefusal(l.node) || !l.node.capabilities) continue;
    const placed = vms.filter((v) => v.node === l.node.name && (v.state === 'running' || v.state === 'starting' || v.state === 'migrating'));
    nodes.set(l.node.name, {
      name: l.node.name,
      totalMiB: l.node.capabilities.memoryTotalMiB,
      cpus: l.node.capabilities.cpuCount ?? 1,
      usedMiB: l.committedMiB,
      vcpus: placed.reduce((s, v) => s + v.cpus, 0),
    });
  }
  const snapshot = () => Object.fromEntries([...nodes.values()].map((n) => [n.name, loadPct(n)]));
  const before = snapshot();
  const moves: BalanceMove[] = [];
  const movable = vms.filter((v) => v.state === 'running' && !v.migrationId && !opts.recentlyMoved.has(v.name));
  const moved = new Set<string>();
  for (let i = 0; i < (opts.maxMoves ?? 10) && nodes.size >= 2; i++) {
    const all = [...nodes.values()];
    const hi = [...all].sort((a, b) => loadPct(b) - loadPct(a) || a.name.localeCompare(b.name))[0]!;
    const lo = [...all].sort((a, b) => loadPct(a) - loadPct(b) || a.name.localeCompare(b.name))[0]!;
    const spread = loadPct(hi) - loadPct(lo);
    if (spread <= opts.thresholdPct) break;
    let best: { vm: VmRecord; spread: number } | undefined;
    const loLoad = loads.find((l) => l.node.name === lo.name)!;
    for (const vm of movable.filter((v) => v.node === hi.name && !moved.has(v.name))) {
      if (lo.totalMiB - lo.usedMiB < vm.memoryMiB || !canHost(vm, loLoad)) continue;
      const hi2 = { ...hi, usedMiB: hi.usedMiB - vm.memoryMiB, vcpus: hi.vcpus - vm.cpus };
      const lo2 = { ...lo, usedMiB: lo.usedMiB + vm.memoryMiB, vcpus: lo.vcpus + vm.cpus };
      const others = all.filter((n) => n !== hi && n !== lo).map(loadPct);
      const after = [loadPct(hi2), loadPct(lo2), ...others];
      const newSpread = Math.max(...after) - Math.min(...after);
      if (newSpread < spread && (!best || newSpread < best.spread || (newSpread === best.spread && vm.name < best.vm.name))) best = { vm, spread: newSpread };
    }
    if (!best) break;
    const vm = best.vm;
    moves.push({ vm: vm.name, from: hi.name, to: lo.name, memoryMiB: vm.memoryMiB });
    moved.add(vm.name);
    hi.usedMiB -= vm.memoryMiB;
    hi.vcpus -= vm.cpus;
    lo.usedMiB += vm.memoryMiB;
    lo.vcpus += vm.cpus;
  }
  return { before, after: snapshot(), moves, thresholdPct: opts.thresholdPct };
}

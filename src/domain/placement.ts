/**
 * Where a VM should start. Pure: nodes and their load in, a choice (or every
 * reason there is none) out.
 */
import { type NodeRecord, nodeRefusal } from './records.js';

export interface NodeLoad {
  node: NodeRecord;
  /** MiB committed to VMs placed on the node (running or starting). */
  committedMiB: number;
  vmCount: number;
  /** Virtual switches bound on the node (absent: not known, no restriction). */
  switches?: string[];
}

/** Why a node cannot carry a VM's NIC: its switch is not bound there ('' = disconnected NIC, fine anywhere). */
export function switchBlocker(vmSwitch: string, load: NodeLoad): string | undefined {
  if (vmSwitch === '' || !load.switches || load.switches.includes(vmSwitch)) return undefined;
  return `switch '${vmSwitch}' is not bound on ${load.node.name}`;
}

export function freeMiB(load: NodeLoad): number {
  return (load.node.capabilities?.memoryTotalMiB ?? 0) - load.committedMiB;
}

export interface PlacementResult {
  node?: string;
  /** Why each node was passed over. */
  blockers: { node: string; reason: string }[];
}

/** Picks the up node with the most free memory that fits `memoryMiB` and carries the VM's switch. */
export function placeVm(memoryMiB: number, loads: NodeLoad[], exclude: string[] = [], vmSwitch = ''): PlacementResult {
  const blockers: PlacementResult['blockers'] = [];
  let best: NodeLoad | undefined;
  for (const load of loads) {
    const name = load.node.name;
    if (exclude.includes(name)) continue;
    if (nodeRefusal(load.node)) {
      blockers.push({ node: name, reason: load.node.state !== 'up' ? `node is ${load.node.state}` : "it does not see the cluster's shared volume" });
      continue;
    }
    const noSwitch = switchBlocker(vmSwitch, load);
    if (noSwitch) {
      blockers.push({ node: name, reason: noSwitch });
      continue;
    }
    const free = freeMiB(load);
    if (free < memoryMiB) {
      blockers.push({ node: name, reason: `${free} MiB free, ${memoryMiB} MiB needed` });
      continue;
    }
    if (!best || free > freeMiB(best) || (free === freeMiB(best) && load.vmCount < best.vmCount)) best = load;
  }
  return best ? { node: best.node.name, blockers } : { blockers };
}

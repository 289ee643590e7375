/**
 * Processor compatibility rules (R9). Pure: the guest's CPU and a node's CPU
 * in, every reason the guest cannot run there out. Intel and AMD never mix;
 * otherwise the node must offer every feature the guest was given.
 */
import type { CpuIdentity } from '../model.js';

export function cpuBlockers(guest: CpuIdentity, node: CpuIdentity, nodeName: string): string[] {
  if (guest.vendor !== node.vendor) {
    return [`CPU vendor mismatch: the VM runs on ${guest.vendor} (${guest.model}), node '${nodeName}' is ${node.vendor} (${node.model})`];
  }
  const offered = new Set(node.features);
  const missing = guest.features.filter((f) => !offered.has(f));
  return missing.length ? [`node '${nodeName}' (${node.model}) lacks CPU features the VM uses: ${missing.join(', ')}`] : [];
}

/**
 * Processor compatibility rules (R9). Pure: CPU identities in, decisions out.
 *
 * - `cpuBlockers`: every reason a guest CPU cannot run on a node. Intel and
 *   AMD never mix; otherwise the node must offer every feature the guest was
 *   given.
 * - `cpuBaseline`: the guest CPU of a VM in compatibility mode, the features
 *   every cluster node of one vendor shares. QEMU has no baseline command for
 *   x86, so the baseline is spelled as the closest node model with the
 *   features the others lack turned off (`Westmere,aes=off,...`), which QEMU
 *   expands to exactly the shared set.
 */
import type { CpuIdentity } from './records.js';

export function cpuBlockers(guest: CpuIdentity, node: CpuIdentity, nodeName: string): string[] {
  if (guest.vendor !== node.vendor) {
    return [`CPU vendor mismatch: the VM runs on ${guest.vendor} (${describeModel(guest)}), node '${nodeName}' is ${node.vendor} (${node.model})`];
  }
  const offered = new Set(node.features);
  const missing = guest.features.filter((f) => !offered.has(f));
  return missing.length ? [`node '${nodeName}' (${node.model}) lacks CPU features the VM uses: ${missing.join(', ')}`] : [];
}

/** A compat guest's model string is long; name it by its base model. */
function describeModel(cpu: CpuIdentity): string {
  const [base, ...off] = cpu.model.split(',');
  return off.length ? `${base} compatibility baseline` : cpu.model;
}

export interface NodeCpu {
  node: string;
  cpu: CpuIdentity;
}

export interface CpuBaseline extends CpuIdentity {
  /** The nodes whose shared features make up the baseline. */
  nodes: string[];
  /** The model the baseline is spelled from, before features are turned off. */
  baseModel: string;
  /** Features of the base model turned off to reach the baseline. */
  disabled: string[];
}

/**
 * The features every node of `vendor` shares, spelled as a QEMU -cpu value.
 * Undefined when no node of that vendor reports its CPU.
 */
export function cpuBaseline(vendor: string, nodes: NodeCpu[]): CpuBaseline | undefined {
  const same = nodes.filter((n) => n.cpu.vendor === vendor).sort((a, b) => a.node.localeCompare(b.node));
  if (same.length === 0) return undefined;
  let shared = new Set(same[0]!.cpu.features);
  for (const n of same.slice(1)) {
    const has = new Set(n.cpu.features);
    shared = new Set([...shared].filter((f) => has.has(f)));
  }
  // The base is the model that needs the fewest features turned off; ties go to the first node by name.
  const extra = (cpu: CpuIdentity) => cpu.features.filter((f) => !shared.has(f));
  const base = same.reduce((best, n) => (extra(n.cpu).length < extra(best.cpu).length ? n : best));
  const disabled = extra(base.cpu);
  return {
    vendor,
    model: [base.cpu.model, ...disabled.map((f) => `${f}=off`)].join(','),
    features: [...shared].sort(),
    nodes: same.map((n) => n.node),
    baseModel: base.cpu.model,
    disabled,
  };
}

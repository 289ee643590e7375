/**
 * Processor compatibility mode (R9): each vendor's baseline is the set of
 * CPU features all member nodes of that vendor share. A compat VM boots
 * with it; when membership or a node's CPU changes, the baseline moves and
 * an event says so (compat VMs get it at their next start).
 */
import { type CpuBaseline, type NodeCpu, cpuBaseline } from '../domain/compat.js';
import type { CpuIdentity, VmRecord } from '../domain/records.js';
import type { EventSink } from '../ports/events.js';
import type { NodeDirectory } from '../ports/node-directory.js';

export class CpuBaselines {
  /** Each vendor's baseline as last announced (to tell when it changes). */
  private last: Map<string, CpuBaseline> | undefined;

  constructor(
    private readonly nodes: NodeDirectory,
    private readonly events: EventSink,
  ) {}

  /** Each member node's CPU as last reported (a node that is down still belongs to the cluster). */
  async memberCpus(): Promise<NodeCpu[]> {
    return (await this.nodes.list()).flatMap((n) => (this.nodes.isMember(n.name) && n.capabilities ? [{ node: n.name, cpu: n.capabilities.cpu }] : []));
  }

  async list(): Promise<CpuBaseline[]> {
    const cpus = await this.memberCpus();
    return [...new Set(cpus.map((c) => c.cpu.vendor))].sort().map((v) => cpuBaseline(v, cpus)!);
  }

  /** The CPU a fresh boot of `vm` on `node` gets. */
  async bootCpu(vm: VmRecord, node: string): Promise<CpuIdentity | undefined> {
    const nodeCpu = (await this.nodes.get(node)).capabilities?.cpu;
    if (!vm.compat || !nodeCpu) return nodeCpu;
    const baseline = cpuBaseline(nodeCpu.vendor, await this.memberCpus());
    return baseline && { vendor: baseline.vendor, model: baseline.model, features: baseline.features };
  }

  /** Recomputes the baselines and records an event for each one that moved. */
  async note(): Promise<void> {
    const now = new Map((await this.list()).map((b) => [b.vendor, b]));
    const before = this.last;
    this.last = now;
    if (!before) return;
    for (const vendor of new Set([...before.keys(), ...now.keys()])) {
      const a = before.get(vendor);
      const b = now.get(vendor);
      if (JSON.stringify(a?.features) === JSON.stringify(b?.features) && JSON.stringify(a?.nodes) === JSON.stringify(b?.nodes)) continue;
      const show = (x: CpuBaseline | undefined) =>
        x ? `${x.baseModel}${x.disabled.length ? ` minus ${x.disabled.length}` : ''} (${x.features.length} features, nodes ${x.nodes.join(',')})` : 'none';
      await this.events.emit({
        type: 'cluster.cpu-baseline',
        message: `${vendor} compatibility baseline: ${show(a)} → ${show(b)}; compat VMs get it at their next start`,
        data: { vendor, before: a?.features.length ?? 0, after: b?.features.length ?? 0 },
      });
    }
  }
}

/**
 * Virtual switches as cluster objects (R8). The store holds each switch, its
 * settings and its bindings (which node interface carries it on which node);
 * the switch daemon is told the result (`sync`). A VM's NIC attaches to one
 * switch and can only run on nodes where that switch is bound.
 *
 * Scrub removes virtual network configuration the way an operator cleans up
 * a host: switches nobody uses (`inactive`), settings back to defaults
 * (`settings`), or one named switch (`name`, refused while running VMs are
 * attached unless forced, which disconnects their NICs; the VMs keep running).
 */
import type { Clock } from '../../domain/clock.js';
import { errors } from '../../domain/errors.js';
import { isActive } from '../../domain/records.js';
import {
  DEFAULT_SWITCH,
  DEFAULT_SWITCH_SETTINGS,
  type ScrubRequest,
  type ScrubResult,
  type SwitchView,
  type VirtualSwitch,
  NODE_INTERFACES,
  switchOf,
} from '../../domain/switches.js';
import type { EventSink } from '../../ports/events.js';
import type { NodeDirectory } from '../../ports/node-directory.js';
import { type ClusterStore, update } from '../../ports/store.js';
import type { SwitchControl } from '../../ports/switch-control.js';
import type { VmRepository } from '../../ports/vm-repository.js';

export interface SwitchesDeps {
  store: ClusterStore;
  vms: VmRepository;
  nodes: NodeDirectory;
  events: EventSink;
  control: SwitchControl;
  clock: Clock;
  /** The interface a new cluster binds the default switch to on every node (default eth0). */
  defaultUplink?: string;
}

export class VirtualSwitches {
  constructor(private readonly d: SwitchesDeps) {}

  private key(name: string): string {
    return `switches/${name}`;
  }

  async list(): Promise<VirtualSwitch[]> {
    return (await this.d.store.list<VirtualSwitch>('switches/')).map((e) => e.value);
  }

  async get(name: string): Promise<VirtualSwitch> {
    const e = await this.d.store.get<VirtualSwitch>(this.key(name));
    if (!e) throw errors.invalid('switch', `no virtual switch named '${name}' (see 'ferry switch list')`);
    return e.value;
  }

  /** A new cluster starts with the default switch bound on every node's eth0 (once: scrub may remove it). */
  async initialise(nodes: string[]): Promise<void> {
    if (await this.d.store.get('cluster/switches-initialised')) return;
    await this.d.store.put(this.key(DEFAULT_SWITCH), {
      name: DEFAULT_SWITCH,
      settings: { ...DEFAULT_SWITCH_SETTINGS },
      bindings: nodes.map((node) => ({ node, iface: this.d.defaultUplink ?? 'eth0' })),
      createdAtMs: this.d.clock.nowMs(),
    } satisfies VirtualSwitch);
    await this.d.store.put('cluster/switches-initialised', true);
  }

  async views(): Promise<SwitchView[]> {
    const vms = await this.d.vms.list();
    return (await this.list()).map((s) => ({
      ...s,
      vms: vms.filter((v) => switchOf(v) === s.name).map((v) => v.name),
      runningVms: vms.filter((v) => switchOf(v) === s.name && isActive(v.state)).map((v) => v.name),
    }));
  }

  /** Switches bound on a node. */
  async boundOn(node: string): Promise<string[]> {
    return (await this.list()).filter((s) => s.bindings.some((b) => b.node === node)).map((s) => s.name);
  }

  async create(name: string, settings: { macAgeingS?: number } = {}): Promise<VirtualSwitch> {
    const sw: VirtualSwitch = {
      name,
      settings: { macAgeingS: settings.macAgeingS ?? DEFAULT_SWITCH_SETTINGS.macAgeingS },
      bindings: [],
      createdAtMs: this.d.clock.nowMs(),
    };
    await this.d.store.put(this.key(name), sw, { expectRevision: 0 }).catch(() => {
      throw errors.alreadyExists('switch', name);
    });
    await this.d.events.emit({ type: 'switch.created', message: `virtual switch ${name} created`, data: { switch: name } });
    await this.sync();
    return sw;
  }

  async set(name: string, settings: { macAgeingS: number }): Promise<VirtualSwitch> {
    const { macAgeingS } = settings;
    await this.get(name);
    const next = await update<VirtualSwitch>(this.d.store, this.key(name), (cur) => ({ ...cur!, settings: { ...cur!.settings, macAgeingS } }));
    await this.d.events.emit({ type: 'switch.set', message: `virtual switch ${name}: MAC ageing ${macAgeingS} s`, data: { switch: name } });
    await this.sync();
    return next;
  }

  /** Deletes a switch no VM is attached to, with its bindings. */
  async delete(name: string): Promise<VirtualSwitch> {
    const sw = await this.get(name);
    const attached = (await this.d.vms.list()).filter((v) => switchOf(v) === name).map((v) => v.name);
    if (attached.length) {
      throw errors.invalidState(
        `switch '${name}' has VMs attached (${attached.join(', ')}); move them to another switch or use 'ferry switch scrub --name ${name} --force'`,
      );
    }
    await this.d.store.delete(this.key(name));
    await this.d.events.emit({ type: 'switch.deleted', message: `virtual switch ${name} deleted`, data: { switch: name } });
    await this.sync();
    return sw;
  }

  private async validInterface(node: string, iface: string): Promise<void> {
    await this.d.nodes.get(node);
    if (!(NODE_INTERFACES as readonly string[]).includes(iface)) {
      throw errors.invalid('iface', `node '${node}' has no interface '${iface}' (it has ${NODE_INTERFACES.join(', ')})`);
    }
  }

  async bind(node: string, iface: string, name: string): Promise<VirtualSwitch> {
    await this.validInterface(node, iface);
    await this.get(name);
    const all = await this.list();
    const holder = all.find((s) => s.bindings.some((b) => b.node === node && b.iface === iface));
    if (holder?.name === name) return holder;
    if (holder) throw errors.invalidState(`interface ${node}/${iface} already carries switch '${holder.name}'; unbind it first`);
    const other = all.find((s) => s.name === name)!.bindings.find((b) => b.node === node);
    if (other) throw errors.invalidState(`switch '${name}' is already bound on ${node} (${node}/${other.iface})`);
    const next = await update<VirtualSwitch>(this.d.store, this.key(name), (cur) => ({ ...cur!, bindings: [...cur!.bindings, { node, iface }] }));
    await this.d.events.emit({ type: 'switch.bound', node, message: `switch ${name} bound to ${node}/${iface}`, data: { switch: name, iface } });
    await this.sync();
    return next;
  }

  /** Removes a binding; refused while VMs attached to that switch run on that node. */
  async unbind(node: string, iface: string): Promise<{ switch: string; node: string; iface: string }> {
    await this.validInterface(node, iface);
    const holder = (await this.list()).find((s) => s.bindings.some((b) => b.node === node && b.iface === iface));
    if (!holder) throw errors.invalidState(`interface ${node}/${iface} carries no switch`);
    const running = (await this.d.vms.list()).filter((v) => switchOf(v) === holder.name && v.node === node && isActive(v.state)).map((v) => v.name);
    if (running.length) {
      throw errors.invalidState(`switch '${holder.name}' on ${node}/${iface} has running VMs attached (${running.join(', ')}); stop or migrate them first`);
    }
    await update<VirtualSwitch>(this.d.store, this.key(holder.name), (cur) => ({
      ...cur!,
      bindings: cur!.bindings.filter((b) => !(b.node === node && b.iface === iface)),
    }));
    await this.d.events.emit({
      type: 'switch.unbound',
      node,
      message: `switch ${holder.name} unbound from ${node}/${iface}`,
      data: { switch: holder.name, iface },
    });
    await this.sync();
    return { switch: holder.name, node, iface };
  }

  /** Every node interface and the switch it carries, for one node or all. */
  async bindings(node?: string): Promise<{ node: string; iface: string; switch: string | null }[]> {
    if (node !== undefined) await this.d.nodes.get(node);
    const all = await this.list();
    const nodes = node !== undefined ? [node] : this.d.nodes.members();
    return nodes.flatMap((n) =>
      NODE_INTERFACES.map((iface) => ({
        node: n,
        iface,
        switch: all.find((s) => s.bindings.some((b) => b.node === n && b.iface === iface))?.name ?? null,
      })),
    );
  }

  async scrub(req: ScrubRequest): Promise<ScrubResult> {
    if (!req.inactive && !req.settings && req.name === undefined) {
      throw errors.invalid('scrub', 'say what to scrub: --inactive, --settings and/or --name NAME');
    }
    const out: ScrubResult = { removedSwitches: [], removedBindings: [], resetSettings: [], disconnectedVms: [] };
    const views = await this.views();
    let named: SwitchView | undefined;
    if (req.name !== undefined) {
      await this.get(req.name);
      named = views.find((v) => v.name === req.name)!;
      // Check before changing anything: a refusal leaves everything as it was.
      if (named.runningVms.length && !req.force) {
        throw errors.invalidState(`switch '${named.name}' has running VMs attached (${named.runningVms.join(', ')}); add --force to disconnect them`);
      }
    }
    if (req.settings) {
      for (const s of views.filter((v) => req.name === undefined || v.name === req.name)) {
        if (JSON.stringify(s.settings) === JSON.stringify(DEFAULT_SWITCH_SETTINGS)) continue;
        await update<VirtualSwitch>(this.d.store, this.key(s.name), (cur) => ({ ...cur!, settings: { ...DEFAULT_SWITCH_SETTINGS } }));
        out.resetSettings.push(s.name);
      }
    }
    const remove = async (s: SwitchView) => {
      for (const vm of s.vms) {
        await this.d.vms.update(vm, (cur) => ({ ...cur, switch: '' }));
        out.disconnectedVms.push(vm);
      }
      out.removedBindings.push(...s.bindings.map((b) => `${b.node}/${b.iface}`));
      await this.d.store.delete(this.key(s.name));
      out.removedSwitches.push(s.name);
    };
    if (req.inactive) {
      for (const s of views.filter((v) => v.bindings.length === 0 && v.vms.length === 0 && (req.name === undefined || v.name === req.name))) await remove(s);
    }
    if (named && !out.removedSwitches.includes(named.name)) await remove(named);
    await this.sync();
    await this.d.events.emit({
      type: 'switch.scrubbed',
      message: `scrub: removed switches [${out.removedSwitches.join(', ')}], bindings [${out.removedBindings.join(', ')}], reset settings of [${out.resetSettings.join(', ')}], disconnected VMs [${out.disconnectedVms.join(', ')}]`,
      data: { ...out },
    });
    return out;
  }

  /** Tells the switch daemon what exists; idempotent. */
  async sync(): Promise<void> {
    const wanted = await this.list();
    for (const s of wanted) {
      await this.d.control.apply(s.name, { nodes: s.bindings.map((b) => b.node), ageingMs: s.settings.macAgeingS * 1000 });
    }
    const names = new Set(wanted.map((s) => s.name));
    for (const running of await this.d.control.switches()) {
      if (!names.has(running.name)) await this.d.control.remove(running.name);
    }
  }
}

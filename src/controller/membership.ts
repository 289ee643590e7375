/**
 * Nodes joining and leaving the cluster. Membership changes the cluster
 * configuration, the store, the network addresses and the switch bindings;
 * the CLI starts or stops the node's agent around it. A node leaves only
 * when nothing runs there and no migration involves it. Joining or leaving
 * changes each vendor's processor compatibility baseline, which compat VMs
 * pick up at their next start.
 */
import { errors } from '../domain/errors.js';
import type { NodeMember } from '../domain/cluster.js';
import { nodeName } from '../domain/cluster.js';
import { LIMITS, type NodeRecord, VmState, isActive } from '../domain/records.js';
import { type ClusterNetwork, inSubnet } from '../domain/networks.js';
import type { MigrationRecord } from '../domain/migration.js';
import type { NicBackend } from '../domain/nic.js';
import type { ClusterConfigStore } from '../ports/cluster-config.js';
import type { EventSink } from '../ports/events.js';
import { type ClusterStore, update } from '../ports/store.js';
import type { VmRepository } from '../ports/vm-repository.js';
import type { VirtualSwitch } from '../domain/switches.js';
import type { StoreNodes } from './core/nodes.js';

export interface MembershipDeps {
  config: ClusterConfigStore;
  store: ClusterStore;
  nodes: StoreNodes;
  vms: VmRepository;
  events: EventSink;
  /** Migrations that have not ended. */
  openMigrations: () => Promise<MigrationRecord[]>;
  switches: { list(): Promise<VirtualSwitch[]>; sync(): Promise<void> };
  noteBaselines: () => Promise<void>;
}

export interface NodeAddRequest {
  name?: string;
  cpuModel?: string;
  memoryMiB?: number;
  nicBackend?: NicBackend;
  /** The host's own address on each cluster network (a real host joining); without them each network's next free address. */
  addresses?: Record<string, string>;
}

/** The next host address in a /24 (`127.B.N.0/24` → `127.B.N.<k>`), after every address in use. */
function nextAddress(net: ClusterNetwork): string {
  const used = Object.values(net.addresses).map((a) => Number(a.split('.')[3]));
  const host = Math.max(0, ...used) + 1;
  if (host > 254) throw errors.insufficientResources(`network ${net.name} (${net.subnet}) has no free address`);
  return net.subnet.replace(/\.0\/24$/, `.${host}`);
}

/** A joining host names an address in each network's subnet that no member has. */
function checkAddresses(networks: ClusterNetwork[], name: string, given: Record<string, string>): void {
  for (const key of Object.keys(given)) {
    if (!networks.some((n) => n.name === key))
      throw errors.invalid('addresses', `the cluster has no network '${key}' (it has ${networks.map((n) => n.name).join(', ')})`);
  }
  for (const net of networks) {
    const address = given[net.name];
    if (!address) throw errors.invalid('addresses', `host '${name}' has no address in network ${net.name} (${net.subnet})`);
    if (!inSubnet(address, net.subnet)) throw errors.invalid('addresses', `${address} is not in network ${net.name} (${net.subnet})`);
    const holder = Object.entries(net.addresses).find(([, a]) => a === address)?.[0];
    if (holder) throw errors.conflict(`${address} on network ${net.name} is host '${holder}''s already`, { address, holder });
  }
}

export class Membership {
  constructor(private readonly d: MembershipDeps) {}

  async add(req: NodeAddRequest): Promise<NodeMember> {
    const config = this.d.config.current();
    if (config.nodes.length >= LIMITS.nodes.max) throw errors.insufficientResources(`the cluster already has ${LIMITS.nodes.max} nodes`);
    let name = req.name;
    if (name === undefined) {
      for (let i = 1; ; i++) if (!this.d.nodes.isMember((name = nodeName(i)))) break;
    }
    if (this.d.nodes.isMember(name)) throw errors.alreadyExists('node', name);
    const member: NodeMember = { name, migrationAddress: '' };
    if (req.cpuModel !== undefined) member.cpuModel = req.cpuModel;
    if (req.memoryMiB !== undefined) member.memoryMiB = req.memoryMiB;
    if (req.nicBackend !== undefined) member.nicBackend = req.nicBackend;
    if (req.addresses) checkAddresses(config.networks ?? [], name, req.addresses);
    // An address on every network; the store's copies (which carry role and metric) get it too.
    for (const net of config.networks ?? []) {
      const address = req.addresses?.[net.name] ?? nextAddress(net);
      net.addresses[name] = address;
      if (net.role === 'migration' || net.name === 'migration') member.migrationAddress ||= address;
      await update<ClusterNetwork>(this.d.store, `networks/${net.name}`, (cur) => ({
        ...(cur ?? net),
        addresses: { ...(cur ?? net).addresses, [name!]: address },
      }));
    }
    member.migrationAddress ||= '127.0.0.1';
    config.nodes.push(member);
    await this.d.config.save(config);
    await this.d.store.put<NodeRecord>(`nodes/${name}`, { name, url: '', migrationAddress: member.migrationAddress, state: 'down' });
    // The default switch reaches every node, as on a new cluster.
    const def = await this.d.store.get<VirtualSwitch>('switches/default');
    if (def)
      await update<VirtualSwitch>(this.d.store, 'switches/default', (cur) => ({
        ...cur!,
        bindings: [...cur!.bindings, { node: name!, iface: config.defaultUplink ?? 'eth0' }],
      }));
    await this.d.switches.sync().catch(() => {});
    await this.d.noteBaselines();
    await this.d.events.emit({
      type: 'node.joined',
      node: name,
      message: `node ${name} joined the cluster${member.cpuModel ? ` (CPU ${member.cpuModel})` : ''}`,
    });
    return member;
  }

  async remove(name: string): Promise<{ removed: string; clearedVms: string[] }> {
    const config = this.d.config.current();
    if (!this.d.nodes.isMember(name)) throw errors.nodeNotFound(name);
    if (config.nodes.length === 1) throw errors.invalidState(`node '${name}' is the cluster's last node`);
    const vms = await this.d.vms.list();
    const running = vms.filter((v) => v.node === name && isActive(v.state));
    if (running.length) {
      throw errors.invalidState(
        `node '${name}' still runs VMs (${running.map((v) => v.name).join(', ')}); drain it first: ferry node maintenance ${name} --drain live`,
        { node: name },
      );
    }
    const open = (await this.d.openMigrations()).filter((m) => m.from === name || m.to === name);
    if (open.length)
      throw errors.invalidState(`migrations involve node '${name}' (${open.map((m) => m.id).join(', ')}); wait for them or cancel them`, { node: name });
    // Stopped or saved VMs placed there start elsewhere next time.
    const cleared: string[] = [];
    for (const v of vms.filter((x) => x.node === name && (x.state === VmState.Stopped || x.state === VmState.Saved || x.state === VmState.Error))) {
      await this.d.vms.update(v.name, (cur) => ({ ...cur, node: '' }));
      cleared.push(v.name);
    }
    for (const s of await this.d.switches.list()) {
      if (!s.bindings.some((b) => b.node === name)) continue;
      await update<VirtualSwitch>(this.d.store, `switches/${s.name}`, (cur) => ({ ...cur!, bindings: cur!.bindings.filter((b) => b.node !== name) }));
    }
    for (const net of config.networks ?? []) {
      delete net.addresses[name];
      await update<ClusterNetwork>(this.d.store, `networks/${net.name}`, (cur) => {
        const addresses = { ...(cur ?? net).addresses };
        delete addresses[name];
        return { ...(cur ?? net), addresses };
      });
    }
    config.nodes = config.nodes.filter((n) => n.name !== name);
    await this.d.config.save(config);
    await this.d.store.delete(`nodes/${name}`);
    this.d.nodes.forget(name);
    await this.d.switches.sync().catch(() => {});
    await this.d.noteBaselines();
    await this.d.events.emit({ type: 'node.left', node: name, message: `node ${name} left the cluster` });
    return { removed: name, clearedVms: cleared };
  }
}

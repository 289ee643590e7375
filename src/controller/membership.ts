/**
 * Nodes joining and leaving the cluster. The controller changes membership
 * (cluster.json, the store, network addresses, switch bindings); the CLI
 * starts or stops the node's agent around it. A node leaves only when
 * nothing runs there and no migration involves it. Joining or leaving
 * changes each vendor's processor compatibility baseline, which compat VMs
 * pick up at their next start.
 */
import { errors } from '../domain/errors.js';
import { LIMITS, type NodeRecord, VmState, isActive } from '../domain/records.js';
import type { ClusterNetwork } from '../domain/networks.js';
import { isFinal, type MigrationRecord } from '../domain/migration.js';
import { NIC_BACKENDS } from '../domain/nic.js';
import { update } from '../ports/store.js';
import { type NodeMember, nodeName, saveConfig } from '../config/cluster-config.js';
import type { Controller } from './controller.js';
import type { VirtualSwitch } from '../domain/switches.js';
import { validateName } from '../domain/validate.js';


export interface NodeAddRequest {
  name?: string;
  cpuModel?: string;
  memoryMiB?: number;
  nicBackend?: string;
}

/** The next host address in a /24 (`127.B.N.0/24` → `127.B.N.<k>`), after every address in use. */
function nextAddress(net: ClusterNetwork): string {
  const used = Object.values(net.addresses).map((a) => Number(a.split('.')[3]));
  const host = Math.max(0, ...used) + 1;
  if (host > 254) throw errors.insufficientResources(`network ${net.name} (${net.subnet}) has no free address`);
  return net.subnet.replace(/\.0\/24$/, `.${host}`);
}

export class Membership {
  constructor(private readonly c: Controller) {}

  async add(req: NodeAddRequest): Promise<NodeMember> {
    const config = this.c.config;
    if (config.nodes.length >= LIMITS.nodes.max) throw errors.insufficientResources(`the cluster already has ${LIMITS.nodes.max} nodes`);
    let name = req.name;
    if (name === undefined) {
      for (let i = 1; ; i++) if (!this.c.isMember((name = nodeName(i)))) break;
    }
    validateName('node', name);
    if (this.c.isMember(name)) throw errors.alreadyExists('node', name);
    const member: NodeMember = { name, migrationAddress: '' };
    if (req.cpuModel !== undefined) {
      if (typeof req.cpuModel !== 'string' || !/^[A-Za-z0-9_.-]{1,40}$/.test(req.cpuModel)) throw errors.invalid('cpuModel', `CPU model '${String(req.cpuModel)}' is malformed`);
      member.cpuModel = req.cpuModel;
    }
    if (req.memoryMiB !== undefined) {
      if (!Number.isInteger(req.memoryMiB) || req.memoryMiB < LIMITS.memoryMiB.min) throw errors.invalid('memoryMiB', `node memory must be a whole number of MiB ≥ ${LIMITS.memoryMiB.min}`);
      member.memoryMiB = req.memoryMiB;
    }
    if (req.nicBackend !== undefined) {
      if (!(NIC_BACKENDS as readonly string[]).includes(req.nicBackend)) throw errors.invalid('nicBackend', `NIC backend must be stream or tap, got '${req.nicBackend}'`);
      member.nicBackend = req.nicBackend as NodeMember['nicBackend'];
    }
    // An address on every network; the store's copies (which carry role and metric) get it too.
    for (const net of config.networks ?? []) {
      const address = nextAddress(net);
      net.addresses[name] = address;
      if (net.role === 'migration' || net.name === 'migration') member.migrationAddress ||= address;
      await update<ClusterNetwork>(this.c.store, `networks/${net.name}`, (cur) => ({ ...(cur ?? net), addresses: { ...(cur ?? net).addresses, [name!]: address } }));
    }
    member.migrationAddress ||= '127.0.0.1';
    config.nodes.push(member);
    saveConfig(this.c.layout, config);
    await this.c.store.put<NodeRecord>(`nodes/${name}`, { name, url: '', migrationAddress: member.migrationAddress, state: 'down' });
    // The default switch reaches every node, as on a new cluster.
    const def = await this.c.store.get<VirtualSwitch>('switches/default');
    if (def) await update<VirtualSwitch>(this.c.store, 'switches/default', (cur) => ({ ...cur!, bindings: [...cur!.bindings, { node: name!, iface: 'eth0' }] }));
    await this.c.switches.sync().catch(() => {});
    await this.c.noteBaselines();
    await this.c.event({ type: 'node.joined', node: name, message: `node ${name} joined the cluster${member.cpuModel ? ` (CPU ${member.cpuModel})` : ''}` });
    return member;
  }

  async remove(name: string): Promise<{ removed: string; clearedVms: string[] }> {
    validateName('node', name);
    if (!this.c.isMember(name)) throw errors.nodeNotFound(name);
    if (this.c.config.nodes.length === 1) throw errors.invalidState(`node '${name}' is the cluster's last node`);
    const vms = await this.c.vms();
    const running = vms.filter((v) => v.node === name && (isActive(v.state) || v.migrationId));
    if (running.length) {
      throw errors.invalidState(`node '${name}' still runs VMs (${running.map((v) => v.name).join(', ')}); drain it first: ferry node maintenance ${name} --drain live`, { node: name });
    }
    const migrations = (await this.c.store.list<MigrationRecord>('migrations/')).map((e) => e.value);
    const open = migrations.filter((m) => !isFinal(m.status) && (m.from === name || m.to === name));
    if (open.length) throw errors.invalidState(`migrations involve node '${name}' (${open.map((m) => m.id).join(', ')}); wait for them or cancel them`, { node: name });
    // Stopped or saved VMs placed there start elsewhere next time.
    const cleared: string[] = [];
    for (const v of vms.filter((x) => x.node === name && (x.state === VmState.Stopped || x.state === VmState.Saved || x.state === VmState.Error))) {
      await this.c.updateVm(v.name, (cur) => ({ ...cur, node: '' }));
      cleared.push(v.name);
    }
    for (const s of await this.c.switches.list()) {
      if (!s.bindings.some((b) => b.node === name)) continue;
      await update<VirtualSwitch>(this.c.store, `switches/${s.name}`, (cur) => ({ ...cur!, bindings: cur!.bindings.filter((b) => b.node !== name) }));
    }
    for (const net of this.c.config.networks ?? []) {
      delete net.addresses[name];
      await update<ClusterNetwork>(this.c.store, `networks/${net.name}`, (cur) => {
        const addresses = { ...(cur ?? net).addresses };
        delete addresses[name];
        return { ...(cur ?? net), addresses };
      });
    }
    this.c.config.nodes = this.c.config.nodes.filter((n) => n.name !== name);
    saveConfig(this.c.layout, this.c.config);
    await this.c.store.delete(`nodes/${name}`);
    this.c.forget(name);
    await this.c.switches.sync().catch(() => {});
    await this.c.noteBaselines();
    await this.c.event({ type: 'node.left', node: name, message: `node ${name} left the cluster` });
    return { removed: name, clearedVms: cleared };
  }
}

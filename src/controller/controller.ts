/**
 * The controller: the cluster's brain. It owns desired state in the store,
 * knows which agents are alive (heartbeats), decides placement and drives
 * every operation through the agents. Agents never write the store.
 *
 * Store keys:
 *   nodes/<name>        NodeRecord (membership, endpoint, capabilities, state)
 *   vms/<name>          VmRecord
 *   migrations/<id>     MigrationRecord (a saved state machine, see migration/)
 *   networks/<name>     ClusterNetwork (subnet, role, metric, node addresses)
 *   counters/vm-index   the next VM index (addresses and MACs)
 *   events/<time>-<n>   the event log
 */
import { execFile } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Clock } from '../domain/clock.js';
import { ErrorCode, FerryError, errors, toFerryError } from '../domain/errors.js';
import { tcpPeer } from '../domain/workload.js';
import { type CpuIdentity, type Heartbeat, type NodeRecord, isActive, type VmInstance, type VmRecord, type VmSpec, VmState } from '../domain/records.js';
import type { ClusterEvent } from '../domain/events.js';
export type { ClusterEvent, Heartbeat };
import type { ClusterNetwork } from '../domain/networks.js';
import type { StateLayout } from '../config/paths.js';
import { type ClusterStore, update } from '../ports/store.js';
import { DEFAULT_TUNING } from '../domain/tuning.js';
import { type MigrationPolicy, effectivePolicy, validatePolicy } from '../domain/policy.js';
import { AgentClient, SwitchClient, waitTransferCompleted } from '../node/client.js';
import type { ClusterConfig } from '../config/cluster-config.js';
import { type NodeLoad, placeVm, switchBlocker } from '../domain/placement.js';
import { type ClusterSettings, DEFAULT_SETTINGS, applySetting } from '../domain/settings.js';
import { ClusterNetworks } from './network/networks.js';
import { Membership } from './membership.js';
import { Backups } from './storage/backups.js';
import { BackupSchedules } from './storage/schedules.js';
import { killStaleStorageDaemons } from '../qemu/backup-job.js';
import { Replicas } from './replica/replicas.js';
import { DEFAULT_SWITCH } from '../switch/daemon.js';
import { VirtualSwitches, switchOf } from './network/switches.js';
import { type CpuBaseline, type NodeCpu, cpuBaseline } from '../domain/compat.js';
import { type VmCreateRequest, ipFor, macFor, validateName, validateOnOff, validateVmCreate } from '../domain/validate.js';

const run = promisify(execFile);

/** An agent not heard from for this long is down. */
export const NODE_DOWN_AFTER_MS = 5_000;

interface Liveness {
  lastSeenMs: number;
  vms: VmInstance[];
}

export interface ControllerOptions {
  layout: StateLayout;
  config: ClusterConfig;
  token: string;
  store: ClusterStore;
  clock: Clock;
  switchUrl: string;
  log?: (line: string) => void;
}

export class Controller {
  readonly store: ClusterStore;
  readonly clock: Clock;
  readonly layout: StateLayout;
  readonly config: ClusterConfig;
  readonly switch: SwitchClient;
  readonly networks: ClusterNetworks = new ClusterNetworks(this);
  readonly switches: VirtualSwitches = new VirtualSwitches(this);
  readonly membership: Membership = new Membership(this);
  readonly backups: Backups;
  readonly backupSchedules: BackupSchedules;
  readonly replicas: Replicas;
  /** Each vendor's compatibility baseline as last announced (to tell when it changes). */
  private lastBaselines: Map<string, CpuBaseline> | undefined;
  private readonly liveness = new Map<string, Liveness>();
  /** This cluster's API token (a replica side stores it to replicate back, see replica/). */
  readonly token: string;
  private eventSeq = 0;
  private timer: NodeJS.Timeout | undefined;
  /** VMs with an operation in flight in this process: reconcile leaves them alone. */
  private readonly busy = new Set<string>();
  readonly log: (line: string) => void;

  constructor(opts: ControllerOptions) {
    this.store = opts.store;
    this.clock = opts.clock;
    this.layout = opts.layout;
    this.config = opts.config;
    this.token = opts.token;
    this.switch = new SwitchClient(opts.switchUrl, opts.token);
    this.backups = new Backups(this, path.join(opts.layout.shared, 'backups'));
    this.backupSchedules = new BackupSchedules(this, this.backups);
    this.replicas = new Replicas(this);
    this.log = opts.log ?? (() => {});
  }

  async start(): Promise<void> {
    // Storage daemons a killed controller left behind (a backup copy, a replica export).
    const stale = killStaleStorageDaemons(this.layout.run);
    if (stale.length) this.log(`stopped ${stale.length} leftover qemu-storage-daemon(s): ${stale.join(', ')}`);
    for (const member of this.config.nodes) {
      const existing = await this.store.get<NodeRecord>(`nodes/${member.name}`);
      if (!existing) {
        await this.store.put<NodeRecord>(`nodes/${member.name}`, {
          name: member.name, url: '', migrationAddress: member.migrationAddress, state: 'down',
        });
      }
    }
    for (const n of this.config.networks ?? []) {
      if (!(await this.store.get(`networks/${n.name}`))) await this.store.put<ClusterNetwork>(`networks/${n.name}`, n);
    }
    await this.switches.initialise(this.config.nodes.map((n) => n.name));
    await this.noteBaselines();
    await this.switches.sync().catch((e: unknown) => this.log(`switch sync: ${String(e)}`));
    this.timer = setInterval(() => {
      void this.reconcile().catch((e) => this.log(`reconcile: ${String(e)}`));
      void this.backupSchedules.tick().catch((e) => this.log(`backup schedules: ${String(e)}`));
      void this.replicas.tick().catch((e) => this.log(`replicas: ${String(e)}`));
    }, 1000);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.replicas.incoming.closeAll();
  }

  // ---- settings -------------------------------------------------------------

  async settings(): Promise<ClusterSettings> {
    const e = await this.store.get<Partial<ClusterSettings>>('cluster/settings');
    return { ...DEFAULT_SETTINGS, ...(e?.value ?? {}) };
  }

  async setSetting(name: string, value: unknown): Promise<ClusterSettings> {
    const before = await this.settings();
    const next = await update<ClusterSettings>(this.store, 'cluster/settings', (cur) => applySetting({ ...DEFAULT_SETTINGS, ...(cur ?? {}) }, name, value));
    await this.event({ type: 'cluster.setting', message: `${name}: ${String(before[name as keyof ClusterSettings])} → ${String(next[name as keyof ClusterSettings])}`, data: { name, value: next[name as keyof ClusterSettings] } });
    return next;
  }

  // ---- migration policy -----------------------------------------------------

  /** The cluster's default migration policy overrides (over Ferry's default). */
  async defaultPolicy(): Promise<Partial<MigrationPolicy>> {
    return (await this.store.get<Partial<MigrationPolicy>>('cluster/policy'))?.value ?? {};
  }

  /** Replaces the cluster's policy overrides; `{}` goes back to Ferry's default. */
  async setDefaultPolicy(input: unknown): Promise<MigrationPolicy> {
    const policy = validatePolicy(input);
    await this.store.put('cluster/policy', policy);
    await this.event({ type: 'cluster.policy', message: `default migration policy: ${JSON.stringify(policy)}`, data: { policy } });
    return effectivePolicy(policy);
  }

  // ---- events -------------------------------------------------------------

  async event(e: Omit<ClusterEvent, 'atMs'>): Promise<void> {
    const atMs = this.clock.nowMs();
    const id = `${String(atMs).padStart(15, '0')}-${String(this.eventSeq++).padStart(6, '0')}`;
    const event: ClusterEvent = { atMs, ...e };
    await this.store.put<ClusterEvent>(`events/${id}`, event);
    this.eventsOut.emit('event', id, event);
  }

  /** Live events (server-sent events): called with each new event and its id. */
  onEvent(listener: (id: string, e: ClusterEvent) => void): () => void {
    this.eventsOut.on('event', listener);
    return () => this.eventsOut.off('event', listener);
  }

  private readonly eventsOut = new EventEmitter().setMaxListeners(100);

  async events(sinceMs = 0, limit = 1000): Promise<ClusterEvent[]> {
    return (await this.eventsWithIds(sinceMs, limit)).map((e) => e.event);
  }

  /** Events with their ids (ids sort in time order), newer than `afterId` or from `sinceMs`. */
  async eventsWithIds(sinceMs = 0, limit = 1000, afterId?: string): Promise<{ id: string; event: ClusterEvent }[]> {
    const all = await this.store.list<ClusterEvent>('events/');
    return all
      .map((e) => ({ id: e.key.slice('events/'.length), event: e.value }))
      .filter((e) => e.event.atMs >= sinceMs && (afterId === undefined || e.id > afterId))
      .slice(-limit);
  }

  // ---- nodes --------------------------------------------------------------

  isMember(name: string): boolean {
    return this.config.nodes.some((n) => n.name === name);
  }

  async heartbeat(hb: Heartbeat): Promise<{ ok: true }> {
    if (hb.clusterId !== this.config.id || !this.isMember(hb.name)) throw errors.notClusterMember(hb.name);
    const now = this.clock.nowMs();
    this.liveness.set(hb.name, { lastSeenMs: now, vms: hb.vms });
    const key = `nodes/${hb.name}`;
    const current = await this.store.get<NodeRecord>(key);
    const prev = current?.value;
    const changed =
      !prev || prev.url !== hb.url || prev.state === 'down' || JSON.stringify(prev.capabilities) !== JSON.stringify(hb.capabilities) ||
      JSON.stringify(prev.networks ?? {}) !== JSON.stringify(hb.networks ?? {});
    if (changed) {
      const state = prev?.state === 'maintenance' ? 'maintenance' : 'up';
      await this.store.put<NodeRecord>(key, {
        name: hb.name, url: hb.url, migrationAddress: hb.migrationAddress, state, capabilities: hb.capabilities, lastSeenMs: now,
        ...(hb.networks ? { networks: hb.networks } : {}),
      });
      if (prev?.state !== state) await this.event({ type: 'node.up', node: hb.name, message: `node ${hb.name} is ${state}` });
      if (JSON.stringify(prev?.capabilities?.cpu) !== JSON.stringify(hb.capabilities.cpu)) await this.noteBaselines();
    }
    return { ok: true };
  }

  async nodes(): Promise<NodeRecord[]> {
    return (await this.store.list<NodeRecord>('nodes/')).map((e) => {
      const live = this.liveness.get(e.value.name);
      if (live) return { ...e.value, lastSeenMs: live.lastSeenMs };
      // Not heard from since this controller started: not up, whatever the store says.
      return e.value.state === 'up' ? { ...e.value, state: 'down' } : e.value;
    });
  }

  async node(name: string): Promise<NodeRecord> {
    const n = (await this.nodes()).find((x) => x.name === name);
    if (!n) throw errors.nodeNotFound(name);
    return n;
  }

  /** VMs the node's agent reported in its last heartbeat. */
  reportedVms(node: string): VmInstance[] {
    return this.liveness.get(node)?.vms ?? [];
  }

  agent(node: NodeRecord): AgentClient {
    if (!node.url) throw errors.agentUnreachable(node.name);
    return new AgentClient(node.name, node.url, this.token);
  }

  async agentFor(nodeName: string): Promise<AgentClient> {
    return this.agent(await this.node(nodeName));
  }

  async loads(): Promise<NodeLoad[]> {
    const vms = await this.vms();
    const switches = await this.switches.list();
    return (await this.nodes()).map((node) => {
      const placed = vms.filter((v) => v.node === node.name && isActive(v.state));
      return {
        node, committedMiB: placed.reduce((s, v) => s + v.memoryMiB, 0), vmCount: placed.length,
        switches: switches.filter((s) => s.bindings.some((b) => b.node === node.name)).map((s) => s.name),
      };
    });
  }

  private async reconcile(): Promise<void> {
    const now = this.clock.nowMs();
    for (const entry of await this.store.list<NodeRecord>('nodes/')) {
      const node = entry.value;
      const live = this.liveness.get(node.name);
      if (node.state !== 'down' && (!live || now - live.lastSeenMs > NODE_DOWN_AFTER_MS)) {
        this.liveness.delete(node.name);
        await this.store.put<NodeRecord>(entry.key, { ...node, state: 'down' }, { expectRevision: entry.modRevision }).catch(() => {});
        await this.event({ type: 'node.down', node: node.name, message: `node ${node.name} stopped answering` });
      }
    }
    await this.reconcileStrayInstances();
    // The switch daemon may have restarted: tell it again what exists.
    await this.switches.sync().catch((e: unknown) => this.log(`switch sync: ${String(e)}`));
    // A running VM whose QEMU its node no longer reports has exited.
    for (const entry of await this.store.list<VmRecord>('vms/')) {
      const vm = entry.value;
      if (vm.state !== VmState.Running || this.busy.has(vm.name) || vm.migrationId) continue;
      const live = this.liveness.get(vm.node);
      if (!live || live.lastSeenMs < (vm.stateSinceMs ?? 0) + 1500) continue;
      if (!live.vms.some((i) => i.name === vm.name)) {
        await this.store
          .put<VmRecord>(entry.key, { ...vm, state: VmState.Stopped, stateSinceMs: now, error: 'QEMU exited' }, { expectRevision: entry.modRevision })
          .catch(() => {});
        await this.event({ type: 'vm.exited', vm: vm.name, node: vm.node, message: `VM ${vm.name} exited on ${vm.node}` });
      }
    }
  }

  /**
   * QEMU processes a node runs that the store does not place there: the
   * leftovers of a migration whose agent was unreachable during cleanup, or
   * a migration that finished while no controller watched. The store's
   * placement wins, but never at the cost of the only running copy.
   */
  private async reconcileStrayInstances(): Promise<void> {
    const vms = new Map((await this.vms()).map((v) => [v.name, v]));
    for (const [node, live] of this.liveness) {
      for (const inst of live.vms) {
        const vm = vms.get(inst.name);
        if (vm && (vm.node === node || vm.migrationId || this.busy.has(vm.name))) continue;
        if (vm && (vm.state === VmState.Starting || vm.state === VmState.Stopping)) continue;
        // Only trust heartbeats sent after the VM's last change, from both nodes.
        const since = (vm?.stateSinceMs ?? 0) + 2000;
        if (live.lastSeenMs < since) continue;
        if (vm && (this.liveness.get(vm.node)?.lastSeenMs ?? Infinity) < since) continue;
        const recordedRuns = vm ? (this.liveness.get(vm.node)?.vms ?? []).some((i) => i.name === vm.name && i.runState === 'running') : false;
        if (inst.runState === 'running' && !recordedRuns) {
          if (vm && vm.state === VmState.Running) {
            // The VM really runs here and nowhere else: follow it.
            await this.updateVm(vm.name, (cur) => ({ ...cur, node }));
            await this.event({ type: 'vm.relocated', vm: vm.name, node, message: `VM ${vm.name} found running on ${node}; record updated` });
          }
          continue;
        }
        try {
          // Look again right before acting: a migration may have claimed the VM since the heartbeat.
          const fresh = await this.store.get<VmRecord>(`vms/${inst.name}`);
          if (fresh?.value.migrationId || this.busy.has(inst.name) || fresh?.value.node === node) continue;
          const agent = this.agent(await this.node(node));
          if (!(await agent.kill(inst.name, { pid: inst.pid }))) continue;
          await this.event({ type: 'vm.stray-removed', vm: inst.name, node, message: `removed stray QEMU of ${inst.name} (${inst.runState}) on ${node}` });
        } catch (e) {
          this.log(`stray ${inst.name}@${node}: ${String(e)}`);
        }
      }
    }
  }

  // ---- VMs ----------------------------------------------------------------

  async vms(): Promise<VmRecord[]> {
    return (await this.store.list<VmRecord>('vms/')).map((e) => e.value);
  }

  async vm(name: string): Promise<VmRecord> {
    const e = await this.store.get<VmRecord>(`vms/${name}`);
    if (!e) throw errors.vmNotFound(name);
    return e.value;
  }

  /** Changes a VM record with compare-and-set. */
  async updateVm(name: string, change: (vm: VmRecord) => VmRecord): Promise<VmRecord> {
    return update<VmRecord>(this.store, `vms/${name}`, (cur) => {
      if (!cur) throw errors.vmNotFound(name);
      return change(cur);
    });
  }

  async setVmState(name: string, state: VmState, extra: Partial<VmRecord> = {}): Promise<VmRecord> {
    return this.updateVm(name, (vm) => {
      const next: VmRecord = { ...vm, ...extra, state, stateSinceMs: this.clock.nowMs() };
      if (!('error' in extra)) delete next.error;
      return next;
    });
  }

  async createVm(req: VmCreateRequest): Promise<VmRecord> {
    const v = validateVmCreate(req);
    if (v.node !== undefined) {
      if (!this.isMember(v.node)) throw errors.nodeNotFound(v.node);
    }
    if (await this.store.get(`vms/${v.name}`)) throw errors.alreadyExists('VM', v.name);
    await this.switches.get(v.switch ?? DEFAULT_SWITCH);
    const index = await update<number>(this.store, 'counters/vm-index', (n) => (n ?? 0) + 1);
    const diskPath = this.layout.diskPath(v.name);
    const now = this.clock.nowMs();
    const record: VmRecord = {
      name: v.name, memoryMiB: v.memoryMiB, cpus: v.cpus, diskGiB: v.diskGiB, diskPath,
      mac: macFor(index), ip: ipFor(index), workload: v.workload, node: v.node ?? '',
      state: VmState.Stopped, createdAtMs: now, stateSinceMs: now,
    };
    if (v.compat) record.compat = true;
    record.switch = v.switch ?? DEFAULT_SWITCH;
    if (v.offloads) record.nicOffloads = v.offloads;
    try {
      fs.mkdirSync(this.layout.disks, { recursive: true });
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', diskPath, `${v.diskGiB}G`]);
      await this.store.put(`vms/${v.name}`, record, { expectRevision: 0 });
    } catch (e) {
      fs.rmSync(diskPath, { force: true });
      if (e instanceof FerryError && e.code === ErrorCode.Conflict) throw errors.alreadyExists('VM', v.name);
      throw toFerryError(e);
    }
    fs.mkdirSync(this.layout.consoles, { recursive: true });
    fs.writeFileSync(this.layout.consoleLog(v.name), '');
    await this.event({ type: 'vm.created', vm: v.name, message: `VM ${v.name} created` });
    return record;
  }

  async specFor(vm: VmRecord): Promise<VmSpec> {
    const spec: VmSpec = {
      name: vm.name, memoryMiB: vm.memoryMiB, cpus: vm.cpus, diskPath: vm.diskPath, mac: vm.mac, ip: vm.ip,
      workload: vm.workload, consoleLogPath: this.layout.consoleLog(vm.name),
    };
    if (vm.guestCpu) spec.cpuModel = vm.guestCpu.model;
    spec.switch = switchOf(vm);
    if (vm.nicOffloads) spec.nicOffloads = vm.nicOffloads;
    const peerName = tcpPeer(vm.workload);
    if (peerName) {
      const peer = await this.store.get<VmRecord>(`vms/${peerName}`);
      if (!peer) throw errors.invalid('workload', `VM '${vm.name}' is a tcp-client of '${peerName}', which does not exist`);
      spec.peerIp = peer.value.ip.split('/')[0]!;
    }
    return spec;
  }

  /** Runs `fn` with the VM marked busy so reconcile does not act on half-done state. */
  async withBusy<T>(name: string, fn: () => Promise<T>): Promise<T> {
    if (this.busy.has(name)) throw errors.invalidState(`VM '${name}' has another operation in progress`, { vm: name });
    this.busy.add(name);
    try {
      return await fn();
    } finally {
      this.busy.delete(name);
    }
  }

  async startVm(name: string, options: { node?: string } = {}): Promise<VmRecord> {
    return this.withBusy(name, async () => {
      const vm = await this.vm(name);
      if (vm.state !== VmState.Stopped && vm.state !== VmState.Error && vm.state !== VmState.Saved) {
        throw errors.invalidState(`VM '${name}' is ${vm.state}, not stopped`, { vm: name, state: vm.state });
      }
      const spec = await this.specFor(vm);
      // A saved VM goes back to its node if that can take it, else to any
      // suitable node (R12: its node may be in maintenance). Otherwise the
      // VM's node is where it was placed or pinned at creation.
      const last = vm.node ? (await this.nodes()).find((n) => n.name === vm.node) : undefined;
      const wanted = options.node ?? (vm.state === VmState.Saved && last?.state !== 'up' ? undefined : vm.node || undefined);
      let target: string;
      if (wanted) {
        const node = await this.node(wanted);
        if (node.state !== 'up') throw errors.invalidState(`node '${wanted}' is ${node.state}`, { node: wanted });
        const load = (await this.loads()).find((l) => l.node.name === wanted)!;
        const noSwitch = switchBlocker(switchOf(vm), load);
        if (noSwitch) throw errors.invalidState(`cannot start VM '${name}' on ${wanted}: ${noSwitch}`, { node: wanted });
        const free = (node.capabilities?.memoryTotalMiB ?? 0) - load.committedMiB;
        if (free < vm.memoryMiB) {
          throw errors.insufficientResources(`node '${wanted}' has ${free} MiB free, VM '${name}' needs ${vm.memoryMiB} MiB`);
        }
        target = wanted;
      } else {
        const placed = placeVm(vm.memoryMiB, await this.loads(), [], switchOf(vm));
        if (!placed.node) {
          throw errors.insufficientResources(
            `no node can run VM '${name}': ${placed.blockers.map((b) => `${b.node}: ${b.reason}`).join('; ') || 'no nodes are up'}`,
          );
        }
        target = placed.node;
      }
      const saved = vm.state === VmState.Saved ? vm.savedState : undefined;
      // A fresh boot takes its node's CPU, or in compatibility mode the
      // baseline of today's nodes of that vendor; a restore keeps the CPU it was saved with.
      const cpu = saved && vm.guestCpu ? vm.guestCpu : await this.bootCpu(vm, target);
      if (cpu) spec.cpuModel = cpu.model;
      await this.setVmState(name, VmState.Starting, cpu ? { node: target, guestCpu: cpu } : { node: target });
      const agent = await this.agentFor(target);
      try {
        if (saved) {
          // Restore: an incoming QEMU loads the saved state, then runs.
          await agent.start(spec, true);
          await agent.restoreFrom(name, saved, DEFAULT_TUNING);
          await waitTransferCompleted(agent, name, this.clock, { label: `restoring '${name}'`, timeoutMs: 60_000, stepMs: 50 });
          await agent.resume(name);
        } else {
          await agent.start(spec);
        }
      } catch (e) {
        const err = toFerryError(e);
        await agent.kill(name).catch(() => {});
        // A failed restore keeps the saved state: nothing is lost, the VM stays saved.
        await this.setVmState(name, saved ? VmState.Saved : VmState.Stopped, { error: err.message });
        throw err;
      }
      const started = await this.updateVm(name, (cur) => {
        const next: VmRecord = { ...cur, state: VmState.Running, stateSinceMs: this.clock.nowMs() };
        delete next.savedState;
        delete next.error;
        return next;
      });
      if (saved) fs.rmSync(saved, { force: true });
      await this.event({ type: 'vm.started', vm: name, node: target, message: `VM ${name} ${saved ? 'restored' : 'started'} on ${target}` });
      return saved ? { ...started, restoredFrom: saved } as VmRecord : started;
    });
  }

  /** The CPU a fresh boot of `vm` on `target` gets. */
  private async bootCpu(vm: VmRecord, target: string): Promise<CpuIdentity | undefined> {
    const nodeCpu = (await this.node(target)).capabilities?.cpu;
    if (!vm.compat || !nodeCpu) return nodeCpu;
    const baseline = cpuBaseline(nodeCpu.vendor, await this.memberCpus());
    return baseline && { vendor: baseline.vendor, model: baseline.model, features: baseline.features };
  }

  /** Each member node's CPU as last reported (a node that is down still belongs to the cluster). */
  async memberCpus(): Promise<NodeCpu[]> {
    return (await this.nodes()).flatMap((n) => (this.isMember(n.name) && n.capabilities ? [{ node: n.name, cpu: n.capabilities.cpu }] : []));
  }

  /** Forgets a node that left the cluster. */
  forget(name: string): void {
    this.liveness.delete(name);
  }

  /**
   * Recomputes each vendor's baseline after membership or a node's CPU
   * changed, and records an event when one moved: compat VMs get the new
   * baseline at their next start.
   */
  async noteBaselines(): Promise<void> {
    const now = new Map((await this.cpuBaselines()).map((b) => [b.vendor, b]));
    const before = this.lastBaselines;
    this.lastBaselines = now;
    if (!before) return;
    for (const vendor of new Set([...before.keys(), ...now.keys()])) {
      const a = before.get(vendor);
      const b = now.get(vendor);
      if (JSON.stringify(a?.features) === JSON.stringify(b?.features) && JSON.stringify(a?.nodes) === JSON.stringify(b?.nodes)) continue;
      const show = (x: CpuBaseline | undefined) => (x ? `${x.baseModel}${x.disabled.length ? ` minus ${x.disabled.length}` : ''} (${x.features.length} features, nodes ${x.nodes.join(',')})` : 'none');
      await this.event({
        type: 'cluster.cpu-baseline',
        message: `${vendor} compatibility baseline: ${show(a)} → ${show(b)}; compat VMs get it at their next start`,
        data: { vendor, before: a?.features.length ?? 0, after: b?.features.length ?? 0 },
      });
    }
  }

  /** The compatibility baseline of each vendor among the cluster's nodes. */
  async cpuBaselines(): Promise<CpuBaseline[]> {
    const cpus = await this.memberCpus();
    return [...new Set(cpus.map((c) => c.cpu.vendor))].sort().map((v) => cpuBaseline(v, cpus)!);
  }

  /**
   * Changes a VM's settings. Compatibility mode decides the CPU the guest
   * boots with, so it only changes while the VM is stopped (R9).
   */
  async setVm(name: string, settings: { compat?: unknown; switch?: unknown; policy?: unknown }): Promise<VmRecord> {
    validateName('VM', name);
    if (settings.policy !== undefined) {
      // A policy applies to the VM's next migration: it may change at any time.
      const policy = settings.policy === null ? undefined : validatePolicy(settings.policy);
      const next = await this.updateVm(name, (cur) => {
        const out: VmRecord = { ...cur };
        if (policy) out.policy = policy;
        else delete out.policy;
        return out;
      });
      await this.event({ type: 'vm.set', vm: name, message: `VM ${name}: migration policy ${policy ? JSON.stringify(policy) : 'cleared (cluster default)'}` });
      if (settings.compat === undefined && settings.switch === undefined) return next;
    }
    if (settings.compat === undefined && settings.switch === undefined) throw errors.invalid('settings', 'nothing to set: give --compat on|off, --switch NAME or --policy FILE');
    const compat = settings.compat === undefined ? undefined : validateOnOff('compat', settings.compat);
    const sw = settings.switch === undefined ? undefined : (await this.switches.get(String(settings.switch))).name;
    return this.withBusy(name, async () => {
      const vm = await this.vm(name);
      const changes: string[] = [];
      if (compat !== undefined && Boolean(vm.compat) !== compat) changes.push(`processor compatibility mode ${compat ? 'on' : 'off'}`);
      if (sw !== undefined && switchOf(vm) !== sw) changes.push(`NIC on switch ${sw}`);
      if (changes.length === 0) return vm;
      if (vm.state !== VmState.Stopped && vm.state !== VmState.Error) {
        const what = compat !== undefined && Boolean(vm.compat) !== compat ? 'processor compatibility mode changes' : 'its switch changes';
        throw errors.invalidState(`VM '${name}' is ${vm.migrationId ? 'migrating' : vm.state}: ${what} only while the VM is stopped`, { vm: name, state: vm.state });
      }
      const next = await this.updateVm(name, (cur) => {
        const out: VmRecord = { ...cur };
        if (compat === true) out.compat = true;
        if (compat === false) delete out.compat;
        if (sw !== undefined) out.switch = sw;
        return out;
      });
      await this.event({ type: 'vm.set', vm: name, message: `VM ${name}: ${changes.join(', ')} (applies at its next start)` });
      return next;
    });
  }

  /**
   * Whether a disk image is on the cluster's shared volume, which every node
   * opens. Anywhere else counts as the storage of the node the VM runs on:
   * such a VM migrates only with its disk copied along (--with-storage).
   */
  onSharedVolume(file: string): boolean {
    return path.resolve(file).startsWith(path.resolve(this.layout.shared) + path.sep);
  }

  /** VMs whose disk is being moved: migrations and backups wait for the move. */
  readonly storageMoves = new Set<string>();

  /**
   * Moves a VM's disk to another directory (volume). A running VM keeps
   * running: QEMU mirrors the disk and switches to the copy; until the
   * switch the VM runs on its original disk, which is removed only after.
   * A stopped VM's disk is copied and then removed.
   */
  async moveStorage(name: string, to: unknown): Promise<VmRecord & { movedBytes: number; ms: number }> {
    validateName('VM', name);
    if (typeof to !== 'string' || !path.isAbsolute(to)) throw errors.invalid('to', `--to must be an absolute directory path, got '${String(to)}'`);
    return this.withBusy(name, async () => {
      const vm = await this.vm(name);
      const target = path.join(path.resolve(to), `${name}.qcow2`);
      if (target === vm.diskPath) throw errors.invalid('to', `VM '${name}''s disk is already in ${to}`);
      if (vm.migrationId) throw errors.invalidState(`VM '${name}' is migrating; move its storage after the migration`, { vm: name });
      const backup = this.backups.runningFor(name);
      if (backup) throw errors.invalidState(`a backup of VM '${name}' is running (${backup})`, { vm: name });
      if (vm.state !== VmState.Running && vm.state !== VmState.Stopped) throw errors.invalidState(`VM '${name}' is ${vm.state}: only a running or stopped VM's disk moves`, { vm: name });
      try {
        // Not `recursive`: Node's recursive mkdir can spin forever on pseudo file systems like /proc.
        const dir = path.dirname(target);
        if (!fs.existsSync(dir)) {
          if (!fs.statSync(path.dirname(dir)).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
          fs.mkdirSync(dir);
        }
        fs.accessSync(dir, fs.constants.W_OK);
      } catch (e) {
        throw errors.invalid('to', `cannot write to ${to}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      if (fs.existsSync(target)) throw errors.alreadyExists('disk image', target);
      this.storageMoves.add(name);
      const started = this.clock.nowMs();
      try {
        let bytes: number;
        if (vm.state === VmState.Running) {
          bytes = (await (await this.agentFor(vm.node)).moveStorage(name, target, vm.diskGiB * 1073741824)).bytes;
        } else {
          await run('qemu-img', ['convert', '-O', 'qcow2', vm.diskPath, target]);
          bytes = fs.statSync(target).size;
        }
        const moved = await this.updateVm(name, (cur) => ({ ...cur, diskPath: target }));
        fs.rmSync(vm.diskPath, { force: true });
        await this.event({ type: 'vm.storage-moved', vm: name, node: vm.node, message: `VM ${name}'s disk moved to ${target} (${bytes} bytes)` });
        return { ...moved, movedBytes: bytes, ms: this.clock.nowMs() - started };
      } catch (e) {
        if (vm.state !== VmState.Running) fs.rmSync(target, { force: true });
        throw toFerryError(e);
      } finally {
        this.storageMoves.delete(name);
      }
    });
  }

  /**
   * Saves a running VM's memory and device state to the shared volume and
   * stops its QEMU (state `saved`); `startVm` restores it on any node.
   * On failure the VM keeps running where it was.
   */
  async saveVm(name: string): Promise<VmRecord> {
    return this.withBusy(name, async () => {
      const vm = await this.vm(name);
      if (vm.state !== VmState.Running || vm.migrationId) {
        throw errors.invalidState(`VM '${name}' is ${vm.migrationId ? 'migrating' : vm.state}: only a running VM can be saved`, { vm: name });
      }
      const agent = await this.agentFor(vm.node);
      fs.mkdirSync(this.layout.states, { recursive: true });
      const file = path.join(this.layout.states, `${name}-saved-${this.clock.nowMs().toString(36)}.state`);
      try {
        await agent.pause(name);
        await agent.startMigration(name, { file }, DEFAULT_TUNING);
        await waitTransferCompleted(agent, name, this.clock, { label: `saving '${name}'`, timeoutMs: 60_000, stepMs: 50 });
      } catch (e) {
        // Keep it running where it was.
        await agent.cancelMigration(name).catch(() => {});
        await agent.resume(name).catch(() => {});
        fs.rmSync(file, { force: true });
        throw toFerryError(e);
      }
      await agent.kill(name);
      const saved = await this.setVmState(name, VmState.Saved, { savedState: file });
      await this.event({ type: 'vm.saved', vm: name, node: vm.node, message: `VM ${name} saved to the shared volume` });
      return saved;
    });
  }

  async stopVm(name: string): Promise<VmRecord> {
    return this.withBusy(name, async () => {
      const vm = await this.vm(name);
      if (vm.state === VmState.Migrating || vm.migrationId) {
        throw errors.invalidState(`VM '${name}' is migrating; cancel the migration first`, { vm: name });
      }
      if (vm.state === VmState.Stopped) return vm;
      if (vm.state === VmState.Saved) {
        // Stopping a saved VM discards its saved memory: the next start boots.
        if (vm.savedState) fs.rmSync(vm.savedState, { force: true });
        return this.updateVm(name, (cur) => {
          const next: VmRecord = { ...cur, state: VmState.Stopped, stateSinceMs: this.clock.nowMs() };
          delete next.savedState;
          return next;
        });
      }
      if (vm.node) {
        const node = await this.node(vm.node);
        try {
          await this.agent(node).stop(name);
        } catch (e) {
          if (!(e instanceof FerryError && e.code === ErrorCode.VmNotFound)) throw e;
        }
      }
      const stopped = await this.setVmState(name, VmState.Stopped);
      await this.event({ type: 'vm.stopped', vm: name, node: vm.node, message: `VM ${name} stopped` });
      return stopped;
    });
  }

  async deleteVm(name: string): Promise<void> {
    validateName('VM', name);
    const vm = await this.vm(name);
    if (vm.state !== VmState.Stopped && vm.state !== VmState.Error) {
      throw errors.invalidState(`VM '${name}' is ${vm.state}; stop it before deleting it`, { vm: name });
    }
    const backup = this.backups.runningFor(name);
    if (backup) throw errors.invalidState(`a backup of VM '${name}' is running (${backup}); delete the VM after it`, { vm: name, backup });
    await this.store.delete(`vms/${name}`);
    fs.rmSync(vm.diskPath, { force: true });
    fs.rmSync(this.layout.consoleLog(name), { force: true });
    await this.event({ type: 'vm.deleted', vm: name, message: `VM ${name} deleted` });
  }

  /** Stops every VM (for `ferry down`). */
  async stopAll(): Promise<string[]> {
    const stopped: string[] = [];
    for (const vm of await this.vms()) {
      if (vm.state === VmState.Stopped || vm.state === VmState.Saved) continue;
      try {
        if (vm.migrationId) await this.cancelMigrationOf?.(vm.name);
        await this.stopVm(vm.name);
        stopped.push(vm.name);
      } catch (e) {
        this.log(`stopAll: ${vm.name}: ${String(e)}`);
      }
    }
    return stopped;
  }

  /** Installed by the migration module so stopAll can cancel a migration first. */
  cancelMigrationOf: ((vm: string) => Promise<void>) | undefined;

  async consoleTail(name: string, bytes = 4096): Promise<string> {
    await this.vm(name);
    const path = this.layout.consoleLog(name);
    if (!fs.existsSync(path)) return '';
    const size = fs.statSync(path).size;
    const fd = fs.openSync(path, 'r');
    try {
      const len = Math.min(bytes, size);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  }
}

export { isActive };

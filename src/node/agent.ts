/**
 * The node agent: one per host. It owns this host's guests through the
 * Hypervisor port and performs the host-side half of every operation; the
 * controller decides, the agent does. It reports to the controller every
 * second (heartbeat), answers reachability probes on each cluster network
 * (a "beacon"), and serves its API (http.ts) on its management address.
 */
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../api/client.js';
import { nodeRoutes } from '../api/routes/nodes.js';
import type { Clock } from '../domain/clock.js';
import { ErrorCode, FerryError, errors } from '../domain/errors.js';
import type { NicBackend } from '../domain/nic.js';
import type { HostLink, LeaseRenewal, NodeCapabilities, VmInstance, VmSpec, VolumeSighting } from '../domain/records.js';
import { DEFAULT_SWITCH } from '../domain/switches.js';
import { type FenceFile, fenceDeadline } from '../domain/ha.js';
import type { Hypervisor, NicAttachment } from '../ports/hypervisor.js';
import type { Logger } from '../ports/logger.js';
import { HostLease, type LeaseStore, type LeaseTarget } from './host-lease.js';

/** How often an agent reports to the controller (start to start). */
const HEARTBEAT_EVERY_MS = 1000;

export interface AgentOptions {
  node: string;
  clusterId: string;
  /** The API token callers bring; absent on a real host, where only the cluster's controllers (by certificate) may call. */
  token?: string;
  /** Address QEMU listens on for incoming migrations unless the controller picks another network. */
  migrationAddress: string;
  /** This node's address on each cluster network. */
  networks: { network: string; address: string }[];
  /** Memory this node offers to VMs; defaults to the host's total. */
  memoryMiB?: number;
  /** CPU model guests get on this node; default: host under KVM, qemu64 under TCG. */
  cpuModel?: string;
  /** How VMs' NICs reach the switch: a unix stream (default) or a tap with the virtio-net header. */
  nicBackend: NicBackend;
  /** The socket of a virtual switch on this host. */
  switchSocket: (sw: string) => string;
  runDir: string;
}

export interface AgentDeps {
  hypervisor: Hypervisor;
  clock: Clock;
  log: Logger;
  /** Where the controller is now (it may have restarted on another address). */
  /** Where the controllers answer (the first that answers is used; a heartbeat's answer may name more). */
  controllerUrls: () => string[];
  /** Creates an empty disk image (a shared-nothing migration target). */
  createImage: (file: string, sizeBytes: number) => Promise<void>;
  removeFile: (file: string) => void;
  fileExists: (file: string) => boolean;
  /** Taps on a per-node bridge, for tap NIC backends. */
  uplinks: {
    ensure(sw: string, socket: string): Promise<string>;
    vmTap(vm: string): string;
    attach(tap: string, bridge: string): Promise<void>;
    /** Bridge backend: the host bridge for a switch bound to this interface. */
    hostBridge(iface: string): Promise<string>;
    learnt(bridge: string, mac: string, port: string): Promise<boolean>;
  };
  /** Listens for reachability probes on one address. */
  beacon: (address: string) => Promise<{ port: number; close(): Promise<void> }>;
  /** Reads the shared volume's marker as this host sees it (absent: not reported). */
  readVolume?: () => VolumeSighting;
  /**
   * The fence file the host's independent watchdog reads (until when HA VMs may run, which are HA), and
   * the names it fenced since the last read; absent: no watchdog process (component tests).
   */
  watchdog?: { write(f: FenceFile): void; read(): FenceFile | undefined; takeFenced(): string[] };
  /** The host interface holding an address, as the kernel reports it (absent: not asked). */
  linksOf?: (addresses: string[]) => Promise<Map<string, HostLink>>;
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /** A client of the store where this host renews its own lease, when a controller says where (absent: never). */
  leaseStore?: (at: LeaseRenewal) => LeaseStore;
  /** Where the lease is renewed, kept across a restart of the agent (absent: learnt again from a heartbeat answer). */
  leaseTarget?: { read(): LeaseTarget | undefined; write(t: LeaseTarget): void };
}

export class Agent {
  capabilities!: NodeCapabilities;
  private beacons: { network: string; address: string; port: number; close(): Promise<void> }[] = [];
  private url = '';
  /** Bridge-backed NICs of the VMs started here: their bridge, tap and MAC. */
  private readonly bridged = new Map<string, { bridge: string; port: string; mac: string }>();
  private heartbeats: AbortController | undefined;
  /** Until when this host's lease lets HA VMs run, and which are HA (from the last answered heartbeat). */
  private fence: FenceFile | undefined;
  /** HA VMs fenced since the last answered heartbeat. */
  private readonly fenced = new Set<string>();
  /**
   * HA VMs whose fencing a controller has heard of, until they are launched here again: the agent and the
   * watchdog process both fence on the same lapsed lease, and one QEMU killed is one fencing, reported once.
   */
  private readonly fenceReported = new Set<string>();
  /** The newest controller leadership heard of (calls and heartbeat answers); 0: none yet. */
  private leadership = 0;
  /** The lease this agent renews in the store itself, the TTL and the HA VMs the last heartbeat answer named. */
  private own: { lease: HostLease; ttlMs: number; ha: string[]; failing?: string } | undefined;
  /** The lease target as last kept (leaseTarget), to write it only when it changes. */
  private keptTarget: string | undefined;

  constructor(
    readonly o: AgentOptions,
    readonly d: AgentDeps,
  ) {}

  get hypervisor(): Hypervisor {
    return this.d.hypervisor;
  }

  /** Finds out what this host offers and takes over guests a previous agent started. */
  async prepare(): Promise<void> {
    const facts = await this.d.hypervisor.probeHost({ ...(this.o.cpuModel ? { cpuModel: this.o.cpuModel } : {}), nicBackend: this.o.nicBackend });
    const totalMiB = this.o.memoryMiB ?? Math.floor(os.totalmem() / 1048576);
    this.capabilities = {
      accelerator: facts.accelerator,
      acceleratorReason: facts.acceleratorReason,
      cpu: facts.cpu,
      qemuVersion: facts.version,
      memoryTotalMiB: totalMiB,
      memoryFreeMiB: totalMiB,
      cpuCount: os.cpus().length,
      // QEMU offers checksum offload only when the backend carries the virtio-net header.
      nic: { backend: this.o.nicBackend, offloads: facts.nicOffloads, vnetHeader: facts.nicOffloads.includes('csum') },
    };
    this.d.log.info(
      { accelerator: facts.accelerator, cpu: `${facts.cpu.vendor} ${facts.cpu.model}` },
      `accelerator ${facts.accelerator}: ${facts.acceleratorReason}`,
    );
    for (const name of await this.d.hypervisor.adoptRunning()) this.d.log.info({ vm: name }, `adopted running QEMU of '${name}'`);
    this.d.hypervisor.onExit((name, lastWords) => this.d.log.warn({ vm: name }, `QEMU of '${name}' exited unexpectedly${lastWords ? `: ${lastWords}` : ''}`));
    for (const n of this.o.networks) this.beacons.push({ ...n, ...(await this.d.beacon(n.address)) });
    await this.refreshLinks();
    await this.resumeOwnLease();
  }

  /**
   * A restarted agent renews where the one before it did, before any controller answers (none may, while one
   * takes over): from the deadline the last lease gave, so one that lapsed meanwhile fences first. And before it
   * answers a call it reads the leadership from the store, so a leader deposed while it was away is refused from
   * its first call (when the store does not answer, the first leadership heard of counts, as on a first start).
   */
  private async resumeOwnLease(): Promise<void> {
    const kept = this.d.leaseTarget?.read();
    if (!kept || !this.d.leaseStore || this.own) return;
    this.fence = this.d.watchdog?.read() ?? { validUntilMs: 0, ha: kept.ha };
    const lease = this.renewsItself(kept.at, kept.ttlMs, kept.ha);
    const leads = await lease.leadership().catch((e: unknown) => {
      this.d.log.warn({ err: String(e) }, `could not read the controllers' leadership from the cluster store: ${String(e)}`);
      return undefined;
    });
    if (leads) this.admitLeadership(leads);
  }

  /** The management address the API serves on. */
  get managementAddress(): string {
    return this.o.networks.find((n) => n.network === 'management')?.address ?? '127.0.0.1';
  }

  /** Starts heartbeats to the controller, once the API listens at `url`. */
  startHeartbeats(url: string): void {
    this.url = url;
    this.heartbeats = new AbortController();
    const signal = this.heartbeats.signal;
    void (async () => {
      // One heartbeat a second, counted from the start of the one before: a slow one delays the next by no more
      // than it took itself (the controller marks a host down after NODE_DOWN_AFTER_MS without one).
      let failing: { sinceMs: number; why: string } | undefined;
      while (!signal.aborted) {
        const startMs = this.d.clock.nowMs();
        await this.sendHeartbeat().then(
          () => {
            if (failing) this.d.log.info({}, `heartbeats are answered again (after ${this.d.clock.nowMs() - failing.sinceMs} ms without: ${failing.why})`);
            failing = undefined;
          },
          (e: unknown) => {
            const why = e instanceof Error ? e.message : String(e);
            if (!failing && !signal.aborted) this.d.log.warn({ err: why }, `a heartbeat was not answered: ${why}`);
            failing ??= { sinceMs: startMs, why };
          },
        );
        const tookMs = this.d.clock.nowMs() - startMs;
        // Two periods or more: on the way to the controller's NODE_DOWN_AFTER_MS (5 s) without a heartbeat.
        if (tookMs >= 2 * HEARTBEAT_EVERY_MS) this.d.log.warn({ ms: tookMs }, `a heartbeat took ${tookMs} ms`);
        await this.d.clock.sleep(Math.max(0, HEARTBEAT_EVERY_MS - tookMs), signal).catch(() => {});
      }
    })();
    // The host's own lease, renewed in the store once a controller said where (etcd): not through any controller.
    void (async () => {
      while (!signal.aborted) {
        await this.renewOwnLease();
        await this.d.clock.sleep(Math.min(1000, (this.own?.ttlMs ?? 4000) / 4), signal).catch(() => {});
      }
    })();
    // The watchdog in the agent: the lease ran out, so the controller may start these HA VMs elsewhere soon.
    void (async () => {
      while (!signal.aborted) {
        await this.fenceIfLapsed().catch((e: unknown) => this.d.log.error({ err: String(e) }, 'fencing failed'));
        await this.d.clock.sleep(200, signal).catch(() => {});
      }
    })();
  }

  /** Kills every HA VM's QEMU here once the lease has lapsed (see domain/ha.ts). */
  async fenceIfLapsed(): Promise<string[]> {
    const f = this.fence;
    if (!f || this.d.clock.nowMs() <= f.validUntilMs) return [];
    const killed: string[] = [];
    for (const name of f.ha) {
      if (!this.d.hypervisor.has(name)) continue;
      await this.d.hypervisor.kill(name);
      this.fenced.add(name);
      killed.push(name);
      this.d.log.warn({ vm: name }, `fenced HA VM '${name}': this host's lease ran out at ${new Date(f.validUntilMs).toISOString()}`);
    }
    return killed;
  }

  /**
   * Renews this host's own lease (see host-lease.ts). The key names the HA VMs from the last heartbeat answer;
   * the fence took them on when the answer came, and drops those no longer named only once the key no longer does.
   */
  private async renewOwnLease(): Promise<void> {
    const own = this.own;
    if (!own) return;
    const { ha } = own;
    try {
      const validUntilMs = await own.lease.renew(own.ttlMs, ha);
      // Fence first what a lapsed lease no longer protects: a renewal never revives it.
      if (this.fence && this.d.clock.nowMs() > this.fence.validUntilMs) await this.fenceIfLapsed();
      this.fence = { validUntilMs, ha };
      this.d.watchdog?.write(this.fence);
      if (own.failing) this.d.log.info({}, `renewing this host's lease again (it had failed: ${own.failing})`);
      delete own.failing;
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      if (!own.failing)
        this.d.log.warn({ err: why }, `could not renew this host's lease; HA VMs are fenced at ${new Date(this.fence?.validUntilMs ?? 0).toISOString()}`);
      own.failing = why;
    }
  }

  /**
   * Takes a controller's leadership claim: a newer one from now on, an older one refused (see routes.ts). An agent
   * that has heard of none (a first start) takes the first it hears; the store's fence still guards the leader's writes.
   */
  admitLeadership(n: number): FerryError | undefined {
    if (n < this.leadership)
      return new FerryError(
        ErrorCode.NotLeader,
        `refused: this call comes from a controller whose leadership (${n}) has ended; leadership ${this.leadership} leads the cluster`,
        { details: { leadership: n, leads: this.leadership } },
      );
    if (n > this.leadership) {
      if (this.leadership) this.d.log.info({ leadership: n }, `a new controller leadership (${n}, after ${this.leadership}): older ones' calls are refused`);
      this.leadership = n;
    }
    return undefined;
  }

  /** Whether an HA VM runs here that only the lease protects (the watchdog must outlive a stopped agent). */
  runsHaVms(): boolean {
    return (this.fence?.ha ?? []).some((n) => this.d.hypervisor.has(n));
  }

  async stop(): Promise<void> {
    this.heartbeats?.abort();
    await this.own?.lease.close();
    this.own = undefined;
    await Promise.all(this.beacons.map((b) => b.close()));
    this.beacons = [];
    // Guests keep running: a restarted agent adopts them.
    this.d.hypervisor.detachAll();
  }

  /** Controllers heard of in heartbeat answers, beside the configured ones. */
  private learnedControllers: string[] = [];
  /** The controller that answered last; a failed heartbeat moves on to the next. */
  private controllerAt = 0;

  /** The controllers to try, the configured ones first. */
  controllers(): string[] {
    return [...new Set([...this.d.controllerUrls(), ...this.learnedControllers])];
  }

  private async sendHeartbeat(): Promise<void> {
    const all = this.controllers();
    let failure: unknown;
    // The one that answered last first; one that is gone (or a standby, which listens only once it leads) passes
    // the heartbeat on to the next at once, so a leader change costs the lease no more than the takeover.
    for (let i = 0; i < all.length; i++) {
      const at = (this.controllerAt + i) % all.length;
      try {
        await this.heartbeatTo(all[at]!);
        this.controllerAt = at;
        return;
      } catch (e) {
        failure = e;
      }
    }
    if (failure) throw failure;
  }

  private async heartbeatTo(base: string, all = this.controllers().length): Promise<void> {
    const sentMs = this.d.clock.nowMs();
    for (const n of this.d.watchdog?.takeFenced() ?? []) this.fenced.add(n);
    for (const n of this.fenceReported) this.fenced.delete(n);
    const fenced = [...this.fenced];
    const controller = new ApiClient({
      baseUrl: base,
      ...(this.o.token ? { token: this.o.token } : {}),
      // Short: a controller that hangs (stopped, cut off) must not hold the heartbeats up past the takeover.
      timeoutMs: all > 1 ? 1500 : 2000,
      ...(this.d.fetch ? { fetch: this.d.fetch } : {}),
    });
    const links = this.links();
    const answer = await controller.call(nodeRoutes.heartbeat, {
      body: {
        name: this.o.node,
        url: this.url,
        clusterId: this.o.clusterId,
        migrationAddress: this.o.migrationAddress,
        networks: Object.fromEntries(
          this.beacons.map((b) => {
            const link = links.get(b.address);
            return [b.network, { address: b.address, port: b.port, ...(link ? { link } : {}) }] as const;
          }),
        ),
        capabilities: this.currentCapabilities(),
        vms: await this.d.hypervisor.list(),
        ...(this.d.readVolume ? { volume: this.d.readVolume() } : {}),
        ...(fenced.length ? { fenced } : {}),
      },
    });
    for (const n of fenced) {
      this.fenced.delete(n);
      this.fenceReported.add(n);
    }
    if (answer.controllers?.length) this.learnedControllers = answer.controllers;
    if (answer.leadership) this.admitLeadership(answer.leadership);
    const renew = answer.lease.renew;
    if (renew && this.d.leaseStore) {
      this.renewsItself(renew, answer.lease.ttlMs, answer.ha);
      return;
    }
    this.fence = { validUntilMs: fenceDeadline(sentMs, answer.lease.ttlMs), ha: answer.ha };
    this.d.watchdog?.write(this.fence);
  }

  /** A heartbeat answer on a store where the agent renews its lease itself: it renews nothing, but names the HA VMs. */
  private renewsItself(at: LeaseRenewal, ttlMs: number, ha: string[]): HostLease {
    if (!this.own?.lease.renewsAt(at)) {
      void this.own?.lease.close();
      this.own = { lease: new HostLease(this.d.leaseStore!(at), at, this.o.node, this.d.clock), ttlMs, ha };
      this.d.log.info({ key: at.key }, `this host renews its own lease in the cluster store (${at.endpoints.join(', ')})`);
    }
    this.own.ttlMs = ttlMs;
    this.own.ha = ha;
    const target = JSON.stringify({ at, ttlMs, ha } satisfies LeaseTarget);
    if (target !== this.keptTarget) {
      this.d.leaseTarget?.write(JSON.parse(target) as LeaseTarget);
      this.keptTarget = target;
    }
    // Newly named HA VMs are fenced from now on (until the deadline the lease last gave); none is dropped before the key says so.
    const added = ha.filter((n) => !this.fence?.ha.includes(n));
    if (this.fence && added.length) {
      this.fence = { ...this.fence, ha: [...this.fence.ha, ...added] };
      this.d.watchdog?.write(this.fence);
    }
    return this.own.lease;
  }

  private linkCache: { at: number; links: Map<string, HostLink> } = { at: -Infinity, links: new Map() };
  private linkRefresh: Promise<void> | undefined;

  /**
   * The links under the beacons' addresses, as last read: a read older than five seconds is renewed in the
   * background. The kernel answers `ip addr` only under its network lock, which a namespace being torn down
   * elsewhere on the host can hold for seconds, and a heartbeat must not wait for that.
   */
  private links(): Map<string, HostLink> {
    if (!this.linkRefresh && this.d.clock.nowMs() - this.linkCache.at >= 5000) void this.refreshLinks();
    return this.linkCache.links;
  }

  private refreshLinks(): Promise<void> {
    if (!this.d.linksOf) return Promise.resolve();
    this.linkRefresh ??= this.d
      .linksOf(this.beacons.map((b) => b.address))
      .then((links) => void (this.linkCache = { at: this.d.clock.nowMs(), links }))
      .catch(() => void (this.linkCache = { ...this.linkCache, at: this.d.clock.nowMs() }))
      .finally(() => (this.linkRefresh = undefined));
    return this.linkRefresh;
  }

  currentCapabilities(): NodeCapabilities {
    return { ...this.capabilities, memoryFreeMiB: this.capabilities.memoryTotalMiB - this.d.hypervisor.committedMiB() };
  }

  /** Refuses an address that is not this node's on some cluster network. */
  ownAddress(address: string): void {
    const mine = [this.o.migrationAddress, ...this.o.networks.map((n) => n.address)];
    if (!mine.includes(address)) throw errors.invalid('address', `${address} is not an address of node '${this.o.node}' (it has ${mine.join(', ')})`);
  }

  async startVm(spec: VmSpec, opts: { incoming?: boolean; createDiskBytes?: number }): Promise<VmInstance> {
    if (this.d.hypervisor.has(spec.name)) throw errors.alreadyExists('VM process', `${spec.name}@${this.o.node}`);
    const free = this.currentCapabilities().memoryFreeMiB;
    if (spec.memoryMiB > free) throw errors.insufficientResources(`node '${this.o.node}' has ${free} MiB free, VM '${spec.name}' needs ${spec.memoryMiB} MiB`);
    if (opts.createDiskBytes) {
      if (this.d.fileExists(spec.diskPath)) throw errors.alreadyExists('disk image', spec.diskPath);
      await this.d.createImage(spec.diskPath, opts.createDiskBytes);
    }
    try {
      return await this.launch(spec, opts.incoming ?? false);
    } catch (e) {
      if (opts.createDiskBytes) this.d.removeFile(spec.diskPath);
      throw e;
    }
  }

  private async launch(spec: VmSpec, incoming: boolean): Promise<VmInstance> {
    this.fenceReported.delete(spec.name);
    const sw = spec.switch ?? DEFAULT_SWITCH;
    let nic: NicAttachment = { kind: 'none' };
    let bridge: string | undefined;
    if (sw !== '') {
      const socket = this.o.switchSocket(sw);
      if (this.o.nicBackend === 'bridge') {
        const binding = spec.switchBindings?.find((b) => b.node === this.o.node);
        if (!binding)
          throw errors.invalidState(`switch '${sw}' is not bound on ${this.o.node}: 'ferry net switch bind ${sw} --node ${this.o.node} --iface IF' first`);
        bridge = await this.d.uplinks.hostBridge(binding.iface);
        nic = { kind: 'tap', ifname: this.d.uplinks.vmTap(spec.name) };
      } else if (this.o.nicBackend === 'tap') {
        bridge = await this.d.uplinks.ensure(sw, socket);
        nic = { kind: 'tap', ifname: this.d.uplinks.vmTap(spec.name) };
      } else {
        nic = { kind: 'stream', socket };
      }
    }
    const inst = await this.d.hypervisor.launch(spec, { incoming, nic, cpuModel: spec.cpuModel ?? this.capabilities.cpu.model });
    if (nic.kind === 'tap') {
      try {
        await this.d.uplinks.attach(nic.ifname, bridge!);
      } catch (e) {
        await this.d.hypervisor.kill(spec.name);
        throw e;
      }
    }
    if (nic.kind === 'tap' && bridge) this.bridged.set(spec.name, { bridge, port: nic.ifname, mac: spec.mac });
    this.d.log.info({ vm: spec.name, pid: inst.pid }, `started QEMU of '${spec.name}' (pid ${inst.pid}${incoming ? ', incoming' : ''}, nic ${nic.kind})`);
    return inst;
  }

  /**
   * Announces a VM's MAC again (QEMU's announce). A VM on a host bridge is
   * announced until the bridge has learnt its MAC on the VM's port: proof
   * the announce left the host by the uplink (the upstream switches learn it from there).
   */
  async announce(name: string): Promise<{ bridge?: { name: string; port: string; learnt: boolean } }> {
    await this.d.hypervisor.announce(name);
    const b = this.o.nicBackend === 'bridge' ? this.bridged.get(name) : undefined;
    if (!b) return {};
    for (let i = 0; i < 20; i++) {
      if (await this.d.uplinks.learnt(b.bridge, b.mac, b.port)) return { bridge: { name: b.bridge, port: b.port, learnt: true } };
      await this.d.clock.sleep(50);
      if (i % 5 === 4) await this.d.hypervisor.announce(name);
    }
    return { bridge: { name: b.bridge, port: b.port, learnt: false } };
  }

  /** Scratch files of one guest (measurements). */
  scratch(name: string): string {
    return path.join(this.o.runDir, `${name}.sample`);
  }
}

/**
 * The replica side of Replica (R5): another Ferry cluster (or a standalone
 * one-node Ferry) keeps a copy of a VM's disk that a primary cluster sends.
 *
 * The primary registers the replica (VM shape, disk size, how many recovery
 * points to keep, and how to reach it back for `reverse`). For each sync it
 * asks for an NBD endpoint: a qemu-storage-daemon exporting the replica
 * disk writable on this controller's address; the primary's QEMU writes the
 * changed blocks into it; when the primary closes the sync, the daemon
 * stops and the disk gets an internal qcow2 snapshot, the recovery point
 * (the newest `keep` are kept). A failover starts the VM here from a
 * recovery point: copied out of the snapshot into the VM's own disk, so
 * the replica disk and its points stay as they were (a test failover can
 * run while replication goes on).
 *
 * Store keys: replica-in/<vm> → IncomingReplica. Files: <shared>/replicas/<vm>.qcow2.
 */
import path from 'node:path';
import type { Clock } from '../../domain/clock.js';
import { errors } from '../../domain/errors.js';
import type { NbdEndpoint } from '../../domain/block-jobs.js';
import type { StateLayout } from '../../domain/layout.js';
import { type VmRecord, VmState } from '../../domain/records.js';
import type { IncomingReplica, IncomingView, RecoveryPoint } from '../../domain/replicas.js';
import type { VirtualSwitch } from '../../domain/switches.js';
import type { VmCreate } from '../lifecycle.js';
import type { EventSink } from '../../ports/events.js';
import type { ClusterStore } from '../../ports/store.js';
import type { VmRepository } from '../../ports/vm-repository.js';
import type { ExportHandle, Volume } from '../../ports/volume.js';
import type { ReplicaRegistration } from '../../ports/remote-cluster.js';

export type { IncomingReplica, IncomingView, RecoveryPoint };

export interface IncomingDeps {
  store: ClusterStore;
  vms: VmRepository;
  volume: Volume;
  events: EventSink;
  clock: Clock;
  layout: StateLayout;
  clusterId: string;
  members: () => string[];
  createVm: (v: VmCreate) => Promise<VmRecord>;
  startVm: (name: string) => Promise<VmRecord>;
  deleteVm: (name: string) => Promise<void>;
  switches: {
    list(): Promise<VirtualSwitch[]>;
    create(name: string): Promise<unknown>;
    bind(node: string, iface: string, name: string): Promise<unknown>;
    bindings(): Promise<{ node: string; iface: string; switch: string | null }[]>;
  };
}

export const TEST_SWITCH = 'replica-test';

export class IncomingReplicas {
  private readonly open = new Map<string, ExportHandle>();

  constructor(private readonly d: IncomingDeps) {}

  private key(vm: string): string {
    return `replica-in/${vm}`;
  }

  private get dir(): string {
    return path.join(this.d.layout.shared, 'replicas');
  }

  static view(r: IncomingReplica): IncomingView {
    const { token: _token, ...source } = r.source;
    return { ...r, source };
  }

  async list(): Promise<IncomingReplica[]> {
    return (await this.d.store.list<IncomingReplica>('replica-in/')).map((e) => e.value);
  }

  async find(vm: string): Promise<IncomingReplica | undefined> {
    return (await this.d.store.get<IncomingReplica>(this.key(vm)))?.value;
  }

  async get(vm: string): Promise<IncomingReplica> {
    const r = await this.find(vm);
    if (!r) throw errors.invalid('vm', `this cluster holds no replica of VM '${vm}'`);
    return r;
  }

  /** Registers (or re-registers) a replica sent by another cluster; the disk starts empty. */
  async register(body: ReplicaRegistration): Promise<IncomingView> {
    const { vm, source: s, spec } = body;
    if (s.clusterId === this.d.clusterId) throw errors.invalid('source', 'a cluster cannot replicate to itself');
    const existing = await this.find(vm);
    if (existing && existing.source.clusterId !== s.clusterId && existing.state === 'replicating') {
      throw errors.conflict(`this cluster already holds a replica of VM '${vm}' from cluster ${existing.source.clusterId}`);
    }
    const local = await this.d.vms.find(vm);
    if (local && local.state !== VmState.Stopped)
      throw errors.conflict(`VM '${vm}' is ${local.state} in the replica cluster: stop it before it can receive a replica`);
    await this.closeSync(vm, undefined).catch(() => {});
    this.d.volume.ensureWritableDir(this.dir, { recursive: true });
    const disk = path.join(this.dir, `${vm}.qcow2`);
    this.d.volume.remove(disk);
    await this.d.volume.create(disk, spec.diskGiB * 1073741824);
    const r: IncomingReplica = {
      vm,
      source: { clusterId: s.clusterId, url: s.url, token: s.token },
      spec: { memoryMiB: spec.memoryMiB, cpus: spec.cpus, diskGiB: spec.diskGiB, workload: spec.workload },
      interval: body.interval,
      keep: body.keep,
      disk,
      points: [],
      state: 'replicating',
      createdAtMs: this.d.clock.nowMs(),
    };
    await this.d.store.put(this.key(vm), r);
    await this.d.events.emit({ type: 'replica.incoming', vm, message: `receiving a replica of ${vm} from cluster ${s.clusterId} (${s.url})` });
    return IncomingReplicas.view(r);
  }

  /** Opens one sync: the replica disk is exported writable over NBD on `host` (this controller's address). */
  async openSync(vm: string, host: string): Promise<NbdEndpoint> {
    const r = await this.get(vm);
    if (r.state !== 'replicating') throw errors.invalidState(`the replica of '${vm}' is ${r.state}`);
    await this.closeSync(vm, undefined);
    const handle = await this.d.volume.exportImage(r.disk, host, `replica-${vm}`);
    this.open.set(vm, handle);
    return handle.endpoint;
  }

  /**
   * Ends a sync: stops the export; with `point` (the sync succeeded) the
   * disk gets a recovery point and the oldest beyond `keep` go.
   */
  async closeSync(vm: string, point: RecoveryPoint | undefined): Promise<RecoveryPoint | undefined> {
    const o = this.open.get(vm);
    if (o) {
      this.open.delete(vm);
      await o.close();
    }
    if (!point) return undefined;
    const r = await this.get(vm);
    await this.d.volume.snapshot(r.disk, point.id);
    const points = [...r.points, point];
    const drop = points.slice(0, Math.max(0, points.length - r.keep));
    for (const p of drop) await this.d.volume.deleteSnapshot(r.disk, p.id);
    await this.d.store.put(this.key(vm), { ...r, points: points.slice(drop.length) });
    return point;
  }

  /**
   * Starts the VM in this cluster from a recovery point (default: the
   * newest). `test`: as `<vm>-test` on an isolated switch, replication goes
   * on; otherwise as `<vm>` itself (a stopped VM of that name takes the
   * disk), and the replica is marked failed over.
   */
  async failover(vm: string, opts: { point?: string; test?: boolean } = {}): Promise<{ vm: VmRecord; point: RecoveryPoint }> {
    const r = await this.get(vm);
    if (r.state !== 'replicating' && !opts.test) throw errors.invalidState(`the replica of '${vm}' is ${r.state}`);
    // A sync in flight ends first (the snapshot it adds may be the point).
    const waitUntil = this.d.clock.nowMs() + 60_000;
    while (this.open.has(vm) && this.d.clock.nowMs() < waitUntil) await this.d.clock.sleep(100);
    const fresh = await this.get(vm);
    const point = opts.point ? fresh.points.find((p) => p.id === opts.point) : fresh.points.at(-1);
    if (!point) {
      throw errors.invalid(
        'point',
        opts.point
          ? `the replica of '${vm}' has no recovery point '${opts.point}' (it has ${fresh.points.map((p) => p.id).join(', ') || 'none'})`
          : `the replica of '${vm}' has no recovery point yet`,
      );
    }
    const name = opts.test ? `${vm}-test` : vm;
    let sw: string | undefined;
    if (opts.test) sw = await this.isolatedSwitch();
    let target = await this.d.vms.find(name);
    if (target && target.state !== VmState.Stopped) throw errors.conflict(`VM '${name}' is ${target.state} in this cluster`);
    const created = !target;
    target ??= await this.d.createVm({
      name,
      memoryMiB: fresh.spec.memoryMiB,
      cpus: fresh.spec.cpus,
      diskGiB: fresh.spec.diskGiB,
      workload: fresh.spec.workload,
      ...(sw ? { switch: sw } : {}),
    });
    try {
      await this.d.volume.replace(target.diskPath, ['-U', '-l', `snapshot.name=${point.id}`, fresh.disk]);
      const started = await this.d.startVm(name);
      if (!opts.test) await this.d.store.put(this.key(vm), { ...(await this.get(vm)), state: 'failed-over', failedOverAtMs: this.d.clock.nowMs() });
      await this.d.events.emit({
        type: 'replica.failover',
        vm: name,
        message: `${opts.test ? 'test failover' : 'failover'} of ${vm}: ${name} started from recovery point ${point.id} (${new Date(point.atMs).toISOString()})`,
      });
      return { vm: started, point };
    } catch (e) {
      if (created) await this.d.deleteVm(name).catch(() => {});
      throw e;
    }
  }

  /** The switch test failovers use: its own L2 domain, bound where a free interface is. */
  private async isolatedSwitch(): Promise<string> {
    const existing = (await this.d.switches.list()).find((s) => s.name === TEST_SWITCH);
    if (existing?.bindings.length) return TEST_SWITCH;
    if (!existing) await this.d.switches.create(TEST_SWITCH);
    const taken = new Set((await this.d.switches.bindings()).filter((b) => b.switch).map((b) => `${b.node}/${b.iface}`));
    for (const n of this.d.members()) {
      if (!taken.has(`${n}/eth1`)) {
        await this.d.switches.bind(n, 'eth1', TEST_SWITCH);
        return TEST_SWITCH;
      }
    }
    throw errors.invalidState(`no node has a free interface for the isolated switch '${TEST_SWITCH}'`);
  }

  /** The replica is no longer wanted (disabled on the primary, or reversed). */
  async remove(vm: string, state?: 'reversed'): Promise<void> {
    const r = await this.find(vm);
    if (!r) return;
    await this.closeSync(vm, undefined);
    if (state) {
      await this.d.store.put(this.key(vm), { ...r, state });
      return;
    }
    this.d.volume.remove(r.disk);
    await this.d.store.delete(this.key(vm));
    await this.d.events.emit({ type: 'replica.removed', vm, message: `replica of ${vm} removed` });
  }

  async closeAll(): Promise<void> {
    for (const vm of [...this.open.keys()]) await this.closeSync(vm, undefined).catch(() => {});
  }
}

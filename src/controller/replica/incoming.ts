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
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Controller } from '../controller.js';
import { validateName } from '../../domain/validate.js';
import { errors } from '../../domain/errors.js';
import { type VmRecord, VmState } from '../../domain/records.js';
import { createImage, replaceImage } from '../../qemu/mirror-job.js';
import type { IncomingReplica, IncomingView, RecoveryPoint } from '../../domain/replicas.js';
export type { IncomingReplica, IncomingView, RecoveryPoint };
import { freePort, type NbdEndpoint } from '../../qemu/nbd-mirror.js';

const run = promisify(execFile);

interface OpenSync {
  proc: ChildProcess;
  exited: Promise<void>;
}

export const TEST_SWITCH = 'replica-test';

export class IncomingReplicas {
  private readonly open = new Map<string, OpenSync>();

  constructor(private readonly c: Controller) {}

  private key(vm: string): string {
    return `replica-in/${vm}`;
  }

  private pidFile(vm: string): string {
    return path.join(this.c.layout.run, `qsd-replica-${vm}.pid`);
  }

  private get dir(): string {
    return path.join(this.c.layout.shared, 'replicas');
  }

  static view(r: IncomingReplica): IncomingView {
    const { token: _token, ...source } = r.source;
    return { ...r, source };
  }

  async list(): Promise<IncomingReplica[]> {
    return (await this.c.store.list<IncomingReplica>('replica-in/')).map((e) => e.value);
  }

  async find(vm: string): Promise<IncomingReplica | undefined> {
    return (await this.c.store.get<IncomingReplica>(this.key(vm)))?.value;
  }

  async get(vm: string): Promise<IncomingReplica> {
    const r = await this.find(vm);
    if (!r) throw errors.invalid('vm', `this cluster holds no replica of VM '${vm}'`);
    return r;
  }

  /** Registers (or re-registers) a replica sent by another cluster; the disk starts empty. */
  async register(body: Partial<IncomingReplica>): Promise<IncomingView> {
    const vm = body.vm ?? '';
    validateName('VM', vm);
    const s = body.source;
    if (!s || typeof s.clusterId !== 'string' || typeof s.url !== 'string' || typeof s.token !== 'string') throw errors.invalid('source', 'a replica needs its source cluster id, API URL and token');
    if (s.clusterId === this.c.config.id) throw errors.invalid('source', 'a cluster cannot replicate to itself');
    const spec = body.spec;
    if (!spec || !Number.isInteger(spec.diskGiB) || spec.diskGiB < 1) throw errors.invalid('spec', 'a replica needs the VM\'s shape (memoryMiB, cpus, diskGiB, workload)');
    const existing = await this.find(vm);
    if (existing && existing.source.clusterId !== s.clusterId && existing.state === 'replicating') {
      throw errors.conflict(`this cluster already holds a replica of VM '${vm}' from cluster ${existing.source.clusterId}`);
    }
    const local = await this.c.vm(vm).catch(() => undefined);
    if (local && local.state !== VmState.Stopped) throw errors.conflict(`VM '${vm}' is ${local.state} in the replica cluster: stop it before it can receive a replica`);
    await this.closeSync(vm, undefined).catch(() => {});
    fs.mkdirSync(this.dir, { recursive: true });
    const disk = path.join(this.dir, `${vm}.qcow2`);
    fs.rmSync(disk, { force: true });
    await createImage(disk, spec.diskGiB * 1073741824);
    const r: IncomingReplica = {
      vm, source: { clusterId: s.clusterId, url: s.url, token: s.token },
      spec: { memoryMiB: spec.memoryMiB, cpus: spec.cpus, diskGiB: spec.diskGiB, workload: spec.workload },
      interval: body.interval ?? '5m', keep: body.keep ?? 3, disk, points: [], state: 'replicating', createdAtMs: this.c.clock.nowMs(),
    };
    await this.c.store.put(this.key(vm), r);
    await this.c.event({ type: 'replica.incoming', vm, message: `receiving a replica of ${vm} from cluster ${s.clusterId} (${s.url})` });
    return IncomingReplicas.view(r);
  }

  /** Opens one sync: a qemu-storage-daemon exports the replica disk writable over NBD. */
  async openSync(vm: string, host: string): Promise<NbdEndpoint> {
    const r = await this.get(vm);
    if (r.state !== 'replicating') throw errors.invalidState(`the replica of '${vm}' is ${r.state}`);
    await this.closeSync(vm, undefined);
    const port = await freePort(host);
    const proc = spawn('qemu-storage-daemon', [
      '--blockdev', `driver=file,node-name=f,filename=${r.disk}`,
      '--blockdev', 'driver=qcow2,node-name=d,file=f',
      '--nbd-server', `addr.type=inet,addr.host=${host},addr.port=${port}`,
      '--export', 'type=nbd,id=e,node-name=d,name=disk,writable=on',
      '--pidfile', this.pidFile(vm),
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    this.open.set(vm, { proc, exited });
    // Ready once it listens.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const sock = net.connect(port, host, () => (sock.destroy(), resolve(true))).once('error', () => resolve(false));
      });
      if (ok) break;
      if (proc.exitCode !== null || Date.now() > deadline) {
        await this.closeSync(vm, undefined);
        throw errors.internal(`the replica's NBD export did not start: ${stderr.trim() || 'not listening'}`);
      }
      await new Promise((r2) => setTimeout(r2, 20));
    }
    return { address: host, port, export: 'disk' };
  }

  /**
   * Ends a sync: stops the export; with `point` (the sync succeeded) the
   * disk gets a recovery point and the oldest beyond `keep` go.
   */
  async closeSync(vm: string, point: RecoveryPoint | undefined): Promise<RecoveryPoint | undefined> {
    const o = this.open.get(vm);
    if (o) {
      this.open.delete(vm);
      if (o.proc.exitCode === null) {
        o.proc.kill('SIGTERM');
        const t = setTimeout(() => o.proc.kill('SIGKILL'), 5000);
        await o.exited;
        clearTimeout(t);
      }
      fs.rmSync(this.pidFile(vm), { force: true });
    }
    if (!point) return undefined;
    const r = await this.get(vm);
    if (!/^p-[a-z0-9-]{1,40}$/.test(point.id)) throw errors.invalid('point', `a recovery point id is p-…, got '${point.id}'`);
    await run('qemu-img', ['snapshot', '-q', '-c', point.id, r.disk]);
    const points = [...r.points, point];
    const drop = points.slice(0, Math.max(0, points.length - r.keep));
    for (const p of drop) await run('qemu-img', ['snapshot', '-q', '-d', p.id, r.disk]);
    await this.c.store.put(this.key(vm), { ...r, points: points.slice(drop.length) });
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
    const waitUntil = Date.now() + 60_000;
    while (this.open.has(vm) && Date.now() < waitUntil) await this.c.clock.sleep(100);
    const fresh = await this.get(vm);
    const point = opts.point ? fresh.points.find((p) => p.id === opts.point) : fresh.points.at(-1);
    if (!point) {
      throw errors.invalid('point', opts.point
        ? `the replica of '${vm}' has no recovery point '${opts.point}' (it has ${fresh.points.map((p) => p.id).join(', ') || 'none'})`
        : `the replica of '${vm}' has no recovery point yet`);
    }
    const name = opts.test ? `${vm}-test` : vm;
    let sw: string | undefined;
    if (opts.test) sw = await this.isolatedSwitch();
    let target = await this.c.vm(name).catch(() => undefined);
    if (target && target.state !== VmState.Stopped) throw errors.conflict(`VM '${name}' is ${target.state} in this cluster`);
    const created = !target;
    target ??= await this.c.createVm({ name, memoryMiB: fresh.spec.memoryMiB, cpus: fresh.spec.cpus, diskGiB: fresh.spec.diskGiB, workload: fresh.spec.workload, ...(sw ? { switch: sw } : {}) });
    try {
      await replaceImage(target.diskPath, ['-U', '-l', `snapshot.name=${point.id}`, fresh.disk]);
      const started = await this.c.startVm(name);
      if (!opts.test) await this.c.store.put(this.key(vm), { ...(await this.get(vm)), state: 'failed-over', failedOverAtMs: this.c.clock.nowMs() });
      await this.c.event({ type: 'replica.failover', vm: name, message: `${opts.test ? 'test failover' : 'failover'} of ${vm}: ${name} started from recovery point ${point.id} (${new Date(point.atMs).toISOString()})` });
      return { vm: started, point };
    } catch (e) {
      if (created) await this.c.deleteVm(name).catch(() => {});
      throw e;
    }
  }

  /** The switch test failovers use: its own L2 domain, bound where a free interface is. */
  private async isolatedSwitch(): Promise<string> {
    const existing = (await this.c.switches.list()).find((s) => s.name === TEST_SWITCH);
    if (existing?.bindings.length) return TEST_SWITCH;
    if (!existing) await this.c.switches.create(TEST_SWITCH);
    const taken = new Set((await this.c.switches.bindings()).filter((b) => b.switch).map((b) => `${b.node}/${b.iface}`));
    for (const n of this.c.config.nodes) {
      if (!taken.has(`${n.name}/eth1`)) {
        await this.c.switches.bind(n.name, 'eth1', TEST_SWITCH);
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
      await this.c.store.put(this.key(vm), { ...r, state });
      return;
    }
    fs.rmSync(r.disk, { force: true });
    await this.c.store.delete(this.key(vm));
    await this.c.event({ type: 'replica.removed', vm, message: `replica of ${vm} removed` });
  }

  async closeAll(): Promise<void> {
    for (const vm of [...this.open.keys()]) await this.closeSync(vm, undefined).catch(() => {});
  }
}

/**
 * The node agent: one per host. Owns this host's QEMU processes and performs
 * the host-side half of every operation; the controller decides, the agent
 * does. Its HTTP API listens on loopback only.
 *
 *   POST   /v1/vms                      start QEMU for a spec (optionally as a migration target)
 *   GET    /v1/vms, /v1/vms/:name       what runs here, with QEMU's run state
 *   POST   /v1/vms/:name/stop           quit QEMU (graceful, then kill)
 *   DELETE /v1/vms/:name                kill QEMU now and remove its runtime files
 *   POST   /v1/vms/:name/incoming       target: listen for the migration stream
 *   POST   /v1/vms/:name/migration      source: start sending to a target
 *   GET    /v1/vms/:name/migration      source or target: transfer progress
 *   POST   /v1/vms/:name/migration/cancel
 *   POST   /v1/vms/:name/announce       ask QEMU to send its RARP announce again
 *   GET    /v1/vms/:name/console        console stream (raw, follows)
 *   POST   /v1/vms/:name/console        console input
 *   GET    /v1/vms/:name/nic            NIC offloads the device offers and the guest negotiated
 *   POST   /v1/vms/:name/backup         an online backup job (full, or incremental from the change bitmap)
 *   POST   /v1/vms/:name/move-storage   mirror the running VM's disk to a new image and switch to it
 *   POST   /v1/vms/:name/migration/postcopy   switch a running transfer to post-copy
 *   POST   /v1/vms/:name/measure        the guest's dirty rate and non-zero memory (for the prediction)
 *   POST   /v1/net/probe                can this node reach an address on a cluster network?
 *   POST   /v1/net/throughput           how fast this node can send to another's beacon
 *
 * The API listens on the node's management-network address; on every
 * cluster network the node also answers reachability probes (a "beacon").
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Router, callJson, serve, type Listening } from '../api/http.js';
import { ErrorCode, FerryError, errors, toFerryError } from '../domain/errors.js';
import { ensureImage, type GuestImage } from '../guest/image.js';
import { cacheDir } from '../guest/image.js';
import type { NodeCapabilities, VmInstance, VmSpec } from '../domain/records.js';
import type { TransferTuning } from '../domain/transfer.js';
import { detectAccelerator } from '../qemu/accel.js';
import { cpuIdentity, hostCpu, qemuVersion } from '../qemu/cpu.js';
import { incomingCapabilities, incomingParameters, migrationCapabilities, migrationParameters, toTransferProgress } from '../qemu/migration-params.js';
import { QemuVm } from '../qemu/qemu-vm.js';
import type { StateLayout } from '../config/paths.js';
import { listenBeacon, measureThroughput, probeTcp } from './net-tools.js';
import { measureDirtyRate, measureNonZero } from '../qemu/dirty-rate.js';
import { DEFAULT_SWITCH } from '../switch/daemon.js';
import { type NicAttachment, nicStatus, probeBackendOffloads } from '../qemu/nic.js';
import type { NicBackend } from '../domain/nic.js';
import { TapUplinks } from './tap-uplink.js';
import { freezeDisk, mergeOverlay } from '../qemu/backup-job.js';
import { cancelReplicaJob, runReplicaJob } from '../qemu/replica-job.js';
import { endNbdMirror, type NbdEndpoint, startNbdExport, startNbdMirror, stopNbdExport } from '../qemu/nbd-mirror.js';
import { createImage, runMirrorJob } from '../qemu/mirror-job.js';

export interface AgentOptions {
  node: string;
  layout: StateLayout;
  clusterId: string;
  controllerUrl?: string;
  /** Finds the controller again after it restarted (a new address). */
  resolveController?: () => string | undefined;
  token: string;
  /** Address QEMU listens on for incoming migrations unless the controller picks another network. */
  migrationAddress: string;
  /** This node's address on each cluster network. */
  networks?: { network: string; address: string }[];
  /** Memory this node offers to VMs; defaults to the host's total. */
  memoryMiB?: number;
  /** CPU model guests get on this node; default: host under KVM, qemu64 under TCG. */
  cpuModel?: string;
  /** How VMs' NICs reach the switch: a unix stream (default) or a tap with the virtio-net header. */
  nicBackend?: NicBackend;
  log?: (line: string) => void;
}

interface StartRequest {
  spec: VmSpec;
  incoming?: boolean;
  /** Create the VM's disk image first, empty, this size (the target of a shared-nothing migration). */
  createDiskBytes?: number;
}

export class Agent {
  private readonly vms = new Map<string, QemuVm>();
  /** What QEMU printed last before it exited on its own, per VM. */
  private readonly lastExit = new Map<string, string>();
  private readonly runDir: string;
  private image!: GuestImage;
  capabilities!: NodeCapabilities;
  private api: Listening | undefined;
  private beacons: { network: string; address: string; port: number; close(): Promise<void> }[] = [];
  private readonly uplinks: TapUplinks;
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly log: (line: string) => void;

  constructor(private readonly opts: AgentOptions) {
    this.runDir = opts.layout.nodeRun(opts.node);
    this.uplinks = new TapUplinks(opts.node, opts.clusterId, this.runDir);
    this.log = opts.log ?? (() => {});
  }

  get url(): string {
    if (!this.api) throw errors.internal('agent is not listening');
    return this.api.url;
  }

  async start(): Promise<void> {
    fs.mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
    fs.chmodSync(this.runDir, 0o700);
    this.image = await ensureImage(this.log);
    const accel = await detectAccelerator(this.image.kernelPath, cacheDir());
    const model = this.opts.cpuModel ?? (accel.accelerator === 'kvm' ? 'host' : 'qemu64');
    const cpu = await cpuIdentity(accel.accelerator, model);
    if (accel.accelerator === 'kvm') cpu.vendor = hostCpu().vendor;
    const totalMiB = this.opts.memoryMiB ?? Math.floor(os.totalmem() / 1048576);
    const backend = this.opts.nicBackend ?? 'stream';
    const nicOffloads = await probeBackendOffloads(backend, path.join(this.runDir, 'nic-probe.sock'));
    fs.rmSync(path.join(this.runDir, 'nic-probe.sock'), { force: true });
    this.capabilities = {
      accelerator: accel.accelerator,
      acceleratorReason: accel.reason,
      cpu,
      qemuVersion: await qemuVersion(),
      memoryTotalMiB: totalMiB,
      memoryFreeMiB: totalMiB,
      cpuCount: os.cpus().length,
      // QEMU offers checksum offload only when the backend carries the virtio-net header.
      nic: { backend, offloads: nicOffloads, vnetHeader: nicOffloads.includes('csum') },
    };
    this.log(`accelerator ${accel.accelerator}: ${accel.reason}; cpu ${cpu.vendor} ${cpu.model}`);
    await this.adoptAll();
    for (const n of this.opts.networks ?? []) this.beacons.push({ ...n, ...(await listenBeacon(n.address)) });
    const management = this.opts.networks?.find((n) => n.network === 'management');
    this.api = await serve(this.router(), management?.address ?? '127.0.0.1');
    if (this.opts.controllerUrl) {
      await this.sendHeartbeat().catch(() => {});
      this.heartbeat = setInterval(() => void this.sendHeartbeat().catch(() => {}), 1000);
    }
  }

  /** Stops serving; VMs keep running (a restarted agent adopts them). */
  async stop(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    await this.api?.close();
    await Promise.all(this.beacons.map((b) => b.close()));
    this.beacons = [];
    for (const vm of this.vms.values()) vm.detach();
    this.vms.clear();
  }

  private controllerUrl: string | undefined;

  private async sendHeartbeat(): Promise<void> {
    this.controllerUrl ??= this.opts.controllerUrl;
    try {
      await this.heartbeatTo(this.controllerUrl!);
    } catch (e) {
      const fresh = this.opts.resolveController?.();
      if (!fresh || fresh === this.controllerUrl) throw e;
      this.log(`controller moved to ${fresh}`);
      this.controllerUrl = fresh;
      await this.heartbeatTo(fresh);
    }
  }

  private async heartbeatTo(url: string): Promise<void> {
    await callJson(url, 'POST', '/api/v1/agents/heartbeat', {
      name: this.opts.node,
      url: this.url,
      clusterId: this.opts.clusterId,
      migrationAddress: this.opts.migrationAddress,
      networks: Object.fromEntries(this.beacons.map((b) => [b.network, { address: b.address, port: b.port }])),
      capabilities: this.currentCapabilities(),
      vms: await this.instances(),
    }, { token: this.opts.token, timeoutMs: 3000 });
  }

  private currentCapabilities(): NodeCapabilities {
    const used = [...this.vms.values()].reduce((sum, vm) => sum + vm.descriptor.launch.spec.memoryMiB, 0);
    return { ...this.capabilities, memoryFreeMiB: this.capabilities.memoryTotalMiB - used };
  }

  private descriptorPath(name: string): string {
    return path.join(this.runDir, `${name}.json`);
  }

  private async adoptAll(): Promise<void> {
    for (const f of fs.readdirSync(this.runDir)) {
      if (!f.endsWith('.json')) continue;
      const vm = await QemuVm.adopt(path.join(this.runDir, f));
      if (vm) {
        this.track(vm);
        this.log(`adopted running QEMU of '${vm.name}' (pid ${vm.pid})`);
      } else {
        this.removeRuntimeFiles(f.slice(0, -'.json'.length));
      }
    }
  }

  private track(vm: QemuVm): void {
    this.vms.set(vm.name, vm);
    void vm.gone.then(() => {
      if (this.vms.get(vm.name) === vm) {
        this.vms.delete(vm.name);
        this.removeRuntimeFiles(vm.name);
        const stderrPath = path.join(this.runDir, `${vm.name}.stderr`);
        const stderr = fs.existsSync(stderrPath) ? fs.readFileSync(stderrPath, 'utf8').trim().split('\n').slice(-3).join(' | ') : '';
        this.lastExit.set(vm.name, stderr);
        this.log(`QEMU of '${vm.name}' exited unexpectedly${stderr ? `: ${stderr}` : ''}`);
      }
    });
  }

  private removeRuntimeFiles(name: string): void {
    for (const suffix of ['.json', '.qmp', '.serial', '.pid']) fs.rmSync(path.join(this.runDir, name + suffix), { force: true });
  }

  private vm(name: string): QemuVm {
    const vm = this.vms.get(name);
    if (!vm) {
      const last = this.lastExit.get(name);
      throw new FerryError(
        ErrorCode.VmNotFound,
        `VM '${name}' is not running on node '${this.opts.node}'${last ? ` (its QEMU exited: ${last})` : ''}`,
        { details: { vm: name, node: this.opts.node } },
      );
    }
    return vm;
  }

  async instances(): Promise<VmInstance[]> {
    return Promise.all([...this.vms.values()].map((vm) => this.instance(vm)));
  }

  private async instance(vm: QemuVm): Promise<VmInstance> {
    let runState = 'unknown';
    try {
      runState = (await vm.qmp.execute('query-status', {}, { timeoutMs: 2000 })).status;
    } catch {
      runState = vm.qmp.closed ? 'exited' : 'unresponsive';
    }
    return { name: vm.name, pid: vm.pid, runState, incoming: vm.descriptor.launch.incoming, startedAtMs: vm.descriptor.startedAtMs };
  }

  async startVm(req: StartRequest): Promise<VmInstance> {
    const spec = req.spec;
    if (this.vms.has(spec.name)) throw errors.alreadyExists('VM process', `${spec.name}@${this.opts.node}`);
    const free = this.currentCapabilities().memoryFreeMiB;
    if (spec.memoryMiB > free) {
      throw errors.insufficientResources(`node '${this.opts.node}' has ${free} MiB free, VM '${spec.name}' needs ${spec.memoryMiB} MiB`);
    }
    if (req.createDiskBytes) {
      if (fs.existsSync(spec.diskPath)) throw errors.alreadyExists('disk image', spec.diskPath);
      await createImage(spec.diskPath, req.createDiskBytes);
    }
    try {
      return await this.launchVm(spec, req.incoming ?? false);
    } catch (e) {
      if (req.createDiskBytes) fs.rmSync(spec.diskPath, { force: true });
      throw e;
    }
  }

  private async launchVm(spec: VmSpec, incoming: boolean): Promise<VmInstance> {
    const sw = spec.switch ?? DEFAULT_SWITCH;
    let nic: NicAttachment = { kind: 'none' };
    let bridge: string | undefined;
    if (sw !== '') {
      const socket = this.opts.layout.switchSocket(sw, this.opts.node);
      if (this.opts.nicBackend === 'tap') {
        bridge = await this.uplinks.ensure(sw, socket);
        nic = { kind: 'tap', ifname: this.uplinks.vmTap(spec.name) };
      } else {
        nic = { kind: 'stream', socket };
      }
    }
    const vm = await QemuVm.launch(
      {
        spec,
        accelerator: this.capabilities.accelerator,
        cpuModel: spec.cpuModel ?? this.capabilities.cpu.model,
        kernelPath: this.image.kernelPath,
        initrdPath: this.image.initrdPath,
        qmpSocket: path.join(this.runDir, `${spec.name}.qmp`),
        serialSocket: path.join(this.runDir, `${spec.name}.serial`),
        nic,
        pidFile: path.join(this.runDir, `${spec.name}.pid`),
        incoming,
      },
      this.descriptorPath(spec.name),
      path.join(this.runDir, `${spec.name}.stderr`),
    );
    if (nic.kind === 'tap') {
      try {
        await this.uplinks.attach(nic.ifname, bridge!);
      } catch (e) {
        await vm.kill();
        throw e;
      }
    }
    this.track(vm);
    this.log(`started QEMU of '${spec.name}' (pid ${vm.pid}${incoming ? ', incoming' : ''}, nic ${nic.kind})`);
    return this.instance(vm);
  }

  async stopVm(name: string): Promise<void> {
    const vm = this.vm(name);
    this.vms.delete(name);
    await vm.quit();
    this.removeRuntimeFiles(name);
  }

  /** Kills the VM's QEMU; with `pid`, only if that is still the process (not a newer one of the same name). */
  async killVm(name: string, pid?: number): Promise<boolean> {
    const vm = this.vms.get(name);
    if (!vm || (pid !== undefined && vm.pid !== pid)) return false;
    this.vms.delete(name);
    await vm.kill();
    this.removeRuntimeFiles(name);
    return true;
  }

  /** The QEMU now runs on another image: its spec (what a migration target gets, what adoption reads) says so too. */
  private saveDiskPath(vm: QemuVm, diskPath: string): void {
    vm.descriptor.launch.spec.diskPath = diskPath;
    fs.writeFileSync(this.descriptorPath(vm.name), JSON.stringify(vm.descriptor), { mode: 0o600 });
  }

  /** Refuses an address that is not this node's on some cluster network. */
  private ownAddress(address: string): void {
    const mine = [this.opts.migrationAddress, ...(this.opts.networks ?? []).map((n) => n.address)];
    if (!mine.includes(address)) throw errors.invalid('address', `${address} is not an address of node '${this.opts.node}' (it has ${mine.join(', ')})`);
  }

  private router(): Router {
    const r = new Router();
    r.guard = (req) => {
      if (req.path === '/v1/health') return; // identity only: lets a controller see whose node this is
      if (req.headers.authorization !== `Bearer ${this.opts.token}`) throw errors.unauthorized();
    };
    r.on('GET', '/v1/health', () => ({ node: this.opts.node, clusterId: this.opts.clusterId, pid: process.pid }));
    r.on('GET', '/v1/vms/:name/nic', (req) => nicStatus(this.vm(req.params.name!).qmp));
    r.on('POST', '/v1/vms/:name/backup/freeze', async (req) => {
      const vm = this.vm(req.params.name!);
      const b = req.body as { overlay: string; mode: 'full' | 'incremental' };
      const res = await freezeDisk(vm.qmp, b.overlay, b.mode);
      this.saveDiskPath(vm, res.overlay);
      return res;
    });
    r.on('POST', '/v1/vms/:name/backup/merge', async (req) => {
      const vm = this.vm(req.params.name!);
      const res = await mergeOverlay(vm.qmp, (req.body as { copied?: boolean } | undefined)?.copied === true);
      this.saveDiskPath(vm, res.base);
      fs.rmSync(res.overlay, { force: true });
      return res;
    });
    r.on('POST', '/v1/vms/:name/replica-sync', (req) => runReplicaJob(this.vm(req.params.name!).qmp, req.body as NbdEndpoint & { mode: 'full' | 'incremental' }));
    r.on('POST', '/v1/vms/:name/replica-sync/cancel', async (req) => ({ cancelled: await cancelReplicaJob(this.vm(req.params.name!).qmp) }));
    r.on('POST', '/v1/vms/:name/move-storage', async (req) => {
      const vm = this.vm(req.params.name!);
      const b = req.body as { target: string; sizeBytes: number };
      const res = await runMirrorJob(vm.qmp, b.target, b.sizeBytes);
      this.saveDiskPath(vm, b.target);
      return res;
    });
    r.on('POST', '/v1/vms/:name/nbd-export', (req) => {
      const address = (req.body as { address?: string } | undefined)?.address ?? this.opts.migrationAddress;
      this.ownAddress(address);
      return startNbdExport(this.vm(req.params.name!).qmp, address);
    });
    r.on('DELETE', '/v1/vms/:name/nbd-export', async (req) => {
      await stopNbdExport(this.vm(req.params.name!).qmp);
      return {};
    });
    r.on('POST', '/v1/vms/:name/disk-mirror', (req) => startNbdMirror(this.vm(req.params.name!).qmp, req.body as NbdEndpoint));
    r.on('POST', '/v1/vms/:name/disk-mirror/end', (req) => endNbdMirror(this.vm(req.params.name!).qmp, (req.body as { complete?: boolean } | undefined)?.complete === true));
    r.on('POST', '/v1/vms/:name/migration/continue', async (req) => {
      await this.vm(req.params.name!).qmp.execute('migrate-continue' as never, { state: 'pre-switchover' } as never);
      return {};
    });
    r.on('POST', '/v1/net/throughput', (req) => {
      const b = (req.body ?? {}) as { from?: string; to?: string; port?: number; ms?: number };
      if (typeof b.to !== 'string' || typeof b.port !== 'number') throw errors.invalid('throughput', 'a throughput test needs to and port');
      if (b.from !== undefined) this.ownAddress(b.from);
      return measureThroughput(b.to, b.port, { ...(b.from ? { localAddress: b.from } : {}), ms: Math.min(b.ms ?? 300, 3000) });
    });
    r.on('POST', '/v1/net/probe', (req) => {
      const b = (req.body ?? {}) as { from?: string; to?: string; port?: number; timeoutMs?: number };
      if (typeof b.to !== 'string' || typeof b.port !== 'number') throw errors.invalid('probe', 'a probe needs to and port');
      if (b.from !== undefined) this.ownAddress(b.from);
      return probeTcp(b.to, b.port, { ...(b.from ? { localAddress: b.from } : {}), timeoutMs: Math.min(b.timeoutMs ?? 500, 5000) });
    });
    r.on('GET', '/v1/capabilities', () => this.currentCapabilities());
    r.on('GET', '/v1/vms', () => this.instances());
    r.on('GET', '/v1/vms/:name', (req) => this.instance(this.vm(req.params.name!)));
    // The configuration the VM runs with: what a migration target is created from.
    r.on('GET', '/v1/vms/:name/config', (req) => this.vm(req.params.name!).descriptor.launch.spec);
    r.on('POST', '/v1/vms', (req) => this.startVm(req.body as StartRequest));
    r.on('POST', '/v1/vms/:name/stop', async (req) => {
      await this.stopVm(req.params.name!);
      return { stopped: req.params.name };
    });
    r.on('DELETE', '/v1/vms/:name', async (req) => {
      const pid = req.query.get('pid');
      return { killed: await this.killVm(req.params.name!, pid ? Number(pid) : undefined) };
    });
    r.on('POST', '/v1/vms/:name/pause', async (req) => {
      await this.vm(req.params.name!).qmp.execute('stop', {});
      return {};
    });
    r.on('POST', '/v1/vms/:name/resume', async (req) => {
      await this.vm(req.params.name!).qmp.execute('cont', {});
      return {};
    });
    r.on('POST', '/v1/vms/:name/incoming', async (req) => {
      const vm = this.vm(req.params.name!);
      const body = req.body as { tuning: TransferTuning; file?: string; address?: string };
      await vm.qmp.execute('migrate-set-capabilities', { capabilities: incomingCapabilities(body.tuning) });
      await vm.qmp.execute('migrate-set-parameters', incomingParameters(body.tuning));
      if (body.file) {
        // Restore from a saved state on the shared volume (quick migration, vm start of a saved VM).
        await vm.qmp.execute('migrate-incoming', { uri: `file:${body.file}` });
        return { file: body.file };
      }
      const address = body.address ?? this.opts.migrationAddress;
      this.ownAddress(address);
      await vm.qmp.execute('migrate-incoming', { uri: `tcp:${address}:0` });
      const info = (await vm.qmp.execute('query-migrate', {})) as { 'socket-address'?: { port?: string }[] };
      const port = Number(info['socket-address']?.[0]?.port);
      if (!port) throw errors.internal(`QEMU of '${vm.name}' did not report its incoming migration port`);
      return { address, port };
    });
    r.on('POST', '/v1/vms/:name/migration', async (req) => {
      const vm = this.vm(req.params.name!);
      const body = req.body as { address?: string; port?: number; file?: string; tuning: TransferTuning };
      await vm.qmp.execute('migrate-set-capabilities', { capabilities: migrationCapabilities(body.tuning) });
      await vm.qmp.execute('migrate-set-parameters', migrationParameters(body.tuning));
      // A file target saves the VM's state to the shared volume (QEMU ≥ 8.2 `file:` migration).
      await vm.qmp.execute('migrate', { uri: body.file ? `file:${body.file}` : `tcp:${body.address}:${body.port}` });
      return {};
    });
    r.on('GET', '/v1/vms/:name/migration', async (req) =>
      toTransferProgress(await this.vm(req.params.name!).qmp.execute('query-migrate', {}, { timeoutMs: 5000 })),
    );
    r.on('POST', '/v1/vms/:name/migration/postcopy', async (req) => {
      // Switch a running pre-copy to post-copy: the target runs the guest now and pulls the rest.
      await this.vm(req.params.name!).qmp.execute('migrate-start-postcopy', {});
      return {};
    });
    r.on('POST', '/v1/vms/:name/measure', async (req) => {
      // For the pre-flight prediction: dirty rate and non-zero memory, measured together.
      const vm = this.vm(req.params.name!);
      const b = (req.body ?? {}) as { ms?: number; samples?: number };
      const ms = Math.min(Math.max(Number(b.ms ?? 300), 50), 10_000);
      const samples = Math.min(Math.max(Number(b.samples ?? 2048), 16), 65536);
      const ramBytes = vm.descriptor.launch.spec.memoryMiB * 1048576;
      const started = Date.now();
      const [dirtyRateBytesPerSec, memory] = await Promise.all([
        measureDirtyRate(vm.qmp, ms),
        measureNonZero(vm.qmp, ramBytes, samples, path.join(this.runDir, `${vm.name}.sample`)),
      ]);
      return { dirtyRateBytesPerSec, ramBytes, ...memory, ms: Date.now() - started };
    });
    r.on('POST', '/v1/vms/:name/migration/cancel', async (req) => {
      await this.vm(req.params.name!).qmp.execute('migrate_cancel', {});
      return {};
    });
    r.on('POST', '/v1/vms/:name/announce', async (req) => {
      await this.vm(req.params.name!).qmp.execute('announce-self', { initial: 0, max: 50, rounds: 3, step: 50 });
      return {};
    });
    r.raw('GET', '/v1/vms/:name/console', (req, res, params) => {
      let vm: QemuVm;
      try {
        vm = this.vm(params.name!);
      } catch (e) {
        const err = toFerryError(e);
        res.writeHead(err.httpStatus, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: err.toJSON() }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
      const off = vm.onConsole((chunk) => res.write(chunk));
      const end = () => {
        off();
        res.end();
      };
      req.on('close', off);
      void vm.gone.then(end);
    });
    r.on('POST', '/v1/vms/:name/console', (req) => {
      const data = (req.body as { data?: string } | undefined)?.data ?? '';
      this.vm(req.params.name!).writeConsole(Buffer.from(data, 'utf8'));
      return {};
    });
    return r;
  }
}

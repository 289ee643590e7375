/**
 * The Hypervisor port on QEMU: one QEMU process per guest, driven over QMP.
 * This module and its neighbours are the only code that speaks QMP; what
 * they hand back is in Ferry's words (run states, transfer progress, block
 * job results).
 *
 * QEMU runs detached in its own session, so it outlives an agent that dies
 * or restarts; a descriptor beside its QMP socket lets the next agent adopt
 * it (see qemu-vm.ts).
 */
import type { NicBackend } from '../domain/nic.js';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { ErrorCode, FerryError, errors } from '../domain/errors.js';
import type { FreezeResult, NbdEndpoint, ReplicaSyncResult } from '../domain/block-jobs.js';
import type { Offload } from '../domain/nic.js';
import { type GuestReport, RunState, type VmInstance, type VmSpec } from '../domain/records.js';
import type { TransferProgress, TransferTuning } from '../domain/transfer.js';
import type { GuestMeasurement, HostFacts, Hypervisor, LaunchOptions, ShutdownResult, TransferTarget } from '../ports/hypervisor.js';
import { detectAccelerator } from './accel.js';
import { freezeDisk, mergeOverlay } from './backup-job.js';
import { cpuIdentity, hostCpu, qemuVersion } from './cpu.js';
import { measureDirtyRate, measureNonZero } from './dirty-rate.js';
import { incomingCapabilities, incomingParameters, migrationCapabilities, migrationParameters, toTransferProgress } from './migration-params.js';
import { runMirrorJob } from './mirror-job.js';
import { endNbdMirror, startNbdExport, startNbdMirror, stopNbdExport } from './nbd-mirror.js';
import { nicStatus, probeBackendOffloads } from './nic.js';
import type { QemuRunState } from './qmp/types.js';
import { QemuVm, lastWords } from './qemu-vm.js';
import { cancelReplicaJob, runReplicaJob } from './replica-job.js';

/** QEMU's run states in Ferry's words. */
export function runStateOf(status: QemuRunState | string): RunState {
  switch (status) {
    case 'running':
    case 'colo':
      return RunState.Running;
    case 'inmigrate':
      return RunState.Incoming;
    case 'postmigrate':
      return RunState.Migrated;
    case 'io-error':
      return RunState.IoError;
    case 'guest-panicked':
      return RunState.GuestPanicked;
    case 'shutdown':
      return RunState.Shutdown;
    case 'internal-error':
    case 'watchdog':
      return RunState.Failed;
    default:
      // paused, prelaunch, suspended, debug, finish-migrate, save-vm, restore-vm
      return RunState.Paused;
  }
}

/**
 * Freezes a guest's file systems through its agent (the role VSS plays in a
 * Windows guest): writes are flushed and held until the thaw. Without an
 * agent, or when the freeze fails, the backup goes on crash-consistent and
 * says why.
 */
async function quiesceGuest(vm: QemuVm): Promise<{ quiesced: boolean; note: string; thaw: () => Promise<void> }> {
  const agent = vm.agent;
  if (!agent) return { quiesced: false, note: "Ferry's built-in guest has no guest agent", thaw: async () => {} };
  try {
    const frozen = await agent.call<number>('guest-fsfreeze-freeze', undefined, { timeoutMs: 30_000 });
    return {
      quiesced: true,
      note: `${frozen} file system${frozen === 1 ? '' : 's'} frozen`,
      thaw: async () => {
        // A guest left frozen stops writing: try hard.
        for (let i = 0; i < 5; i++) {
          try {
            await agent.call('guest-fsfreeze-thaw', undefined, { timeoutMs: 30_000 });
            return;
          } catch {
            await new Promise((r) => setTimeout(r, 500));
          }
        }
      },
    };
  } catch (e) {
    // Half frozen is worse than not frozen: thaw whatever did freeze.
    await agent.call('guest-fsfreeze-thaw', undefined, { timeoutMs: 10_000 }).catch(() => {});
    return { quiesced: false, note: (e as Error).message, thaw: async () => {} };
  }
}

/** Free space a full disk's file system needs again before its paused guests go on. */
const IO_RESUME_FREE_BYTES = 64 << 20;

export interface QemuHypervisorOptions {
  /** 0700 directory of this host's QMP and serial sockets and descriptors. */
  runDir: string;
  /** The node's name (in error messages). */
  node: string;
  /** The built-in guest's kernel and initramfs. */
  image: { kernelPath: string; initrdPath: string };
  /** Where accelerator probes cache their verdict. */
  cacheDir: string;
}

export class QemuHypervisor implements Hypervisor {
  private readonly vms = new Map<string, QemuVm>();
  /** What QEMU printed last before it exited on its own, per VM. */
  private readonly lastExit = new Map<string, string>();
  private readonly exitListeners = new Set<(name: string, lastWords: string) => void>();
  private accelerator: HostFacts['accelerator'] = 'tcg';

  constructor(private readonly o: QemuHypervisorOptions) {}

  async probeHost(opts: { cpuModel?: string; nicBackend: NicBackend }): Promise<HostFacts> {
    const accel = await detectAccelerator(this.o.image.kernelPath, this.o.cacheDir);
    this.accelerator = accel.accelerator;
    const model = opts.cpuModel ?? (accel.accelerator === 'kvm' ? 'host' : 'qemu64');
    const cpu = await cpuIdentity(accel.accelerator, model);
    if (accel.accelerator === 'kvm') cpu.vendor = hostCpu().vendor;
    const scratch = path.join(this.o.runDir, 'nic-probe.sock');
    const nicOffloads = await probeBackendOffloads(opts.nicBackend, scratch);
    fs.rmSync(scratch, { force: true });
    return { accelerator: accel.accelerator, acceleratorReason: accel.reason, cpu, version: await qemuVersion(), nicOffloads };
  }

  private descriptorPath(name: string): string {
    return path.join(this.o.runDir, `${name}.json`);
  }

  async adoptRunning(): Promise<string[]> {
    const adopted: string[] = [];
    for (const f of fs.readdirSync(this.o.runDir)) {
      if (!f.endsWith('.json')) continue;
      const vm = await QemuVm.adopt(path.join(this.o.runDir, f));
      if (vm) {
        this.track(vm);
        adopted.push(vm.name);
      } else {
        this.removeRuntimeFiles(f.slice(0, -'.json'.length));
      }
    }
    return adopted;
  }

  private track(vm: QemuVm): void {
    this.vms.set(vm.name, vm);
    void vm.gone.then(() => {
      if (this.vms.get(vm.name) !== vm) return;
      this.vms.delete(vm.name);
      this.removeRuntimeFiles(vm.name);
      const stderr = lastWords(path.join(this.o.runDir, `${vm.name}.stderr`));
      this.lastExit.set(vm.name, stderr);
      for (const l of this.exitListeners) l(vm.name, stderr);
    });
  }

  onExit(listener: (name: string, lastWords: string) => void): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  private removeRuntimeFiles(name: string): void {
    for (const suffix of ['.json', '.qmp', '.serial', '.pid', '.qga', '.vnc']) fs.rmSync(path.join(this.o.runDir, name + suffix), { force: true });
  }

  private vm(name: string): QemuVm {
    const vm = this.vms.get(name);
    if (!vm) {
      const last = this.lastExit.get(name);
      throw new FerryError(ErrorCode.VmNotFound, `VM '${name}' is not running on node '${this.o.node}'${last ? ` (its QEMU exited: ${last})` : ''}`, {
        details: { vm: name, node: this.o.node },
      });
    }
    return vm;
  }

  has(name: string): boolean {
    return this.vms.has(name);
  }

  spec(name: string): VmSpec {
    return this.vm(name).descriptor.launch.spec;
  }

  committedMiB(): number {
    return [...this.vms.values()].reduce((sum, vm) => sum + vm.descriptor.launch.spec.memoryMiB, 0);
  }

  /** Guests resumed after an I/O error, and how often; those being looked at now. */
  private readonly ioResumes = new Map<string, number>();
  private readonly ioChecking = new Set<string>();

  /**
   * A guest QEMU stopped on an I/O error (werror=enospc: its disk's file
   * system was full) goes on once that file system has room again.
   */
  private async resumeIfRoom(vm: QemuVm): Promise<void> {
    if (this.ioChecking.has(vm.name)) return;
    this.ioChecking.add(vm.name);
    try {
      const st = fs.statfsSync(path.dirname(vm.descriptor.launch.spec.diskPath));
      if (st.bavail * st.bsize < IO_RESUME_FREE_BYTES) return;
      await vm.qmp.execute('cont', {}, { timeoutMs: 2000 });
      this.ioResumes.set(vm.name, (this.ioResumes.get(vm.name) ?? 0) + 1);
    } catch {
      /* still no room, or QEMU went: the next look decides */
    } finally {
      this.ioChecking.delete(vm.name);
    }
  }

  private async instance(vm: QemuVm): Promise<VmInstance> {
    let runState: RunState;
    try {
      runState = runStateOf((await vm.qmp.execute('query-status', {}, { timeoutMs: 2000 })).status);
    } catch {
      runState = vm.qmp.closed ? RunState.Exited : RunState.Unresponsive;
    }
    if (runState === RunState.IoError) void this.resumeIfRoom(vm);
    const resumes = this.ioResumes.get(vm.name);
    return {
      name: vm.name,
      pid: vm.pid,
      runState,
      incoming: vm.descriptor.launch.incoming,
      startedAtMs: vm.descriptor.startedAtMs,
      ...(vm.network ? { network: vm.network } : {}),
      ...(resumes ? { ioErrorResumes: resumes } : {}),
    };
  }

  list(): Promise<VmInstance[]> {
    return Promise.all([...this.vms.values()].map((vm) => this.instance(vm)));
  }

  async get(name: string): Promise<VmInstance> {
    return this.instance(this.vm(name));
  }

  async launch(spec: VmSpec, opts: LaunchOptions): Promise<VmInstance> {
    if (this.vms.has(spec.name)) throw errors.alreadyExists('VM process', `${spec.name}@${this.o.node}`);
    const run = this.o.runDir;
    const vm = await QemuVm.launch(
      {
        // Its own copy: the descriptor's spec changes when the disk does (a backup, a storage move).
        spec: structuredClone(spec),
        accelerator: this.accelerator,
        cpuModel: opts.cpuModel,
        kernelPath: this.o.image.kernelPath,
        initrdPath: this.o.image.initrdPath,
        qmpSocket: path.join(run, `${spec.name}.qmp`),
        serialSocket: path.join(run, `${spec.name}.serial`),
        nic: opts.nic,
        pidFile: path.join(run, `${spec.name}.pid`),
        ...(spec.boot ? { qgaSocket: path.join(run, `${spec.name}.qga`), vncSocket: path.join(run, `${spec.name}.vnc`) } : {}),
        incoming: opts.incoming,
      },
      this.descriptorPath(spec.name),
      path.join(run, `${spec.name}.stderr`),
    );
    this.lastExit.delete(spec.name);
    this.track(vm);
    return this.instance(vm);
  }

  async stop(name: string, graceMs?: number): Promise<void> {
    const vm = this.vm(name);
    this.vms.delete(name);
    await vm.quit(graceMs);
    this.removeRuntimeFiles(name);
  }

  async shutdown(name: string, timeoutMs: number): Promise<ShutdownResult> {
    const vm = this.vm(name);
    const started = Date.now();
    const runs = (await this.get(name).catch(() => undefined))?.runState === RunState.Running;
    this.vms.delete(name);
    const how = await vm.shutdown(timeoutMs, runs);
    this.removeRuntimeFiles(name);
    return how === 'force' ? { by: 'force', ms: Date.now() - started } : { by: 'guest', via: how, ms: Date.now() - started };
  }

  display(name: string): Promise<Duplex> {
    const socket = this.vm(name).descriptor.launch.vncSocket;
    if (!socket) throw errors.invalidState(`VM '${name}' runs Ferry's built-in guest, which has no screen (its console is the serial one)`);
    return new Promise((resolve, reject) => {
      const conn = net.createConnection({ path: socket });
      conn.once('connect', () => resolve(conn));
      conn.once('error', (e) => reject(errors.internal(`cannot reach the display of '${name}': ${e.message}`)));
    });
  }

  async guestReport(name: string): Promise<GuestReport> {
    const vm = this.vm(name);
    if (!vm.agent) return { agent: false, reason: "Ferry's built-in guest has no guest agent" };
    return vm.agent.report();
  }

  async kill(name: string, pid?: number): Promise<boolean> {
    const vm = this.vms.get(name);
    if (!vm || (pid !== undefined && vm.pid !== pid)) return false;
    this.vms.delete(name);
    await vm.kill();
    this.removeRuntimeFiles(name);
    return true;
  }

  async pause(name: string): Promise<void> {
    await this.vm(name).qmp.execute('stop', {});
  }

  async resume(name: string): Promise<void> {
    await this.vm(name).qmp.execute('cont', {});
  }

  detachAll(): void {
    for (const vm of this.vms.values()) vm.detach();
    this.vms.clear();
  }

  /** The QEMU now runs on another image: its spec (what a migration target gets, what adoption reads) says so too. */
  private saveDiskPath(vm: QemuVm, diskPath: string): void {
    vm.descriptor.launch.spec.diskPath = diskPath;
    fs.writeFileSync(this.descriptorPath(vm.name), JSON.stringify(vm.descriptor), { mode: 0o600 });
  }

  // ---- transfers ------------------------------------------------------------

  async listenIncoming(name: string, tuning: TransferTuning, address: string): Promise<{ address: string; port: number }> {
    const vm = this.vm(name);
    await vm.qmp.execute('migrate-set-capabilities', { capabilities: incomingCapabilities(tuning) });
    await vm.qmp.execute('migrate-set-parameters', incomingParameters(tuning));
    await vm.qmp.execute('migrate-incoming', { uri: `tcp:${address}:0` });
    const info = (await vm.qmp.execute('query-migrate', {})) as { 'socket-address'?: { port?: string }[] };
    const port = Number(info['socket-address']?.[0]?.port);
    if (!port) throw errors.internal(`QEMU of '${name}' did not report its incoming migration port`);
    return { address, port };
  }

  async restoreFrom(name: string, file: string, tuning: TransferTuning): Promise<void> {
    const vm = this.vm(name);
    await vm.qmp.execute('migrate-set-capabilities', { capabilities: incomingCapabilities(tuning) });
    await vm.qmp.execute('migrate-set-parameters', incomingParameters(tuning));
    // Restore from a saved state on the shared volume (quick migration, vm start of a saved VM).
    await vm.qmp.execute('migrate-incoming', { uri: `file:${file}` });
  }

  async sendTo(name: string, target: TransferTarget, tuning: TransferTuning): Promise<void> {
    const vm = this.vm(name);
    await vm.qmp.execute('migrate-set-capabilities', { capabilities: migrationCapabilities(tuning) });
    await vm.qmp.execute('migrate-set-parameters', migrationParameters(tuning));
    // A file target saves the VM's state to the shared volume (QEMU ≥ 8.2 `file:` migration).
    await vm.qmp.execute('migrate', { uri: 'file' in target ? `file:${target.file}` : `tcp:${target.address}:${target.port}` });
  }

  async transferProgress(name: string): Promise<TransferProgress> {
    return toTransferProgress(await this.vm(name).qmp.execute('query-migrate', {}, { timeoutMs: 5000 }));
  }

  async cancelTransfer(name: string): Promise<void> {
    await this.vm(name).qmp.execute('migrate_cancel', {});
  }

  async startPostcopy(name: string): Promise<void> {
    // The target runs the guest now and pulls the rest.
    await this.vm(name).qmp.execute('migrate-start-postcopy', {});
  }

  async continueTransfer(name: string): Promise<void> {
    await this.vm(name).qmp.execute('migrate-continue' as never, { state: 'pre-switchover' } as never);
  }

  async announce(name: string): Promise<void> {
    await this.vm(name).qmp.execute('announce-self', { initial: 0, max: 50, rounds: 3, step: 50 });
  }

  async measureGuest(name: string, opts: { ms: number; samples: number }): Promise<GuestMeasurement> {
    const vm = this.vm(name);
    const ramBytes = vm.descriptor.launch.spec.memoryMiB * 1048576;
    const started = performance.now();
    const [dirtyRateBytesPerSec, memory] = await Promise.all([
      measureDirtyRate(vm.qmp, opts.ms),
      measureNonZero(vm.qmp, ramBytes, opts.samples, path.join(this.o.runDir, `${vm.name}.sample`)),
    ]);
    return { dirtyRateBytesPerSec, ramBytes, ...memory, ms: Math.round(performance.now() - started) };
  }

  async nicStatus(name: string): Promise<{ offered: Offload[]; negotiated: Offload[] }> {
    return nicStatus(this.vm(name).qmp);
  }

  // ---- block jobs -----------------------------------------------------------

  /** The disk's point in time; with a guest agent the guest's file systems are frozen for it and thawed right after (quiesced). */
  async freezeDisk(name: string, overlay: string, mode: 'full' | 'incremental'): Promise<FreezeResult> {
    const vm = this.vm(name);
    const quiesce = await quiesceGuest(vm);
    try {
      const res = await freezeDisk(vm.qmp, overlay, mode);
      this.saveDiskPath(vm, res.overlay);
      return { ...res, quiesced: quiesce.quiesced, quiesceNote: quiesce.note };
    } finally {
      await quiesce.thaw();
    }
  }

  async mergeOverlay(name: string, copied: boolean): Promise<{ base: string; overlay: string }> {
    const vm = this.vm(name);
    const res = await mergeOverlay(vm.qmp, copied);
    this.saveDiskPath(vm, res.base);
    fs.rmSync(res.overlay, { force: true });
    return res;
  }

  async replicaSync(name: string, to: NbdEndpoint, mode: 'full' | 'incremental'): Promise<ReplicaSyncResult> {
    return runReplicaJob(this.vm(name).qmp, { ...to, mode });
  }

  async cancelReplicaSync(name: string): Promise<boolean> {
    return cancelReplicaJob(this.vm(name).qmp);
  }

  async moveDisk(name: string, target: string, sizeBytes: number): Promise<{ bytes: number; ms: number }> {
    const vm = this.vm(name);
    const res = await runMirrorJob(vm.qmp, target, sizeBytes);
    this.saveDiskPath(vm, target);
    return res;
  }

  async exportDisk(name: string, address: string): Promise<NbdEndpoint> {
    return startNbdExport(this.vm(name).qmp, address);
  }

  async unexportDisk(name: string): Promise<void> {
    return stopNbdExport(this.vm(name).qmp);
  }

  async mirrorDisk(name: string, to: NbdEndpoint): Promise<{ bytes: number; ms: number }> {
    return startNbdMirror(this.vm(name).qmp, to);
  }

  async endMirror(name: string, complete: boolean): Promise<{ bytes: number }> {
    return endNbdMirror(this.vm(name).qmp, complete);
  }

  // ---- console --------------------------------------------------------------

  onConsole(name: string, listener: (chunk: Buffer) => void): () => void {
    return this.vm(name).onConsole(listener);
  }

  writeConsole(name: string, data: Buffer): void {
    this.vm(name).writeConsole(data);
  }
}

/**
 * A strict fake of the Hypervisor port, for component tests. It models what
 * Ferry relies on QEMU for: guest processes and their run states, state
 * transfers between hosts (through a world that connects every fake host)
 * and to files, and the block jobs of backups, replicas and disk copies.
 *
 * Strict in three ways, all recorded as violations a test asserts empty:
 *   - a call the scenario did not allow (`world.allow`) is refused;
 *   - a call QEMU would refuse in the guest's state (send a paused guest's
 *     state twice, freeze a frozen disk, resume a guest that is not there)
 *     fails as QEMU's would;
 *   - a fault the scenario injected (`world.fault`) fails or hangs the call.
 */
import { PassThrough, type Duplex } from 'node:stream';
import type { Clock } from '../domain/clock.js';
import { ErrorCode, FerryError, errors } from '../domain/errors.js';
import type { FreezeResult, NbdEndpoint, ReplicaSyncResult } from '../domain/block-jobs.js';
import type { Offload } from '../domain/nic.js';
import { type GuestReport, RunState, type VmInstance, type VmSpec } from '../domain/records.js';
import type { TransferProgress, TransferStatus, TransferTuning } from '../domain/transfer.js';
import type { GuestMeasurement, HostFacts, Hypervisor, LaunchOptions, ShutdownResult, TransferTarget } from '../ports/hypervisor.js';

export type HypervisorOp = Exclude<keyof Hypervisor, 'onExit' | 'onConsole' | 'has' | 'spec' | 'committedMiB'> | 'spec';

export interface Fault {
  node?: string;
  /** A Hypervisor call, or a fake volume's ('volume.copyFrozen') or remote cluster's ('remote.openSync'). */
  op: HypervisorOp | `volume.${string}` | `remote.${string}` | `switch.${string}`;
  /** Only for this guest. */
  vm?: string;
  /** Fail (default) or never answer (a controller crash is simulated while it hangs). */
  kind?: 'fail' | 'hang';
  /** How many calls it hits (default: every call). */
  times?: number;
  /** The error's message (QEMU's words). */
  message?: string;
}

interface Transfer {
  /** The state arrives here (a target) or leaves from here (a source). */
  direction: 'in' | 'out';
  status: TransferStatus;
  polls: number;
  /** When it began, by the world's clock (a transfer of `transferMs`). */
  startedMs?: number;
  to?: { node: string; vm: string };
  file?: string;
  pauseBeforeSwitchover: boolean;
  error?: string;
}

interface Guest {
  spec: VmSpec;
  pid: number;
  runState: RunState;
  incoming: boolean;
  startedAtMs: number;
  transfer?: Transfer;
  /** The backup overlay the disk runs on, if frozen. */
  frozen?: FreezeResult;
  exported?: NbdEndpoint;
  mirroring?: NbdEndpoint;
  console: Set<(chunk: Buffer) => void>;
}

/** What connects the fake hosts: endpoints, files, the rules of the scenario, and what went wrong. */
export class FakeWorld {
  readonly hosts = new Map<string, FakeHypervisor>();
  readonly endpoints = new Map<string, { node: string; vm: string }>();
  /** Files written by transfers and block jobs (state files, disk images): the shared volume. */
  readonly files = new Set<string>();
  readonly violations: string[] = [];
  readonly calls: { node: string; op: string; vm?: string }[] = [];
  private faults: (Fault & { hits: number })[] = [];
  private allowed: Set<string> | undefined;
  private nextPid = 1000;
  private nextPort = 40000;
  /** Polls of a transfer before it completes. */
  transferPolls = 2;
  /**
   * Besides the polls, how long a transfer lasts by `clock` (0: no longer than its polls). By the clock, not by
   * polls alone: a scaled clock runs on while a loaded machine polls slowly, and polls would stretch the transfer.
   */
  transferMs = 0;
  clock: Clock | undefined;
  private readonly hangs: (() => void)[] = [];

  pid(): number {
    return this.nextPid++;
  }
  port(): number {
    return this.nextPort++;
  }

  /** Only these operations may be called from now on (undefined: any). */
  allow(ops: HypervisorOp[] | undefined): void {
    this.allowed = ops && new Set(ops);
  }

  fault(f: Fault): void {
    this.faults.push({ ...f, hits: 0 });
  }

  clearFaults(): void {
    this.faults = [];
    for (const release of this.hangs.splice(0)) release();
  }

  violation(what: string): void {
    this.violations.push(what);
  }

  /** Called at the start of every fake call: records it, applies the scenario's rules and faults. */
  async enter(node: string, op: Fault['op'], vm?: string): Promise<void> {
    this.calls.push({ node, op, ...(vm ? { vm } : {}) });
    if (this.allowed && !op.includes('.') && !this.allowed.has(op)) {
      this.violation(`unscripted call ${op}(${vm ?? ''}) on ${node}`);
      throw new FerryError(ErrorCode.QmpError, `fake hypervisor: ${op} was not scripted`);
    }
    const f = this.faults.find((x) => x.op === op && (!x.node || x.node === node) && (!x.vm || x.vm === vm) && (x.times === undefined || x.hits < x.times));
    if (!f) return;
    f.hits++;
    if (f.kind === 'hang')
      await new Promise<void>((resolve) => this.hangs.push(resolve)).then(() => {
        throw new FerryError(ErrorCode.QmpError, `injected: ${op} on ${node} never answered`);
      });
    throw new FerryError(ErrorCode.QmpError, f.message ?? `injected failure of ${op} on ${node}`);
  }

  /** The same for calls that cannot wait (a hang fails at once). */
  enterSync(node: string, op: Fault['op'], vm?: string): void {
    this.calls.push({ node, op, ...(vm ? { vm } : {}) });
    if (this.allowed && !this.allowed.has(op)) {
      this.violation(`unscripted call ${op}(${vm ?? ''}) on ${node}`);
      throw new FerryError(ErrorCode.QmpError, `fake hypervisor: ${op} was not scripted`);
    }
    const f = this.faults.find((x) => x.op === op && (!x.node || x.node === node) && (!x.vm || x.vm === vm) && (x.times === undefined || x.hits < x.times));
    if (!f) return;
    f.hits++;
    throw new FerryError(ErrorCode.QmpError, f.message ?? `injected failure of ${op} on ${node}`);
  }

  /** Every guest of every host, by node. */
  placement(): Record<string, { name: string; runState: RunState }[]> {
    return Object.fromEntries([...this.hosts].map(([node, hv]) => [node, hv.guests().map((g) => ({ name: g.spec.name, runState: g.runState }))]));
  }
}

export class FakeHypervisor implements Hypervisor {
  private readonly vms = new Map<string, Guest>();
  private readonly exitListeners = new Set<(name: string, lastWords: string) => void>();

  constructor(
    readonly node: string,
    readonly world: FakeWorld,
    private readonly facts: HostFacts = {
      accelerator: 'tcg',
      acceleratorReason: 'fake',
      cpu: { vendor: 'GenuineIntel', model: 'Westmere', features: ['sse2', 'aes'] },
      version: '10.0.2 (fake)',
      nicOffloads: ['gso'],
    },
  ) {
    world.hosts.set(node, this);
  }

  guests(): Guest[] {
    return [...this.vms.values()];
  }

  private guest(name: string): Guest {
    const g = this.vms.get(name);
    if (!g) throw new FerryError(ErrorCode.VmNotFound, `VM '${name}' is not running on node '${this.node}'`, { details: { vm: name, node: this.node } });
    return g;
  }

  private refuse(what: string): never {
    this.world.violation(`${this.node}: ${what}`);
    throw new FerryError(ErrorCode.QmpError, `QEMU refused: ${what}`);
  }

  /** A guest's process ends by itself (QEMU crashed, or a test killed it). */
  crash(name: string): void {
    if (!this.vms.delete(name)) return;
    for (const l of this.exitListeners) l(name, 'killed by the test');
  }

  async probeHost(): Promise<HostFacts> {
    await this.world.enter(this.node, 'probeHost');
    return this.facts;
  }

  async adoptRunning(): Promise<string[]> {
    await this.world.enter(this.node, 'adoptRunning');
    return [...this.vms.keys()];
  }

  private view(g: Guest): VmInstance {
    return { name: g.spec.name, pid: g.pid, runState: g.runState, incoming: g.incoming, startedAtMs: g.startedAtMs };
  }

  async list(): Promise<VmInstance[]> {
    await this.world.enter(this.node, 'list');
    return this.guests().map((g) => this.view(g));
  }

  async get(name: string): Promise<VmInstance> {
    await this.world.enter(this.node, 'get', name);
    return this.view(this.guest(name));
  }

  has(name: string): boolean {
    return this.vms.has(name);
  }

  spec(name: string): VmSpec {
    this.world.enterSync(this.node, 'spec', name);
    return structuredClone(this.guest(name).spec);
  }

  committedMiB(): number {
    return this.guests().reduce((s, g) => s + g.spec.memoryMiB, 0);
  }

  async launch(spec: VmSpec, opts: LaunchOptions): Promise<VmInstance> {
    await this.world.enter(this.node, 'launch', spec.name);
    if (this.vms.has(spec.name)) throw errors.alreadyExists('VM process', `${spec.name}@${this.node}`);
    // QEMU's image lock: a guest that runs (not one waiting for a migration, nor its source once it handed over) holds its disk.
    const holder = (g: Guest) => !g.incoming && g.runState !== RunState.Migrated && g.spec.diskPath === spec.diskPath;
    if (!opts.incoming && [...this.world.hosts.values()].some((hv) => hv.guests().some(holder)))
      throw new FerryError(
        ErrorCode.QemuDied,
        `QEMU for '${spec.name}' did not start: fake: Failed to get "write" lock | Is another process using the image [${spec.diskPath}]?`,
      );
    const g: Guest = {
      spec: structuredClone(spec),
      pid: this.world.pid(),
      runState: opts.incoming ? RunState.Incoming : RunState.Running,
      incoming: opts.incoming,
      startedAtMs: 0,
      console: new Set(),
    };
    this.vms.set(spec.name, g);
    return this.view(g);
  }

  async stop(name: string): Promise<void> {
    await this.world.enter(this.node, 'stop', name);
    this.guest(name);
    this.vms.delete(name);
  }

  /** A running fake guest hears its agent (a VM with its own OS) or the power button and powers off; any other is powered off. */
  async shutdown(name: string): Promise<ShutdownResult> {
    await this.world.enter(this.node, 'shutdown', name);
    const g = this.guest(name);
    this.vms.delete(name);
    if (g.runState !== RunState.Running) return { by: 'force', ms: 0 };
    return { by: 'guest', via: g.spec.boot ? 'agent' : 'acpi', ms: 0 };
  }

  /** A VM with its own OS has a display that greets as a VNC server does; the built-in guest has none. */
  async display(name: string): Promise<Duplex> {
    await this.world.enter(this.node, 'display', name);
    const g = this.guest(name);
    if (!g.spec.boot) throw errors.invalidState(`VM '${name}' runs Ferry's built-in guest, which has no screen (its console is the serial one)`);
    const screen = new PassThrough();
    screen.write('RFB 003.008\n');
    return screen;
  }

  /** A VM with its own OS has an agent that reports the spec's hostname and address; the built-in guest has none. */
  async guestReport(name: string): Promise<GuestReport> {
    await this.world.enter(this.node, 'guestReport', name);
    const g = this.guest(name);
    if (!g.spec.boot) return { agent: false, reason: "Ferry's built-in guest has no guest agent" };
    if (g.runState !== RunState.Running) return { agent: false, reason: 'no guest agent answered' };
    return {
      agent: true,
      os: 'Fake OS 1',
      hostname: g.spec.name,
      interfaces: [{ name: 'eth0', mac: g.spec.mac, addresses: [g.spec.ip] }],
      cloudInit: g.spec.boot.seedPath ? { state: 'done', datasource: 'DataSourceNoCloud' } : { state: 'not-run' },
    };
  }

  async kill(name: string, pid?: number): Promise<boolean> {
    await this.world.enter(this.node, 'kill', name);
    const g = this.vms.get(name);
    if (!g || (pid !== undefined && g.pid !== pid)) return false;
    this.vms.delete(name);
    for (const [k, v] of this.world.endpoints) if (v.node === this.node && v.vm === name) this.world.endpoints.delete(k);
    return true;
  }

  async pause(name: string): Promise<void> {
    await this.world.enter(this.node, 'pause', name);
    const g = this.guest(name);
    if (g.runState === RunState.Running) g.runState = RunState.Paused;
  }

  async resume(name: string): Promise<void> {
    await this.world.enter(this.node, 'resume', name);
    const g = this.guest(name);
    if (g.runState === RunState.Incoming) this.refuse(`resume of '${name}' while its state has not arrived`);
    if (g.transfer && g.transfer.status === 'active') this.refuse(`resume of '${name}' during a transfer`);
    g.runState = RunState.Running;
  }

  onExit(listener: (name: string, lastWords: string) => void): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  detachAll(): void {}

  async listenIncoming(name: string, _tuning: TransferTuning, address: string): Promise<{ address: string; port: number }> {
    await this.world.enter(this.node, 'listenIncoming', name);
    const g = this.guest(name);
    if (g.runState !== RunState.Incoming) this.refuse(`listen for '${name}', which is not an incoming guest`);
    const port = this.world.port();
    this.world.endpoints.set(`${address}:${port}`, { node: this.node, vm: name });
    g.transfer = { direction: 'in', status: 'active', polls: 0, pauseBeforeSwitchover: false };
    return { address, port };
  }

  async restoreFrom(name: string, file: string): Promise<void> {
    await this.world.enter(this.node, 'restoreFrom', name);
    const g = this.guest(name);
    if (g.runState !== RunState.Incoming) this.refuse(`restore into '${name}', which is not an incoming guest`);
    if (!this.world.files.has(file)) this.refuse(`restore '${name}' from ${file}, which does not exist`);
    g.transfer = { direction: 'in', status: 'completed', polls: 0, pauseBeforeSwitchover: false };
    g.runState = RunState.Paused;
  }

  async sendTo(name: string, target: TransferTarget, tuning: TransferTuning): Promise<void> {
    await this.world.enter(this.node, 'sendTo', name);
    const g = this.guest(name);
    if (g.transfer?.direction === 'out' && !['completed', 'failed', 'cancelled'].includes(g.transfer.status)) this.refuse(`a second transfer of '${name}'`);
    if (g.runState !== RunState.Running && g.runState !== RunState.Paused) this.refuse(`send the state of '${name}', which is ${g.runState}`);
    if ('file' in target) {
      g.transfer = { direction: 'out', status: 'active', polls: 0, ...this.begun(), file: target.file, pauseBeforeSwitchover: false };
      return;
    }
    const to = this.world.endpoints.get(`${target.address}:${target.port}`);
    if (!to) {
      g.transfer = { direction: 'out', status: 'failed', polls: 0, pauseBeforeSwitchover: false, error: `nothing listens on ${target.address}:${target.port}` };
      return;
    }
    g.transfer = { direction: 'out', status: 'active', polls: 0, ...this.begun(), to, pauseBeforeSwitchover: tuning.pauseBeforeSwitchover === true };
  }

  private begun(): { startedMs?: number } {
    return this.world.transferMs && this.world.clock ? { startedMs: this.world.clock.nowMs() } : {};
  }

  /** How far a transfer is, 0 to 1 (1: it may complete). */
  private done(t: Transfer): number {
    const byPolls = Math.min(1, t.polls / this.world.transferPolls);
    if (t.startedMs === undefined) return byPolls;
    return Math.min(byPolls, (this.world.clock!.nowMs() - t.startedMs) / this.world.transferMs);
  }

  private progress(t: Transfer, totalBytes: number): TransferProgress {
    const done = t.status === 'completed';
    return {
      status: t.status,
      ...(t.startedMs === undefined
        ? {
            transferredBytes: done ? totalBytes : Math.round((totalBytes * t.polls) / (this.world.transferPolls + 1)),
            remainingBytes: done ? 0 : Math.round(totalBytes / (t.polls + 1)),
          }
        : {
            transferredBytes: done ? totalBytes : Math.round(totalBytes * this.done(t) * 0.99),
            remainingBytes: done ? 0 : Math.round(totalBytes * (1 - this.done(t) * 0.99)),
          }),
      totalBytes,
      dirtyRateBytesPerSec: 0,
      throughputBytesPerSec: 100 * 1048576,
      rounds: Math.max(1, t.polls),
      throttlePercent: 0,
      ...(done ? { downtimeMs: 5, totalTimeMs: 10 * t.polls } : {}),
      ...(t.error ? { error: t.error } : {}),
    };
  }

  async transferProgress(name: string): Promise<TransferProgress> {
    await this.world.enter(this.node, 'transferProgress', name);
    const g = this.guest(name);
    const t = g.transfer;
    const total = g.spec.memoryMiB * 1048576;
    if (!t)
      return { ...this.progress({ direction: 'out', status: 'none', polls: 0, pauseBeforeSwitchover: false }, total), transferredBytes: 0, remainingBytes: 0 };
    if (t.direction === 'in') return this.progress(t, total);
    if (t.status === 'active') {
      t.polls++;
      if (t.to) {
        const target = this.world.hosts.get(t.to.node)?.vms.get(t.to.vm);
        if (!target) {
          t.status = 'failed';
          t.error = 'the target went away';
        } else if (this.done(t) >= 1) {
          if (t.pauseBeforeSwitchover) {
            t.status = 'pre-switchover';
            g.runState = RunState.Paused;
          } else this.complete(g, t);
        }
      } else if (t.file && this.done(t) >= 1) {
        this.world.files.add(t.file);
        t.status = 'completed';
        g.runState = RunState.Migrated;
      }
    }
    return this.progress(t, total);
  }

  private complete(g: Guest, t: Transfer): void {
    const target = this.world.hosts.get(t.to!.node)!.vms.get(t.to!.vm)!;
    t.status = 'completed';
    g.runState = RunState.Migrated;
    target.transfer = { direction: 'in', status: 'completed', polls: 0, pauseBeforeSwitchover: false };
    target.runState = RunState.Paused;
    // The target stops listening once its state is in.
    for (const [k, v] of this.world.endpoints) if (v.node === t.to!.node && v.vm === t.to!.vm) this.world.endpoints.delete(k);
    target.spec = { ...structuredClone(g.spec), diskPath: target.spec.diskPath };
    if (g.frozen) target.frozen = { ...g.frozen };
  }

  async cancelTransfer(name: string): Promise<void> {
    await this.world.enter(this.node, 'cancelTransfer', name);
    const g = this.guest(name);
    const t = g.transfer;
    if (!t || t.status === 'completed') return;
    t.status = 'cancelled';
    if (g.runState === RunState.Paused && t.to) g.runState = RunState.Running;
  }

  async startPostcopy(name: string): Promise<void> {
    await this.world.enter(this.node, 'startPostcopy', name);
    const t = this.guest(name).transfer;
    if (!t || t.status !== 'active') this.refuse(`post-copy of '${name}' without an active transfer`);
    t.status = 'postcopy';
  }

  async continueTransfer(name: string): Promise<void> {
    await this.world.enter(this.node, 'continueTransfer', name);
    const g = this.guest(name);
    const t = g.transfer;
    if (!t || t.status !== 'pre-switchover') this.refuse(`continue '${name}', which is not paused before switchover`);
    if (g.mirroring) this.refuse(`continue '${name}' while its disk mirror still runs`);
    this.complete(g, t);
  }

  async announce(name: string): Promise<void> {
    await this.world.enter(this.node, 'announce', name);
    this.guest(name);
  }

  async measureGuest(name: string, opts: { ms: number; samples: number }): Promise<GuestMeasurement> {
    await this.world.enter(this.node, 'measureGuest', name);
    const g = this.guest(name);
    const ramBytes = g.spec.memoryMiB * 1048576;
    return { dirtyRateBytesPerSec: 1048576, ramBytes, nonZeroBytes: ramBytes / 4, samples: opts.samples, nonZeroSamples: opts.samples / 4, ms: opts.ms };
  }

  async nicStatus(name: string): Promise<{ offered: Offload[]; negotiated: Offload[] }> {
    await this.world.enter(this.node, 'nicStatus', name);
    this.guest(name);
    return { offered: ['gso'], negotiated: [] };
  }

  async freezeDisk(name: string, overlay: string, mode: 'full' | 'incremental'): Promise<FreezeResult> {
    await this.world.enter(this.node, 'freezeDisk', name);
    const g = this.guest(name);
    if (g.frozen) throw new FerryError(ErrorCode.InvalidState, 'the disk is already frozen under an overlay (another backup has not merged yet)');
    void mode;
    g.frozen = { base: g.spec.diskPath, overlay };
    g.spec.diskPath = overlay;
    this.world.files.add(overlay);
    return g.spec.boot
      ? { ...g.frozen, quiesced: true, quiesceNote: '1 file system frozen' }
      : { ...g.frozen, quiesced: false, quiesceNote: "Ferry's built-in guest has no guest agent" };
  }

  async mergeOverlay(name: string): Promise<{ base: string; overlay: string }> {
    await this.world.enter(this.node, 'mergeOverlay', name);
    const g = this.guest(name);
    if (!g.frozen) throw new FerryError(ErrorCode.InvalidState, 'the disk is not frozen under an overlay');
    const f = g.frozen;
    delete g.frozen;
    g.spec.diskPath = f.base;
    this.world.files.delete(f.overlay);
    return f;
  }

  async replicaSync(name: string, _to: NbdEndpoint, mode: 'full' | 'incremental'): Promise<ReplicaSyncResult> {
    await this.world.enter(this.node, 'replicaSync', name);
    this.guest(name);
    return { mode, bytes: mode === 'full' ? 1073741824 : 4096, ms: 10 };
  }

  async cancelReplicaSync(name: string): Promise<boolean> {
    await this.world.enter(this.node, 'cancelReplicaSync', name);
    return this.vms.has(name);
  }

  async moveDisk(name: string, target: string): Promise<{ bytes: number; ms: number }> {
    await this.world.enter(this.node, 'moveDisk', name);
    const g = this.guest(name);
    g.spec.diskPath = target;
    this.world.files.add(target);
    return { bytes: 1048576, ms: 10 };
  }

  async exportDisk(name: string, address: string): Promise<NbdEndpoint> {
    await this.world.enter(this.node, 'exportDisk', name);
    const g = this.guest(name);
    g.exported = { address, port: this.world.port(), export: 'disk0' };
    return g.exported;
  }

  async unexportDisk(name: string): Promise<void> {
    await this.world.enter(this.node, 'unexportDisk', name);
    delete this.guest(name).exported;
  }

  async mirrorDisk(name: string, to: NbdEndpoint): Promise<{ bytes: number; ms: number }> {
    await this.world.enter(this.node, 'mirrorDisk', name);
    const g = this.guest(name);
    if (g.mirroring) this.refuse(`a second mirror of '${name}'`);
    g.mirroring = to;
    return { bytes: g.spec.memoryMiB * 1048576, ms: 10 };
  }

  async endMirror(name: string): Promise<{ bytes: number }> {
    await this.world.enter(this.node, 'endMirror', name);
    delete this.guest(name).mirroring;
    return { bytes: 1048576 };
  }

  onConsole(name: string, listener: (chunk: Buffer) => void): () => void {
    const g = this.guest(name);
    g.console.add(listener);
    return () => g.console.delete(listener);
  }

  writeConsole(name: string, data: Buffer): void {
    for (const l of this.guest(name).console) l(data);
  }
}

export { errors };

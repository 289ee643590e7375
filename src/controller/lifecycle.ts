/**
 * A VM's life: create, start (or restore a saved state), stop, save, delete,
 * change its settings, move its disk, type into its console. Every
 * operation holds the VM's lock by its kind (domain/vm-locks.ts); on any
 * failure the VM stays where and as it was.
 */
import path from 'node:path';
import type { Clock } from '../domain/clock.js';
import { describeHa, HA_PRIORITY } from '../domain/ha.js';
import { ErrorCode, errors, isFerryError, toFerryError } from '../domain/errors.js';
import type { StateLayout } from '../domain/layout.js';
import type { NodeLoad } from '../domain/placement.js';
import { placeVm, switchBlocker } from '../domain/placement.js';
import type { MigrationPolicy } from '../domain/policy.js';
import {
  type CpuIdentity,
  describeRunState,
  type Firmware,
  nodeRefusal,
  RunState,
  type StartAction,
  startsWithCluster,
  type VmBoot,
  type VmRecord,
  type VmSpec,
  VmState,
  runningRecord,
} from '../domain/records.js';
import { SEED_LABEL, cloudInitSeed, parseCloudConfig, parseSshKeys } from '../domain/cloud-init.js';
import type { ImageRecord } from '../domain/images.js';
import { DEFAULT_SWITCH, switchOf } from '../domain/switches.js';
import { DEFAULT_TUNING } from '../domain/tuning.js';
import { ipFor, macFor } from '../domain/addresses.js';
import { VmOperation } from '../domain/vm-locks.js';
import { tcpPeer } from '../domain/workload.js';
import type { EventSink } from '../ports/events.js';
import type { ShutdownResult } from '../ports/hypervisor.js';
import type { VmLocks } from '../ports/locks.js';
import type { NodeDirectory } from '../ports/node-directory.js';
import type { VmRepository } from '../ports/vm-repository.js';
import type { Settings } from '../ports/settings.js';
import type { Volume } from '../ports/volume.js';
import { waitTransferCompleted } from './core/transfers.js';

/** A VM as asked for, after the API's schema checked and defaulted it. */
export interface VmCreate {
  name: string;
  memoryMiB: number;
  cpus: number;
  /** Absent: 1 GiB, or the image's size for a VM made from one. */
  diskGiB?: number;
  workload: string;
  /** Its own OS: the disk is a linked clone of this library image (or with `fullCopy`, a copy). */
  image?: string;
  fullCopy?: boolean;
  /** A library ISO attached as a CD-ROM that boots first (an installer). */
  iso?: string;
  firmware?: Firmware;
  /** cloud-init: the user's #cloud-config text and SSH public keys. */
  cloudInit?: { userData?: string; sshKeys?: string[] };
  /** A restore or replica of a VM with its own OS: its boot as it was (the disk's files come from the copy). */
  bootOf?: VmBoot;
  node?: string;
  compat?: boolean;
  switch?: string;
  offloads?: string[];
}

export interface VmSettingsChange {
  compat?: boolean;
  switch?: string;
  /** null clears the VM's policy (the cluster default applies). */
  policy?: Partial<MigrationPolicy> | null;
  startAction?: StartAction;
  /** High availability on or off; the priority orders restarts (higher first). */
  ha?: boolean;
  haPriority?: number;
}

export interface LifecycleDeps {
  vms: VmRepository;
  nodes: NodeDirectory;
  locks: VmLocks;
  events: EventSink;
  clock: Clock;
  volume: Volume;
  layout: StateLayout;
  settings: Settings;
  loads: () => Promise<NodeLoad[]>;
  /** Throws when there is no switch of that name. */
  switchExists: (name: string) => Promise<void>;
  /** The interfaces that carry a switch on each node. */
  switchBindings: (name: string) => Promise<{ node: string; iface: string }[]>;
  /** The CPU a fresh boot of `vm` on `node` gets: the node's, or its vendor's baseline in compatibility mode. */
  bootCpu: (vm: VmRecord, node: string) => Promise<CpuIdentity | undefined>;
  /** A library image by name; throws naming it when there is none. */
  image: (name: string) => Promise<ImageRecord>;
}

const GiB = 1073741824;

/** The user's cloud-init as checked input: a #cloud-config mapping and SSH keys, or one line naming what is wrong. */
function parseCloudInit(c: { userData?: string; sshKeys?: string[] }): { userConfig?: Record<string, unknown>; sshKeys?: string[] } {
  const out: { userConfig?: Record<string, unknown>; sshKeys?: string[] } = {};
  if (c.userData !== undefined) {
    const parsed = parseCloudConfig(c.userData, 'the cloud-init user data');
    if ('error' in parsed) throw errors.invalid('cloud-init', parsed.error);
    out.userConfig = parsed.config;
  }
  if (c.sshKeys?.length) {
    const keys = parseSshKeys(c.sshKeys.join('\n'), 'the SSH keys');
    if (!Array.isArray(keys)) throw errors.invalid('ssh-key', keys.error);
    out.sshKeys = keys;
  }
  return out;
}

export class Lifecycle {
  constructor(private readonly d: LifecycleDeps) {}

  async create(v: VmCreate): Promise<VmRecord> {
    const { vms, layout, volume, clock } = this.d;
    if (v.node !== undefined && !this.d.nodes.isMember(v.node)) throw errors.nodeNotFound(v.node);
    if (await vms.find(v.name)) throw errors.alreadyExists('VM', v.name);
    if (tcpPeer(v.workload) === v.name) throw errors.invalid('workload', `VM '${v.name}' cannot be its own tcp-client peer`);
    await this.d.switchExists(v.switch ?? DEFAULT_SWITCH);
    const plan = await this.planBoot(v);
    const index = await vms.nextIndex();
    const diskPath = layout.diskPath(v.name);
    const now = clock.nowMs();
    const record: VmRecord = {
      name: v.name,
      memoryMiB: v.memoryMiB,
      cpus: v.cpus,
      diskGiB: plan.diskGiB,
      diskPath,
      mac: macFor(index),
      ip: ipFor(index),
      workload: v.workload,
      node: v.node ?? '',
      state: VmState.Stopped,
      createdAtMs: now,
      stateSinceMs: now,
      switch: v.switch ?? DEFAULT_SWITCH,
    };
    if (v.compat) record.compat = true;
    if (v.offloads) record.nicOffloads = v.offloads;
    const made: string[] = [];
    try {
      made.push(diskPath);
      if (plan.image) await volume.clone(diskPath, { file: plan.image.file, format: plan.image.format }, plan.diskGiB * GiB, { full: !plan.boot?.linked });
      else await volume.create(diskPath, plan.diskGiB * GiB);
      if (plan.boot) {
        const boot: VmBoot = { ...plan.boot };
        if (boot.firmware === 'uefi') {
          boot.efiVarsPath = layout.efiVars(v.name);
          made.push(boot.efiVarsPath);
          await volume.createFirmwareVars(boot.efiVarsPath);
        }
        if (v.cloudInit) {
          boot.seedPath = layout.seed(v.name);
          made.push(boot.seedPath);
          const seed = cloudInitSeed({ name: v.name, instanceId: `ferry-${v.name}-${now}`, mac: record.mac, ip: record.ip, ...plan.cloudInit });
          await volume.writeIso(boot.seedPath, SEED_LABEL, seed);
        }
        record.boot = boot;
      }
      await vms.create(record);
    } catch (e) {
      for (const f of made) volume.remove(f);
      throw toFerryError(e);
    }
    volume.touch(layout.consoleLog(v.name));
    const what = plan.boot
      ? `: ${plan.boot.image ? `${plan.boot.linked ? 'a linked clone of' : 'a copy of'} image ${plan.boot.image}` : 'an empty disk'}${plan.boot.iso ? `, ISO ${plan.boot.iso}` : ''}, ${plan.boot.firmware}${v.cloudInit ? ', cloud-init' : ''}`
      : '';
    await this.d.events.emit({ type: 'vm.created', vm: v.name, message: `VM ${v.name} created${what}` });
    return record;
  }

  /** What a VM with its own OS boots (image, ISO, firmware), checked before anything is made; the built-in guest has none. */
  private async planBoot(
    v: VmCreate,
  ): Promise<{ diskGiB: number; boot?: VmBoot; image?: ImageRecord; cloudInit?: { userConfig?: Record<string, unknown>; sshKeys?: string[] } }> {
    if (v.bootOf) {
      const boot: VmBoot = { firmware: v.bootOf.firmware };
      // The copy's disk stands alone; an ISO stays attached if the library still has it.
      if (v.bootOf.image) boot.image = v.bootOf.image;
      if (v.bootOf.iso) {
        const iso = await this.d.image(v.bootOf.iso).catch(() => undefined);
        if (iso) Object.assign(boot, { iso: iso.name, isoFile: iso.file });
      }
      return { diskGiB: v.diskGiB ?? 1, boot };
    }
    if (v.image === undefined && v.iso === undefined) {
      if (v.firmware) throw errors.invalid('firmware', "--firmware needs --image or --iso (Ferry's built-in guest boots its kernel directly)");
      if (v.cloudInit) throw errors.invalid('cloud-init', '--cloud-init and --ssh-key need --image (a disk image with cloud-init in it)');
      if (v.fullCopy) throw errors.invalid('full-copy', '--full-copy needs --image');
      return { diskGiB: v.diskGiB ?? 1 };
    }
    if (v.workload !== 'idle') throw errors.invalid('workload', "workloads run in Ferry's built-in guest; a VM with --image or --iso runs its own OS");
    const boot: VmBoot = { firmware: v.firmware ?? 'bios' };
    let image: ImageRecord | undefined;
    if (v.image !== undefined) {
      image = await this.d.image(v.image);
      if (image.format === 'iso') throw errors.invalid('image', `image '${image.name}' is an ISO: attach it with --iso`);
      boot.image = image.name;
      if (!v.fullCopy) boot.linked = true;
    } else if (v.fullCopy) throw errors.invalid('full-copy', '--full-copy needs --image');
    if (v.iso !== undefined) {
      const iso = await this.d.image(v.iso);
      if (iso.format !== 'iso') throw errors.invalid('iso', `image '${iso.name}' is a ${iso.format} disk, not an ISO: use --image`);
      boot.iso = iso.name;
      boot.isoFile = iso.file;
    }
    if (v.cloudInit && !image) throw errors.invalid('cloud-init', '--cloud-init and --ssh-key need --image (a disk image with cloud-init in it)');
    const cloudInit = v.cloudInit ? parseCloudInit(v.cloudInit) : undefined;
    const leastGiB = image ? Math.max(1, Math.ceil(image.virtualSizeBytes / GiB)) : 1;
    if (image && v.diskGiB !== undefined && v.diskGiB * GiB < image.virtualSizeBytes)
      throw errors.invalid('disk', `image '${image.name}' is ${(image.virtualSizeBytes / GiB).toFixed(1)} GiB: --disk must be at least ${leastGiB}`);
    return { diskGiB: v.diskGiB ?? leastGiB, boot, ...(image ? { image } : {}), ...(cloudInit ? { cloudInit } : {}) };
  }

  /** What an agent needs to run the VM. */
  async specFor(vm: VmRecord): Promise<VmSpec> {
    const spec: VmSpec = {
      name: vm.name,
      memoryMiB: vm.memoryMiB,
      cpus: vm.cpus,
      diskPath: vm.diskPath,
      mac: vm.mac,
      ip: vm.ip,
      workload: vm.workload,
      consoleLogPath: this.d.layout.consoleLog(vm.name),
      switch: switchOf(vm),
    };
    if (vm.boot) spec.boot = vm.boot;
    if (spec.switch) spec.switchBindings = await this.d.switchBindings(spec.switch).catch(() => []);
    if (vm.guestCpu) spec.cpuModel = vm.guestCpu.model;
    if (vm.nicOffloads) spec.nicOffloads = vm.nicOffloads;
    const peerName = tcpPeer(vm.workload);
    if (peerName) {
      const peer = await this.d.vms.find(peerName);
      if (!peer) throw errors.invalid('workload', `VM '${vm.name}' is a tcp-client of '${peerName}', which does not exist`);
      spec.peerIp = peer.ip.split('/')[0]!;
    }
    return spec;
  }

  async start(name: string, options: { node?: string } = {}): Promise<VmRecord & { restoredFrom?: string }> {
    const { vms, nodes, clock } = this.d;
    return this.d.locks.with(name, VmOperation.Start, async () => {
      const vm = await vms.get(name);
      if (vm.state === VmState.Lost && vm.lost)
        throw errors.invalidState(
          `VM '${name}' is lost with host ${vm.lost.node}: it rejoins and settles it, or once that host is off for good 'ferry vm claim ${name}' frees it to start elsewhere`,
          { vm: name, state: vm.state },
        );
      if (vm.state !== VmState.Stopped && vm.state !== VmState.Error && vm.state !== VmState.Saved) {
        throw errors.invalidState(`VM '${name}' is ${vm.state}, not stopped`, { vm: name, state: vm.state });
      }
      const spec = await this.specFor(vm);
      const target = await this.chooseNode(vm, options.node);
      const saved = vm.state === VmState.Saved ? vm.savedState : undefined;
      // A fresh boot takes its node's CPU, or in compatibility mode the
      // baseline of today's nodes of that vendor; a restore keeps the CPU it was saved with.
      const cpu = saved && vm.guestCpu ? vm.guestCpu : await this.d.bootCpu(vm, target);
      if (cpu) spec.cpuModel = cpu.model;
      await vms.setState(name, VmState.Starting, cpu ? { node: target, guestCpu: cpu } : { node: target });
      const agent = await nodes.agent(target);
      try {
        if (saved) {
          // Restore: an incoming QEMU loads the saved state, then runs.
          await agent.start(spec, { incoming: true });
          await agent.restoreFrom(name, saved, DEFAULT_TUNING);
          await waitTransferCompleted(agent, name, clock, { label: `restoring '${name}'`, timeoutMs: 60_000, stepMs: 50 });
          await agent.resume(name);
        } else {
          await agent.start(spec);
        }
      } catch (e) {
        const err = toFerryError(e);
        await agent.kill(name).catch(() => {});
        // A failed restore keeps the saved state: nothing is lost, the VM stays saved.
        await vms.setState(name, saved ? VmState.Saved : VmState.Stopped, { error: err.message });
        throw err;
      }
      const started = await vms.update(name, (cur) => {
        const next = runningRecord(cur, clock.nowMs());
        delete next.savedState;
        return next;
      });
      if (saved) this.d.volume.remove(saved);
      await this.d.events.emit({ type: 'vm.started', vm: name, node: target, message: `VM ${name} ${saved ? 'restored' : 'started'} on ${target}` });
      return saved ? { ...started, restoredFrom: saved } : started;
    });
  }

  /**
   * Where a VM starts: the node asked for, else a saved VM's node if it can
   * take it (R12: it may be in maintenance), else the node it was placed or
   * pinned on, else the best node by placement.
   */
  private async chooseNode(vm: VmRecord, asked: string | undefined): Promise<string> {
    const last = vm.node ? (await this.d.nodes.list()).find((n) => n.name === vm.node) : undefined;
    const wanted = asked ?? (vm.state === VmState.Saved && last?.state !== 'up' ? undefined : vm.node || undefined);
    const loads = await this.d.loads();
    if (wanted) {
      const node = await this.d.nodes.get(wanted);
      const refusal = nodeRefusal(node);
      if (refusal) throw errors.invalidState(refusal, { node: wanted });
      const load = loads.find((l) => l.node.name === wanted)!;
      const noSwitch = switchBlocker(switchOf(vm), load);
      if (noSwitch) throw errors.invalidState(`cannot start VM '${vm.name}' on ${wanted}: ${noSwitch}`, { node: wanted });
      const free = (node.capabilities?.memoryTotalMiB ?? 0) - load.committedMiB;
      if (free < vm.memoryMiB) throw errors.insufficientResources(`node '${wanted}' has ${free} MiB free, VM '${vm.name}' needs ${vm.memoryMiB} MiB`);
      return wanted;
    }
    const placed = placeVm(vm.memoryMiB, loads, [], switchOf(vm));
    if (!placed.node) {
      throw errors.insufficientResources(
        `no node can run VM '${vm.name}': ${placed.blockers.map((b) => `${b.node}: ${b.reason}`).join('; ') || 'no nodes are up'}`,
      );
    }
    return placed.node;
  }

  /**
   * Changes a VM's settings. A policy applies to its next migration and may
   * change at any time; compatibility mode decides the CPU the guest boots
   * with and the switch its NIC plugs into, so those change only while the
   * VM is stopped (R9).
   */
  async set(name: string, change: VmSettingsChange): Promise<VmRecord> {
    const { vms, events } = this.d;
    if (change.ha !== undefined || change.haPriority !== undefined) {
      const next = await this.setHa(name, change.ha, change.haPriority);
      if (change.startAction === undefined && change.policy === undefined && change.compat === undefined && change.switch === undefined) return next;
    }
    if (change.startAction !== undefined) {
      const action = change.startAction;
      const next = await vms.update(name, (cur) => ({ ...cur, startAction: action }));
      await events.emit({ type: 'vm.set', vm: name, message: `VM ${name}: start action ${action}` });
      if (change.policy === undefined && change.compat === undefined && change.switch === undefined) return next;
    }
    if (change.policy !== undefined) {
      const policy = change.policy;
      const next = await vms.update(name, (cur) => {
        const out: VmRecord = { ...cur };
        if (policy) out.policy = policy;
        else delete out.policy;
        return out;
      });
      await events.emit({ type: 'vm.set', vm: name, message: `VM ${name}: migration policy ${policy ? JSON.stringify(policy) : 'cleared (cluster default)'}` });
      if (change.compat === undefined && change.switch === undefined) return next;
    }
    if (change.compat === undefined && change.switch === undefined) {
      throw errors.invalid('settings', 'nothing to set: give --compat on|off, --switch NAME, --policy FILE or --start-action ACTION');
    }
    if (change.switch !== undefined) await this.d.switchExists(change.switch);
    return this.d.locks.with(name, VmOperation.Configure, async () => {
      const vm = await vms.get(name);
      const { compat, switch: sw } = change;
      const changes: string[] = [];
      if (compat !== undefined && Boolean(vm.compat) !== compat) changes.push(`processor compatibility mode ${compat ? 'on' : 'off'}`);
      if (sw !== undefined && switchOf(vm) !== sw) changes.push(`NIC on switch ${sw}`);
      if (changes.length === 0) return vm;
      if (vm.state !== VmState.Stopped && vm.state !== VmState.Error) {
        const what = compat !== undefined && Boolean(vm.compat) !== compat ? 'processor compatibility mode changes' : 'its switch changes';
        const migrating = this.d.locks.isHeld(name, VmOperation.Migration);
        throw errors.invalidState(`VM '${name}' is ${migrating ? 'migrating' : vm.state}: ${what} only while the VM is stopped`, { vm: name, state: vm.state });
      }
      const next = await vms.update(name, (cur) => {
        const out: VmRecord = { ...cur };
        if (compat === true) out.compat = true;
        if (compat === false) delete out.compat;
        if (sw !== undefined) out.switch = sw;
        return out;
      });
      await events.emit({ type: 'vm.set', vm: name, message: `VM ${name}: ${changes.join(', ')} (applies at its next start)` });
      return next;
    });
  }

  /** HA on (with a priority), off, or a new priority; turning it on again releases a held VM. */
  private async setHa(name: string, on: boolean | undefined, priority: number | undefined): Promise<VmRecord> {
    const vm = await this.d.vms.get(name);
    if (on === undefined && !vm.ha) throw errors.invalidState(`VM '${name}' is not HA: --ha on first (--ha-priority orders HA restarts)`, { vm: name });
    if (on === false && priority !== undefined) throw errors.invalid('haPriority', '--ha-priority needs --ha on, not off');
    const next = await this.d.vms.update(name, (cur) => {
      const out: VmRecord = { ...cur };
      delete out.haHeld;
      delete out.haFailures;
      if (on === false) delete out.ha;
      else out.ha = { priority: priority ?? cur.ha?.priority ?? HA_PRIORITY.default };
      return out;
    });
    await this.d.events.emit({ type: 'vm.set', vm: name, message: `VM ${name}: high availability ${describeHa(next)}` });
    return next;
  }

  /**
   * Whether a disk image is on the cluster's shared volume, which every node
   * opens. Anywhere else counts as the storage of the node the VM runs on:
   * such a VM migrates only with its disk copied along (--with-storage).
   */
  onSharedVolume(file: string): boolean {
    return path.resolve(file).startsWith(path.resolve(this.d.layout.shared) + path.sep);
  }

  /**
   * Moves a VM's disk to another directory. A running VM keeps running:
   * QEMU mirrors the disk and switches to the copy; until the switch the VM
   * runs on its original disk, which is removed only after. A stopped VM's
   * disk is copied and then removed.
   */
  async moveStorage(name: string, to: string): Promise<VmRecord & { movedBytes: number; ms: number }> {
    const { vms, volume, clock } = this.d;
    return this.d.locks.with(name, VmOperation.StorageMove, async () => {
      const vm = await vms.get(name);
      const dir = await this.d.settings.confine(to, '--to');
      const target = path.join(dir, `${name}.qcow2`);
      if (target === vm.diskPath) throw errors.invalid('to', `VM '${name}''s disk is already in ${dir}`);
      if (vm.state !== VmState.Running && vm.state !== VmState.Stopped)
        throw errors.invalidState(`VM '${name}' is ${vm.state}: only a running or stopped VM's disk moves`, { vm: name });
      try {
        volume.ensureWritableDir(path.dirname(target));
      } catch (e) {
        throw errors.invalid('to', `cannot write to ${to}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      if (volume.exists(target)) throw errors.alreadyExists('disk image', target);
      const started = clock.nowMs();
      try {
        const bytes =
          vm.state === VmState.Running
            ? (await (await this.d.nodes.agent(vm.node)).moveDisk(name, target, vm.diskGiB * 1073741824)).bytes
            : await volume.convert(vm.diskPath, target);
        const moved = await vms.update(name, (cur) => ({ ...cur, diskPath: target }));
        volume.remove(vm.diskPath);
        await this.d.events.emit({ type: 'vm.storage-moved', vm: name, node: vm.node, message: `VM ${name}'s disk moved to ${target} (${bytes} bytes)` });
        return { ...moved, movedBytes: bytes, ms: clock.nowMs() - started };
      } catch (e) {
        if (vm.state !== VmState.Running) volume.remove(target);
        throw toFerryError(e);
      }
    });
  }

  /**
   * Saves a running VM's memory and device state to the shared volume and
   * stops its QEMU (state `saved`); `start` restores it on any node.
   * On failure the VM keeps running where it was.
   */
  async save(name: string): Promise<VmRecord> {
    const { vms, clock, layout, volume } = this.d;
    return this.d.locks.with(name, VmOperation.Save, async () => {
      const vm = await vms.get(name);
      if (vm.state !== VmState.Running) throw errors.invalidState(`VM '${name}' is ${vm.state}: only a running VM can be saved`, { vm: name });
      const agent = await this.d.nodes.agent(vm.node);
      const file = path.join(layout.states, `${name}-saved-${clock.nowMs().toString(36)}.state`);
      volume.ensureWritableDir(layout.states, { recursive: true });
      try {
        await agent.pause(name);
        await agent.sendState(name, { file }, DEFAULT_TUNING);
        await waitTransferCompleted(agent, name, clock, { label: `saving '${name}'`, timeoutMs: 60_000, stepMs: 50 });
      } catch (e) {
        // Keep it running where it was.
        await agent.cancelTransfer(name).catch(() => {});
        await agent.resume(name).catch(() => {});
        volume.remove(file);
        throw toFerryError(e);
      }
      await agent.kill(name);
      const saved = await vms.setState(name, VmState.Saved, { savedState: file });
      await this.d.events.emit({ type: 'vm.saved', vm: name, node: vm.node, message: `VM ${name} saved to the shared volume` });
      return saved;
    });
  }

  /**
   * Stops a VM: the guest is asked to shut down (the ACPI power button) and
   * powered off if it has not within `timeoutMs`; `force` powers it off at
   * once. A saved VM's saved memory is discarded.
   */
  async stop(name: string, opts: { timeoutMs: number; force?: boolean; because?: 'down' }): Promise<VmRecord & { shutdown?: ShutdownResult }> {
    const { vms, clock } = this.d;
    return this.d.locks.with(name, VmOperation.Stop, async () => {
      const vm = await vms.get(name);
      if (vm.state === VmState.Stopped) return vm;
      if (vm.state === VmState.Saved) {
        // Stopping a saved VM discards its saved memory: the next start boots.
        if (vm.savedState) this.d.volume.remove(vm.savedState);
        return vms.update(name, (cur) => {
          const next: VmRecord = { ...cur, state: VmState.Stopped, stateSinceMs: clock.nowMs() };
          delete next.savedState;
          return next;
        });
      }
      let shutdown: ShutdownResult | undefined;
      if (vm.node) {
        try {
          const agent = await this.d.nodes.agent(vm.node);
          if (opts.force) {
            await agent.stop(name);
            shutdown = { by: 'force', ms: 0 };
          } else shutdown = await agent.shutdown(name, opts.timeoutMs);
        } catch (e) {
          if (!isFerryError(e, ErrorCode.VmNotFound)) throw e;
        }
      }
      const wasRunning = vm.state === VmState.Running;
      const stopped = await vms.update(name, (cur) => {
        const next: VmRecord = { ...cur, state: VmState.Stopped, stateSinceMs: clock.nowMs() };
        delete next.error;
        if (opts.because === 'down' && wasRunning) next.runningAtDown = true;
        else delete next.runningAtDown;
        return next;
      });
      const how =
        shutdown === undefined
          ? ''
          : shutdown.by === 'guest'
            ? ` (the guest shut down in ${shutdown.ms} ms)`
            : opts.force
              ? ' (powered off)'
              : ` (no shutdown within ${opts.timeoutMs} ms: powered off)`;
      await this.d.events.emit({
        type: 'vm.stopped',
        vm: name,
        node: vm.node,
        message: `VM ${name} stopped${how}`,
        ...(shutdown ? { data: { shutdown } } : {}),
      });
      return shutdown ? { ...stopped, shutdown } : stopped;
    });
  }

  /**
   * Resumes a running VM's paused guest (QEMU stopped it on an I/O error, or
   * it was paused and left so). A guest whose disk is still full stops again
   * at once: that is refused, saying so.
   */
  async resume(name: string): Promise<RunState> {
    const vm = await this.d.vms.get(name);
    if (vm.state !== VmState.Running) throw errors.invalidState(`VM '${name}' is ${vm.state}: only a running VM's guest can be resumed`, { vm: name });
    const refusal = this.d.locks.refusal(name, VmOperation.Configure);
    if (refusal || this.d.locks.isHeld(name, VmOperation.Migration)) throw errors.invalidState(refusal ?? `VM '${name}' is migrating`, { vm: name });
    const agent = await this.d.nodes.agent(vm.node);
    const before = await agent.get(name);
    if (before.runState === RunState.Running) return before.runState;
    await agent.resume(name);
    await this.d.clock.sleep(300);
    const after = await agent.get(name);
    if (after.runState === RunState.IoError)
      throw errors.invalidState(`VM '${name}' stopped again at once: its disk still has an I/O error (is its file system full?)`, {
        vm: name,
        runState: after.runState,
      });
    await this.d.events.emit({
      type: 'vm.resumed',
      vm: name,
      node: vm.node,
      message: `VM ${name} resumed on ${vm.node} (it was ${describeRunState(before.runState)})`,
    });
    return after.runState;
  }

  async delete(name: string): Promise<void> {
    const { vms, volume, layout } = this.d;
    await this.d.locks.with(name, VmOperation.Delete, async () => {
      const vm = await vms.get(name);
      if (vm.state !== VmState.Stopped && vm.state !== VmState.Error) {
        throw errors.invalidState(`VM '${name}' is ${vm.state}; stop it before deleting it`, { vm: name });
      }
      await vms.remove(name);
      volume.remove(vm.diskPath);
      volume.remove(layout.consoleLog(name));
      for (const f of [vm.boot?.efiVarsPath, vm.boot?.seedPath]) if (f) volume.remove(f);
      await this.d.events.emit({ type: 'vm.deleted', vm: name, message: `VM ${name} deleted` });
    });
  }

  /**
   * `ferry down`: every VM shut down at once (each guest gets `timeoutMs`);
   * a VM that was running is marked so that its start action knows.
   */
  async stopAll(timeoutMs: number, onError: (vm: string, e: unknown) => void): Promise<{ stopped: string[]; forced: string[] }> {
    const stopped: string[] = [];
    const forced: string[] = [];
    await Promise.all(
      (await this.d.vms.list())
        .filter((vm) => vm.state !== VmState.Stopped && vm.state !== VmState.Saved)
        .map(async (vm) => {
          try {
            const r = await this.stop(vm.name, { timeoutMs, because: 'down' });
            stopped.push(vm.name);
            if (r.shutdown?.by === 'force') forced.push(vm.name);
          } catch (e) {
            onError(vm.name, e);
          }
        }),
    );
    return { stopped: stopped.sort(), forced: forced.sort() };
  }

  /**
   * After the cluster went down and came back: starts each VM whose start
   * action says so (always; if-running and it was running), and forgets
   * who was running. A VM that cannot start is reported, the rest go on.
   */
  async runStartActions(): Promise<{ started: string[]; failed: { vm: string; error: string }[] }> {
    const started: string[] = [];
    const failed: { vm: string; error: string }[] = [];
    for (const vm of await this.d.vms.list()) {
      const starts = startsWithCluster(vm) && (vm.state === VmState.Stopped || vm.state === VmState.Saved);
      if (vm.runningAtDown) {
        await this.d.vms.update(vm.name, (cur) => {
          const next = { ...cur };
          delete next.runningAtDown;
          return next;
        });
      }
      if (!starts) continue;
      try {
        await this.start(vm.name);
        started.push(vm.name);
        await this.d.events.emit({
          type: 'vm.start-action',
          vm: vm.name,
          message: `VM ${vm.name} started by its start action (${vm.startAction ?? 'if-running'})`,
        });
      } catch (e) {
        failed.push({ vm: vm.name, error: toFerryError(e).message });
        await this.d.events.emit({ type: 'vm.start-action', vm: vm.name, message: `VM ${vm.name}'s start action failed: ${toFerryError(e).message}` });
      }
    }
    return { started, failed };
  }

  async consoleInput(name: string, data: string): Promise<void> {
    const vm = await this.d.vms.get(name);
    if (vm.state !== VmState.Running) throw errors.invalidState(`VM '${vm.name}' is ${vm.state}`);
    await (await this.d.nodes.agent(vm.node)).consoleInput(vm.name, data);
  }

  /** The console log's path; the log is appended by whichever node runs the VM. */
  async consoleLog(name: string): Promise<string> {
    await this.d.vms.get(name);
    return this.d.layout.consoleLog(name);
  }
}

/**
 * Before a migration is queued: where it goes, and every reason it cannot
 * go there now, all at once (state, target, memory, CPU compatibility,
 * NIC offloads, switch bindings, a network both nodes reach).
 */
import path from 'node:path';
import { cpuBlockers } from '../../domain/compat.js';
import { ErrorCode, FerryError, errors, toFerryError } from '../../domain/errors.js';
import type { MigrationMode, MigrationNetwork, MigrationRecord } from '../../domain/migration.js';
import type { NodeLoad } from '../../domain/placement.js';
import { switchBlocker } from '../../domain/placement.js';
import { type NodeRecord, nodeRefusal, type VmRecord, VmState } from '../../domain/records.js';
import { switchOf } from '../../domain/switches.js';
import type { TransferTuning } from '../../domain/transfer.js';
import type { NodeDirectory } from '../../ports/node-directory.js';
import type { Settings } from '../../ports/settings.js';
import type { Volume } from '../../ports/volume.js';

export interface PreflightDeps {
  nodes: NodeDirectory;
  loads: () => Promise<NodeLoad[]>;
  volume: Volume;
  settings: Settings;
  onSharedVolume: (file: string) => boolean;
  networks: { choose(source: NodeRecord, target: NodeRecord, signal?: AbortSignal): Promise<MigrationNetwork> };
  clusterId: string;
  /** Who answers at an agent's URL (for `--to URL`). */
  identify: (url: string) => Promise<{ node: string; clusterId: string }>;
  /** Whether the VM's disk is being backed up right now. */
  backupOf: (vm: string) => string | undefined;
}

export class Preflight {
  constructor(private readonly d: PreflightDeps) {}

  /** Resolves the target node; a node of another cluster is named and refused (R4). */
  async resolveTarget(to: string): Promise<NodeRecord> {
    if (/^https?:\/\//.test(to)) {
      let health: { node: string; clusterId: string };
      try {
        health = await this.d.identify(to);
      } catch {
        throw errors.invalid('to', `no Ferry node answers at ${to}`);
      }
      if (health.clusterId !== this.d.clusterId || !this.d.nodes.isMember(health.node)) {
        throw new FerryError(
          ErrorCode.NotClusterMember,
          `node '${health.node}' at ${to} is not a member of this cluster (it belongs to cluster ${health.clusterId}): live migration only moves VMs between hosts of the same cluster`,
          { details: { node: health.node, clusterId: health.clusterId } },
        );
      }
      to = health.node;
    }
    if (!this.d.nodes.isMember(to)) {
      const known = (await this.d.nodes.list()).some((n) => n.name === to);
      if (known) throw errors.notClusterMember(to);
      throw errors.nodeNotFound(to);
    }
    return this.d.nodes.get(to);
  }

  /** Checks a shared-nothing request: where the disk goes. */
  async storageCopy(vm: VmRecord, mode: MigrationMode, tuning: TransferTuning, given: string): Promise<NonNullable<MigrationRecord['storage']>> {
    const dir = await this.d.settings.confine(given, '--with-storage');
    if (mode !== 'live')
      throw errors.invalid('withStorage', '--with-storage copies the disk during a live migration; a quick migration needs the disk on the shared volume');
    if (tuning.postcopy)
      throw errors.invalid('withStorage', '--with-storage cannot be combined with post-copy: the disk copy must end before the target runs the VM');
    const targetDisk = path.join(dir, `${vm.name}.qcow2`);
    if (targetDisk === vm.diskPath) throw errors.invalid('withStorage', `VM '${vm.name}''s disk is already ${targetDisk}`);
    if (this.d.volume.exists(targetDisk)) throw errors.alreadyExists('disk image', targetDisk);
    return { sourceDisk: vm.diskPath, targetDisk, sizeBytes: vm.diskGiB * 1073741824 };
  }

  /** Every reason this VM cannot move to this node now. */
  async blockers(vm: VmRecord, target: NodeRecord, mode: MigrationMode, withStorage?: string): Promise<FerryError[]> {
    const out: FerryError[] = [];
    if (withStorage === undefined && !this.d.onSharedVolume(vm.diskPath)) {
      out.push(
        errors.invalidState(`VM '${vm.name}''s disk ${vm.diskPath} is not on the shared volume: migrate it with --with-storage DIR to copy the disk along`, {
          vm: vm.name,
          disk: vm.diskPath,
        }),
      );
    }
    if (vm.state !== VmState.Running) {
      out.push(errors.invalidState(`VM '${vm.name}' is ${vm.state}: only a running VM can be ${mode}-migrated`, { vm: vm.name, state: vm.state }));
    }
    // A backup runs on overlay + frozen image on the shared volume and merges after a move; a disk copy along would take neither.
    const backup = this.d.backupOf(vm.name);
    if (backup && withStorage !== undefined) {
      out.push(
        errors.invalidState(`a backup of VM '${vm.name}' is running (${backup}); migrate it with --with-storage when the backup ends`, { vm: vm.name, backup }),
      );
    }
    if (target.name === vm.node) {
      out.push(errors.invalid('to', `VM '${vm.name}' already runs on node '${target.name}'`));
      return out;
    }
    const refusal = nodeRefusal(target);
    if (refusal) out.push(errors.invalidState(refusal, { node: target.name }));
    const source = vm.node ? await this.d.nodes.get(vm.node).catch(() => undefined) : undefined;
    if (source?.state === 'down') out.push(errors.invalidState(`node '${source.name}' (the VM's node) is down`, { node: source.name }));
    const load = (await this.d.loads()).find((l) => l.node.name === target.name)!;
    const free = (target.capabilities?.memoryTotalMiB ?? 0) - load.committedMiB;
    if (free < vm.memoryMiB) {
      out.push(
        errors.insufficientResources(`node '${target.name}' has ${free} MiB free, VM '${vm.name}' needs ${vm.memoryMiB} MiB`, {
          node: target.name,
          freeMiB: free,
          neededMiB: vm.memoryMiB,
        }),
      );
    }
    if (vm.guestCpu && target.capabilities) {
      for (const b of cpuBlockers(vm.guestCpu, target.capabilities.cpu, target.name)) out.push(errors.invalidState(b, { node: target.name }));
    }
    const nicBlocker = await this.nicBlocker(vm, source, target);
    if (nicBlocker) out.push(nicBlocker);
    const noSwitch = switchBlocker(switchOf(vm), load);
    if (noSwitch) out.push(errors.invalidState(`${noSwitch}: VM '${vm.name}' would lose its network there`, { node: target.name }));
    // A live migration needs a network both nodes reach each other on (R6).
    if (mode === 'live' && source?.state !== 'down' && source && target.state !== 'down') {
      await this.d.networks.choose(source, target).catch((e: unknown) => out.push(toFerryError(e)));
    }
    return out;
  }

  /**
   * NIC offloads (R10): the target's backend must offer every offload the
   * guest negotiated, and a device running with the virtio-net header (a tap)
   * only loads where there is one (QEMU: "saved image requires vnet_hdr=on").
   */
  private async nicBlocker(vm: VmRecord, source: NodeRecord | undefined, target: NodeRecord): Promise<FerryError | undefined> {
    const to = target.capabilities?.nic;
    if (!to || !source || source.state === 'down' || vm.state !== VmState.Running) return undefined;
    const used = await (await this.d.nodes.agent(source)).nic(vm.name).then(
      (n) => n.negotiated as string[],
      () => [] as string[],
    );
    const missing = used.filter((o) => !to.offloads.includes(o));
    const headerLost = source.capabilities?.nic?.vnetHeader === true && !to.vnetHeader;
    if (!missing.length && !headerLost) return undefined;
    const reasons = [
      ...(missing.length ? [`cannot offer NIC offloads the VM uses: ${missing.join(', ')}`] : []),
      ...(headerLost ? [`has no virtio-net header, which the VM's NIC runs with on '${source.name}' (${source.capabilities!.nic!.backend})`] : []),
    ];
    return errors.invalidState(`node '${target.name}' (NIC backend ${to.backend}) ${reasons.join(' and ')}`, { node: target.name, offloads: missing });
  }
}

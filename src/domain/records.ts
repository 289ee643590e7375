/**
 * Ferry's core records, as the controller saves them in the store and the
 * API returns them. Pure data: no I/O here.
 */

export const VmState = {
  Stopped: 'stopped',
  Starting: 'starting',
  Running: 'running',
  Migrating: 'migrating',
  Stopping: 'stopping',
  Saved: 'saved',
  Error: 'error',
  /** Its host failed and it is not an HA VM: nobody knows whether it still runs there (`lost` says which host, since when). */
  Lost: 'lost',
} as const;
export type VmState = (typeof VmState)[keyof typeof VmState];

export const NodeState = { Up: 'up', Maintenance: 'maintenance', Down: 'down' } as const;
export type NodeState = (typeof NodeState)[keyof typeof NodeState];

export type Accelerator = 'kvm' | 'tcg';

export interface CpuIdentity {
  vendor: string; // GenuineIntel, AuthenticAMD, or "qemu" for TCG's generic model
  model: string; // the QEMU CPU model the node runs guests with
  features: string[];
}

export interface NodeCapabilities {
  accelerator: Accelerator;
  acceleratorReason: string;
  cpu: CpuIdentity;
  qemuVersion: string;
  memoryTotalMiB: number;
  memoryFreeMiB: number;
  /** Host CPUs this node offers (vCPU load is counted against them). */
  cpuCount?: number;
  /** The network backend VMs' NICs use here and the offloads it lets them offer (from QEMU). */
  nic?: { backend: string; offloads: string[]; vnetHeader: boolean };
}

export interface NodeRecord {
  name: string;
  /** The agent's HTTP base URL (loopback). */
  url: string;
  /** The address QEMU listens on for incoming migrations. */
  migrationAddress: string;
  state: NodeState;
  capabilities?: NodeCapabilities;
  lastSeenMs?: number;
  /** Where the node answers on each cluster network (address and probe port). */
  networks?: Record<string, { address: string; port: number; link?: HostLink }>;
  /** Whether the node sees the cluster's shared volume (the marker the controller wrote), and if not, why. */
  volume?: { ok: boolean; error?: string };
}

/** The shared volume's marker, as an agent read it: the cluster's id and the controller's mark, or the read's error. */
export type VolumeSighting = { clusterId: string; mark: string } | { error: string };

/** The file on the shared volume the controller writes and every agent reads back. */
export const VOLUME_MARKER = '.ferry-volume';

/** Judges an agent's sighting against the controller's mark: whether that host sees this cluster's volume. */
export function judgeVolume(expected: { clusterId: string; mark: string }, seen: VolumeSighting | undefined): { ok: boolean; error?: string } {
  if (!seen) return { ok: false, error: 'the agent did not report the shared volume' };
  if ('error' in seen) return { ok: false, error: seen.error };
  if (seen.clusterId !== expected.clusterId) return { ok: false, error: `it holds the volume of another cluster (${seen.clusterId})` };
  if (seen.mark !== expected.mark) return { ok: false, error: 'its marker is not the one this controller wrote (another copy of the volume?)' };
  return { ok: true };
}

/** Why a node takes no VMs now (down, in maintenance, blind to the shared volume), or undefined if it does. */
export function nodeRefusal(n: Pick<NodeRecord, 'name' | 'state' | 'volume'>): string | undefined {
  if (n.state !== 'up') return `node '${n.name}' is ${n.state}`;
  if (n.volume && !n.volume.ok) return `node '${n.name}' does not see the cluster's shared volume: ${n.volume.error ?? 'unknown'}`;
  return undefined;
}

/** The host interface that holds a node's address on a network, as the kernel reports it. */
export interface HostLink {
  iface: string;
  /** The kernel's operstate: up, down, unknown (loopback), dormant, … */
  operState: string;
  /** Link speed in Mbit/s, where the driver says (veth and most NICs do; loopback does not). */
  speedMbit?: number;
  mtu: number;
}

export interface VmRecord {
  name: string;
  memoryMiB: number;
  cpus: number;
  diskGiB: number;
  /** qcow2 on the cluster's shared volume. */
  diskPath: string;
  mac: string;
  /** Address with prefix, e.g. 10.99.0.5/16. */
  ip: string;
  workload: string;
  /** The node the VM runs on or will start on. */
  node: string;
  state: VmState;
  createdAtMs: number;
  /** When `state` last changed. */
  stateSinceMs?: number;
  /** Why the last operation on the VM failed, if it did. */
  error?: string;
  /** In API views (never stored): the migration holding the VM, while one does. */
  migrationId?: string;
  /** When state is saved: the VM's memory and device state on the shared volume. */
  savedState?: string;
  /** The CPU the guest was booted with: its node's model, or the vendor's baseline in compatibility mode. */
  guestCpu?: CpuIdentity;
  /** Processor compatibility mode (R9): boot with the features all nodes of the vendor share. */
  compat?: boolean;
  /** The virtual switch the NIC is attached to; '' when disconnected; absent means 'default'. */
  switch?: string;
  /** NIC offloads the VM asks for (R10); absent: all that QEMU has. */
  nicOffloads?: string[];
  /** Migration policy fields overriding the cluster default for this VM. */
  policy?: Partial<import('./policy.js').MigrationPolicy>;
  /** What the cluster does with the VM when it starts again after `ferry down`; absent: if-running. */
  startAction?: StartAction;
  /** The VM was running when `ferry down` shut it down (its if-running start action starts it again). */
  runningAtDown?: boolean;
  /** What the VM boots; absent: Ferry's built-in guest (direct kernel boot). */
  boot?: VmBoot;
  /** High availability: restarted on another host when its host fails, and in place when its QEMU dies (see ha.ts). */
  ha?: { priority: number };
  /** State lost: the host that failed under it, and when that was detected. */
  lost?: { node: string; sinceMs: number };
  /** HA restarts that failed in a row; after HA_MAX_FAILURES the VM is held (quarantined) with the last reason. */
  haFailures?: number;
  /** Held: Ferry no longer restarts it by itself until `vm start` or `vm set --ha on`. */
  haHeld?: { reason: string; sinceMs: number };
}

export const FIRMWARES = ['bios', 'uefi'] as const;
export type Firmware = (typeof FIRMWARES)[number];

/**
 * A VM that boots its own operating system through its firmware (SeaBIOS or
 * OVMF) from its disk or an installer ISO, with a guest agent channel.
 * Every file here is on the shared volume, so each host opens the same ones
 * and a migration target gets the same devices.
 */
export interface VmBoot {
  firmware: Firmware;
  /** The library image the disk was made from. */
  image?: string;
  /** The disk is a linked clone: a qcow2 over the image's file. */
  linked?: boolean;
  /** A library ISO attached as a CD-ROM that boots first. */
  iso?: string;
  isoFile?: string;
  /** OVMF's variables of this VM (uefi only). */
  efiVarsPath?: string;
  /** The cloud-init NoCloud seed: an ISO labelled cidata. */
  seedPath?: string;
}

/** When a cluster starts: start the VM always, never, or if it was running when the cluster went down. */
export const START_ACTIONS = ['always', 'never', 'if-running'] as const;
export type StartAction = (typeof START_ACTIONS)[number];

/** Whether a VM's start action starts it when the cluster comes back up. */
export function startsWithCluster(vm: Pick<VmRecord, 'startAction' | 'runningAtDown'>): boolean {
  const action = vm.startAction ?? 'if-running';
  return action === 'always' || (action === 'if-running' && vm.runningAtDown === true);
}

/** What an agent needs to start a VM's QEMU. */
export interface VmSpec {
  name: string;
  memoryMiB: number;
  cpus: number;
  diskPath: string;
  mac: string;
  ip: string;
  workload: string;
  /** IP of the VM a tcp-client workload connects to. */
  peerIp?: string;
  /** The guest's CPU model; it travels with the VM so a migration target runs the same one. */
  cpuModel?: string;
  /** The virtual switch the NIC plugs into ('' for none). */
  switch?: string;
  /** That switch's bindings: the interface that carries it on each node (a bridge-backed NIC's bridge). */
  switchBindings?: { node: string; iface: string }[];
  /** The NIC's requested offloads (virtio-net property names); absent: all. */
  nicOffloads?: string[];
  consoleLogPath: string;
  /** The VM's own OS: firmware, CD-ROM, seed and guest agent channel; absent: the built-in guest. */
  boot?: VmBoot;
}

/** What a guest's agent (qemu-guest-agent) says of the guest, or why there is nothing to say. */
export type GuestReport =
  | {
      agent: true;
      os?: string;
      kernel?: string;
      hostname?: string;
      interfaces: { name: string; mac?: string; addresses: string[] }[];
      /** cloud-init's verdict from /run/cloud-init/result.json: done, errors, or not (yet) run. */
      cloudInit?: { state: 'done' | 'error' | 'not-run'; datasource?: string; errors?: string[] };
    }
  | { agent: false; reason: string };

/** A guest's run state, as Ferry names it (QEMU's own names stay in the driver). */
export const RunState = {
  Running: 'running',
  Paused: 'paused',
  /** Waiting for its state to arrive (a migration target). */
  Incoming: 'incoming',
  /** Its state went to another host or a file; the guest no longer runs here. */
  Migrated: 'migrated',
  /** Stopped by a disk error (a full disk); resumes when the error is gone. */
  IoError: 'io-error',
  /** The guest's kernel panicked (QEMU keeps the process for inspection). */
  GuestPanicked: 'guest-panicked',
  /** The guest shut down and QEMU has not exited yet. */
  Shutdown: 'shutdown',
  /** The emulator hit an internal error, or a watchdog fired. */
  Failed: 'failed',
  Exited: 'exited',
  /** The process exists but does not answer. */
  Unresponsive: 'unresponsive',
} as const;
export type RunState = (typeof RunState)[keyof typeof RunState];

/** What an agent reports of one guest process it runs. */
export interface VmInstance {
  name: string;
  pid: number;
  runState: RunState;
  /** Started as a migration target (or to restore a saved state). */
  incoming: boolean;
  startedAtMs: number;
  /** Whether the NIC is plugged into its virtual switch right now (absent: no switch, or a tap NIC). */
  network?: NicLink;
  /** How often the agent resumed this guest after an I/O error, once its disk had room again. */
  ioErrorResumes?: number;
}

/** A run state in a sentence, for events and the CLI. */
export function describeRunState(s: RunState): string {
  switch (s) {
    case RunState.Running:
      return 'running';
    case RunState.Paused:
      return 'paused';
    case RunState.IoError:
      return 'paused by an I/O error on its disk (full?)';
    case RunState.GuestPanicked:
      return 'stopped: the guest kernel panicked';
    case RunState.Shutdown:
      return 'shut down';
    case RunState.Failed:
      return 'stopped: the emulator failed';
    case RunState.Unresponsive:
      return 'not answering its node';
    default:
      return s;
  }
}

/** A NIC's link to its virtual switch, as QEMU sees it. */
export type NicLink = 'connected' | 'disconnected';

/** What an agent tells the controller every second. */
export interface Heartbeat {
  name: string;
  url: string;
  clusterId: string;
  migrationAddress: string;
  networks?: Record<string, { address: string; port: number; link?: HostLink }>;
  capabilities: NodeCapabilities;
  vms: VmInstance[];
  volume?: VolumeSighting;
  /** HA VMs this agent's watchdogs killed since its last answered heartbeat: its lease ran out. */
  fenced?: string[];
}

/** The controller's answer to a heartbeat: the host's lease is renewed for ttlMs, and these of its VMs are HA (fence them if it lapses). */
/** Where an agent renews its host's lease itself (etcd): the members, the store's key prefix, and the key. */
export interface LeaseRenewal {
  endpoints: string[];
  prefix?: string;
  key: string;
}

export interface HeartbeatAnswer {
  ok: true;
  /** `renew`: the agent renews the lease in the store itself; absent, this answer renewed it. */
  lease: { ttlMs: number; renew?: LeaseRenewal };
  ha: string[];
  /** Every controller's URL (the leader's first): where the agent turns when this one stops answering. */
  controllers?: string[];
  /** The answering leader's leadership (on etcd): calls under an older one are refused from now on. */
  leadership?: number;
}

/** A VM that holds resources on its node. */
export function isActive(state: VmState): boolean {
  return state === VmState.Running || state === VmState.Starting || state === VmState.Migrating || state === VmState.Stopping;
}

export const LIMITS = {
  memoryMiB: { min: 64, max: 65536 },
  cpus: { min: 1, max: 64 },
  diskGiB: { min: 1, max: 4096 },
  nodes: { min: 1, max: 16 },
} as const;

/** Names of VMs and nodes: DNS-label-like, so they are safe in paths and argv. */
export const NAME_PATTERN = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$/;

/** A VM's record once its start is known to have worked: running since `nowMs`, no error, no longer lost, and an HA VM's count of failed restarts (and any hold) starts over. */
export function runningRecord(cur: VmRecord, nowMs: number): VmRecord {
  const next: VmRecord = { ...cur, state: VmState.Running, stateSinceMs: nowMs };
  delete next.error;
  delete next.lost;
  delete next.haFailures;
  delete next.haHeld;
  return next;
}

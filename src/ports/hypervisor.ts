/**
 * The hypervisor as the node agent sees it, in Ferry's words: guests that
 * are launched, paused, resumed and stopped; their state transferred out to
 * another host or a file and in from one, with progress; block jobs on
 * their disks; their serial console. `src/qemu/hypervisor.ts` is the one
 * real implementation (the only code that speaks QMP); `src/testing/` has a
 * strict fake for component tests, and one contract suite runs against both.
 *
 *                 launch ──► running ◄──► paused
 *   launch(incoming) ──► incoming ──(transfer in completes)──► paused|running
 *   running ──(transfer out completes)──► migrated      (the guest runs elsewhere now)
 *   running ──(disk full)──► io-error
 *   any ──(process ends)──► exited
 */
import type { Duplex } from 'node:stream';
import type { FreezeResult, NbdEndpoint, ReplicaSyncResult } from '../domain/block-jobs.js';
import { type Accelerator, type CpuIdentity, type GuestReport, RunState, type VmInstance, type VmSpec } from '../domain/records.js';
import type { NicBackend, Offload } from '../domain/nic.js';
import type { TransferProgress, TransferTuning } from '../domain/transfer.js';

export { RunState };

/** How a guest went: it powered off by itself (`guest`) or was powered off (`force`). */
export interface ShutdownResult {
  by: 'guest' | 'force';
  /** How the guest was asked: its agent, or the ACPI power button (a guest without an agent). */
  via?: 'agent' | 'acpi';
  ms: number;
}
/** One guest process on this host (what the agent reports). */
export type GuestProcess = VmInstance;

/** What the hypervisor finds out about this host at start. */
export interface HostFacts {
  accelerator: Accelerator;
  acceleratorReason: string;
  cpu: CpuIdentity;
  version: string;
  /** Offloads a NIC on this host's backend can offer. */
  nicOffloads: Offload[];
}

/** Where a guest's NIC sends its frames. */
export type NicAttachment = { kind: 'stream'; socket: string } | { kind: 'tap'; ifname: string } | { kind: 'none' };

export interface LaunchOptions {
  incoming: boolean;
  nic: NicAttachment;
  /** The CPU model the guest sees. */
  cpuModel: string;
}

/** Where a transfer goes: a peer's listening endpoint, or a file on the shared volume. */
export type TransferTarget = { address: string; port: number } | { file: string };

export interface GuestMeasurement {
  dirtyRateBytesPerSec: number;
  ramBytes: number;
  nonZeroBytes: number;
  samples: number;
  nonZeroSamples: number;
  ms: number;
}

export interface Hypervisor {
  probeHost(opts: { cpuModel?: string; nicBackend: NicBackend }): Promise<HostFacts>;
  /** Takes over guests a previous agent started; returns their names. */
  adoptRunning(): Promise<string[]>;
  list(): Promise<GuestProcess[]>;
  /** Throws `vm-not-found` (naming why its process ended, if it did). */
  get(name: string): Promise<GuestProcess>;
  has(name: string): boolean;
  /** The configuration a guest runs with: what a migration target is created from. */
  spec(name: string): VmSpec;
  /** Memory the running guests take, in MiB. */
  committedMiB(): number;
  launch(spec: VmSpec, opts: LaunchOptions): Promise<GuestProcess>;
  /** Asks the guest's process to quit, then kills it after `graceMs`. */
  stop(name: string, graceMs?: number): Promise<void>;
  /**
   * Asks the guest to shut down (the ACPI power button) and waits up to
   * `timeoutMs` for it to power off; then (or at once, for a guest that is
   * not running and so cannot hear the button) powers it off.
   */
  shutdown(name: string, timeoutMs: number): Promise<ShutdownResult>;
  /** A connection to the guest's graphical console (its VNC server, RFB), for a VM with its own OS. */
  display(name: string): Promise<Duplex>;
  /** What the guest's agent says of it (a VM with its own OS); `agent: false` with the reason when none answers. */
  guestReport(name: string): Promise<GuestReport>;
  /** Ends the process now; with `pid`, only if it is still that process. False when nothing was killed. */
  kill(name: string, pid?: number): Promise<boolean>;
  pause(name: string): Promise<void>;
  resume(name: string): Promise<void>;
  /** Called when a guest's process ends by itself, with its last words. */
  onExit(listener: (name: string, lastWords: string) => void): () => void;
  /** Stops managing every guest without stopping them (the agent restarts). */
  detachAll(): void;

  listenIncoming(name: string, tuning: TransferTuning, address: string): Promise<{ address: string; port: number }>;
  restoreFrom(name: string, file: string, tuning: TransferTuning): Promise<void>;
  sendTo(name: string, target: TransferTarget, tuning: TransferTuning): Promise<void>;
  transferProgress(name: string): Promise<TransferProgress>;
  cancelTransfer(name: string): Promise<void>;
  startPostcopy(name: string): Promise<void>;
  /** Sends the device state of a transfer that paused before switchover. */
  continueTransfer(name: string): Promise<void>;
  /** Announces the guest's MAC on its network again (RARP). */
  announce(name: string): Promise<void>;
  measureGuest(name: string, opts: { ms: number; samples: number }): Promise<GuestMeasurement>;
  nicStatus(name: string): Promise<{ offered: Offload[]; negotiated: Offload[] }>;

  /** Freezes the disk under `overlay` for a backup (see domain/block-jobs.ts). */
  freezeDisk(name: string, overlay: string, mode: 'full' | 'incremental'): Promise<FreezeResult>;
  /** Merges the backup overlay back; `copied`: the backup succeeded. */
  mergeOverlay(name: string, copied: boolean): Promise<{ base: string; overlay: string }>;
  replicaSync(name: string, to: NbdEndpoint, mode: 'full' | 'incremental'): Promise<ReplicaSyncResult>;
  cancelReplicaSync(name: string): Promise<boolean>;
  /** Mirrors the running disk into a new image and switches to it. */
  moveDisk(name: string, target: string, sizeBytes: number): Promise<{ bytes: number; ms: number }>;
  exportDisk(name: string, address: string): Promise<NbdEndpoint>;
  unexportDisk(name: string): Promise<void>;
  mirrorDisk(name: string, to: NbdEndpoint): Promise<{ bytes: number; ms: number }>;
  endMirror(name: string, complete: boolean): Promise<{ bytes: number }>;

  onConsole(name: string, listener: (chunk: Buffer) => void): () => void;
  writeConsole(name: string, data: Buffer): void;
}

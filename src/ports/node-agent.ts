/**
 * One host's agent as the controller sees it: the host-side half of every
 * operation. `src/node/client.ts` implements it over HTTP; component tests
 * use the same client against an in-process agent.
 */
import type { Duplex } from 'node:stream';
import type { FreezeResult, NbdEndpoint, ReplicaSyncResult } from '../domain/block-jobs.js';
import type { GuestReport, NodeCapabilities, VmInstance, VmSpec } from '../domain/records.js';
import type { TransferProgress, TransferTuning } from '../domain/transfer.js';
import type { Offload } from '../domain/nic.js';
import type { GuestMeasurement, ShutdownResult, TransferTarget } from './hypervisor.js';

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface StartOptions extends CallOptions {
  incoming?: boolean;
  /** First create the VM's disk image here, empty, this size (a shared-nothing migration target). */
  createDiskBytes?: number;
}

export interface NodeAgent {
  readonly node: string;
  health(opts?: CallOptions): Promise<{ node: string; clusterId: string; pid: number }>;
  capabilities(opts?: CallOptions): Promise<NodeCapabilities>;
  list(opts?: CallOptions): Promise<VmInstance[]>;
  get(vm: string, opts?: CallOptions): Promise<VmInstance>;
  /** The configuration the VM runs with here. */
  config(vm: string, opts?: CallOptions): Promise<VmSpec>;
  start(spec: VmSpec, opts?: StartOptions): Promise<VmInstance>;
  stop(vm: string, opts?: CallOptions): Promise<void>;
  /** The guest is asked to shut down and powered off after `timeoutMs` if it has not. */
  shutdown(vm: string, timeoutMs: number, opts?: CallOptions): Promise<ShutdownResult>;
  /** The guest's screen (RFB bytes both ways), for a VM with its own OS. */
  display(vm: string, opts?: CallOptions): Promise<Duplex>;
  /** What the guest's agent says of the guest. */
  guest(vm: string, opts?: CallOptions): Promise<GuestReport>;
  /** Ends the VM's process now (only process `pid`, if given); false when none was killed. */
  kill(vm: string, opts?: CallOptions & { pid?: number }): Promise<boolean>;
  pause(vm: string, opts?: CallOptions): Promise<void>;
  resume(vm: string, opts?: CallOptions): Promise<void>;

  /** Target: listen for the VM's state on `address` (one of this host's network addresses). */
  listenIncoming(vm: string, tuning: TransferTuning, address: string, opts?: CallOptions): Promise<{ address: string; port: number }>;
  /** Load the VM's state from a file on the shared volume (the VM stays paused after). */
  restoreFrom(vm: string, file: string, tuning: TransferTuning, opts?: CallOptions): Promise<void>;
  sendState(vm: string, target: TransferTarget, tuning: TransferTuning, opts?: CallOptions): Promise<void>;
  transfer(vm: string, opts?: CallOptions): Promise<TransferProgress>;
  cancelTransfer(vm: string, opts?: CallOptions): Promise<void>;
  startPostcopy(vm: string, opts?: CallOptions): Promise<void>;
  continueTransfer(vm: string, opts?: CallOptions): Promise<void>;
  /** For a VM on a host bridge, says whether the bridge learnt its MAC on the VM's port. */
  announce(vm: string, opts?: CallOptions): Promise<{ bridge?: { name: string; port: string; learnt: boolean } }>;
  measure(vm: string, ms: number, opts?: CallOptions): Promise<GuestMeasurement>;
  nic(vm: string, opts?: CallOptions): Promise<{ offered: Offload[]; negotiated: Offload[] }>;

  /** Target of a shared-nothing migration: export the incoming VM's disk over NBD on `address`. */
  exportDisk(vm: string, address: string, opts?: CallOptions): Promise<NbdEndpoint>;
  unexportDisk(vm: string, opts?: CallOptions): Promise<void>;
  /** Source of a shared-nothing migration: mirror the disk into `to` until in sync. */
  mirrorDisk(vm: string, to: NbdEndpoint, opts?: CallOptions): Promise<{ bytes: number; ms: number }>;
  /** Ends the disk mirror: `complete` with the VM paused and the copy in sync, else abandons it. */
  endMirror(vm: string, complete: boolean, opts?: CallOptions): Promise<{ bytes: number }>;
  freezeDisk(vm: string, overlay: string, mode: 'full' | 'incremental', opts?: CallOptions): Promise<FreezeResult>;
  mergeOverlay(vm: string, copied: boolean, opts?: CallOptions): Promise<{ base: string; overlay: string }>;
  replicaSync(vm: string, to: NbdEndpoint, mode: 'full' | 'incremental', opts?: CallOptions): Promise<ReplicaSyncResult>;
  cancelReplicaSync(vm: string, opts?: CallOptions): Promise<{ cancelled: boolean }>;
  moveDisk(vm: string, target: string, sizeBytes: number, opts?: CallOptions): Promise<{ bytes: number; ms: number }>;
  consoleInput(vm: string, data: string, opts?: CallOptions): Promise<void>;

  /** How fast this host sends to `to:port` from its own address `from`. */
  throughput(from: string, to: string, port: number, ms: number, opts?: CallOptions): Promise<{ bytesPerSec: number; bytes: number; ms: number }>;
  /** Can this host reach `to:port` from its own address `from`? */
  probe(from: string, to: string, port: number, opts?: CallOptions): Promise<{ ok: boolean; ms: number; error?: string }>;
}

/** Finds a host's agent by its node's name and address. */
export type AgentConnector = (node: string, url: string) => NodeAgent;

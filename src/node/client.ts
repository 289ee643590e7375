/**
 * The controller's typed view of one node agent's HTTP API.
 */
import { callJson, type CallOptions } from '../api/http.js';
import { DEFAULT_SWITCH, type SwitchState, type SwitchWanted } from '../switch/daemon.js';
import type { Clock } from '../domain/clock.js';
import { ErrorCode, FerryError, errors } from '../domain/errors.js';
import type { NodeCapabilities, VmInstance, VmSpec } from '../domain/records.js';
import type { TransferProgress, TransferTuning } from '../domain/transfer.js';
import type { ProbeResult } from '../switch/probe.js';
import type { NbdEndpoint } from '../qemu/nbd-mirror.js';
import type { FreezeResult } from '../qemu/backup-job.js';
import type { ReplicaSyncResult } from '../qemu/replica-job.js';

export class AgentClient {
  constructor(
    readonly node: string,
    readonly url: string,
    private readonly token: string,
  ) {}

  private call<T>(method: string, path: string, body?: unknown, options: CallOptions = {}): Promise<T> {
    return callJson<T>(this.url, method, path, body, { token: this.token, timeoutMs: 20_000, ...options }).catch((e: unknown) => {
      if (e instanceof FerryError && e.code === ErrorCode.AgentUnreachable) {
        throw new FerryError(ErrorCode.AgentUnreachable, `agent of node '${this.node}' is unreachable`, { details: { node: this.node }, cause: e });
      }
      throw e;
    });
  }

  health(options?: CallOptions): Promise<{ node: string; clusterId: string; pid: number }> {
    return this.call('GET', '/v1/health', undefined, { timeoutMs: 3000, ...options });
  }
  capabilities(): Promise<NodeCapabilities> {
    return this.call('GET', '/v1/capabilities');
  }
  list(options?: CallOptions): Promise<VmInstance[]> {
    return this.call('GET', '/v1/vms', undefined, options);
  }
  get(name: string, options?: CallOptions): Promise<VmInstance> {
    return this.call('GET', `/v1/vms/${name}`, undefined, options);
  }
  config(name: string, options?: CallOptions): Promise<VmSpec> {
    return this.call('GET', `/v1/vms/${name}/config`, undefined, options);
  }
  /** Starts the VM's QEMU; `createDiskBytes`: first create its (new, empty) disk image here. */
  start(spec: VmSpec, incoming = false, options?: CallOptions & { createDiskBytes?: number }): Promise<VmInstance> {
    const body = { spec, incoming, ...(options?.createDiskBytes ? { createDiskBytes: options.createDiskBytes } : {}) };
    return this.call('POST', '/v1/vms', body, { timeoutMs: 30_000, ...options });
  }
  /** Target of a shared-nothing migration: export the incoming VM's disk over NBD on `address`. */
  exportDisk(name: string, address: string, options?: CallOptions): Promise<NbdEndpoint> {
    return this.call('POST', `/v1/vms/${name}/nbd-export`, { address }, options);
  }
  unexportDisk(name: string, options?: CallOptions): Promise<void> {
    return this.call('DELETE', `/v1/vms/${name}/nbd-export`, undefined, options);
  }
  /** Source of a shared-nothing migration: mirror the disk into `to` until in sync. */
  mirrorDisk(name: string, to: NbdEndpoint, options?: CallOptions): Promise<{ bytes: number; ms: number }> {
    return this.call('POST', `/v1/vms/${name}/disk-mirror`, to, { timeoutMs: 31 * 60_000, ...options });
  }
  /** Ends the disk mirror: `complete` with the VM paused and the copy in sync, else abandons it. */
  endDiskMirror(name: string, complete: boolean, options?: CallOptions): Promise<{ bytes: number }> {
    return this.call('POST', `/v1/vms/${name}/disk-mirror/end`, { complete }, { timeoutMs: 90_000, ...options });
  }
  /** Sends the device state of a transfer paused before switchover. */
  continueMigration(name: string, options?: CallOptions): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/migration/continue`, {}, options);
  }
  stop(name: string): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/stop`, {});
  }
  /** SIGKILL the VM's QEMU on this node (only process `pid`, if given); false when none was killed. */
  async kill(name: string, options?: CallOptions & { pid?: number }): Promise<boolean> {
    const query = options?.pid !== undefined ? `?pid=${options.pid}` : '';
    return (await this.call<{ killed: boolean }>('DELETE', `/v1/vms/${name}${query}`, undefined, options)).killed;
  }
  pause(name: string): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/pause`, {});
  }
  resume(name: string, options?: CallOptions): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/resume`, {}, options);
  }
  /** Target: QEMU listens for the stream on `address` (one of this node's network addresses). */
  listenIncoming(name: string, tuning: TransferTuning, address: string, options?: CallOptions): Promise<{ address: string; port: number }> {
    return this.call('POST', `/v1/vms/${name}/incoming`, { tuning, address }, options);
  }
  /** The offloads a VM's NIC offers here and those its guest negotiated. */
  nic(name: string, options?: CallOptions): Promise<{ offered: string[]; negotiated: string[] }> {
    return this.call('GET', `/v1/vms/${name}/nic`, undefined, { timeoutMs: 5000, ...options });
  }
  /** Freezes the VM's disk image for a backup under an overlay that takes the writes (see qemu/backup-job.ts). */
  freezeDisk(name: string, overlay: string, mode: 'full' | 'incremental'): Promise<FreezeResult> {
    return this.call('POST', `/v1/vms/${name}/backup/freeze`, { overlay, mode }, { timeoutMs: 60_000 });
  }
  /** Merges the backup's overlay back into the disk image; `copied`: the backup succeeded. */
  mergeOverlay(name: string, copied: boolean): Promise<{ base: string; overlay: string }> {
    return this.call('POST', `/v1/vms/${name}/backup/merge`, { copied }, { timeoutMs: 31 * 60_000 });
  }
  /** One replica sync of the VM's disk into the replica side's NBD export (waits for the job). */
  replicaSync(name: string, req: NbdEndpoint & { mode: 'full' | 'incremental' }): Promise<ReplicaSyncResult> {
    return this.call('POST', `/v1/vms/${name}/replica-sync`, req, { timeoutMs: 31 * 60_000 });
  }
  cancelReplicaSync(name: string): Promise<{ cancelled: boolean }> {
    return this.call('POST', `/v1/vms/${name}/replica-sync/cancel`, {});
  }
  /** Moves the running VM's disk to `target` (mirror, then switch). */
  moveStorage(name: string, target: string, sizeBytes: number): Promise<{ bytes: number; ms: number }> {
    return this.call('POST', `/v1/vms/${name}/move-storage`, { target, sizeBytes }, { timeoutMs: 31 * 60_000 });
  }
  /** Switches the VM's running transfer to post-copy. */
  startPostcopy(name: string): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/migration/postcopy`, {});
  }
  /** The guest's dirty rate and non-zero memory, measured by its QEMU. */
  measure(name: string, ms = 300, options?: CallOptions): Promise<GuestMeasurement> {
    return this.call('POST', `/v1/vms/${name}/measure`, { ms }, { timeoutMs: ms + 20_000, ...options });
  }
  /** How fast this node sends to `to:port` from `from`. */
  throughput(from: string, to: string, port: number, ms = 300, options?: CallOptions): Promise<{ bytesPerSec: number; bytes: number; ms: number }> {
    return this.call('POST', '/v1/net/throughput', { from, to, port, ms }, { timeoutMs: ms + 15_000, ...options });
  }
  /** Can this node reach `to:port` from its own address `from`? */
  probe(from: string, to: string, port: number, options?: CallOptions): Promise<{ ok: boolean; ms: number; error?: string }> {
    return this.call('POST', '/v1/net/probe', { from, to, port, timeoutMs: 500 }, { timeoutMs: 3000, ...options });
  }
  /** Loads the VM's state from a file on the shared volume (the VM stays paused after). */
  restoreFrom(name: string, file: string, tuning: TransferTuning, options?: CallOptions): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/incoming`, { tuning, file }, options);
  }
  startMigration(name: string, target: { address: string; port: number } | { file: string }, tuning: TransferTuning, options?: CallOptions): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/migration`, { ...target, tuning }, options);
  }
  migration(name: string, options?: CallOptions): Promise<TransferProgress> {
    return this.call('GET', `/v1/vms/${name}/migration`, undefined, { timeoutMs: 5000, ...options });
  }
  cancelMigration(name: string, options?: CallOptions): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/migration/cancel`, {}, options);
  }
  announce(name: string): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/announce`, {});
  }
  consoleInput(name: string, data: string): Promise<void> {
    return this.call('POST', `/v1/vms/${name}/console`, { data });
  }
}

/** The controller's view of the switch daemon. */
export interface GuestMeasurement {
  dirtyRateBytesPerSec: number;
  ramBytes: number;
  nonZeroBytes: number;
  samples: number;
  nonZeroSamples: number;
  ms: number;
}

export class SwitchClient {
  constructor(readonly url: string, private readonly token: string) {}
  private call<T>(method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<T> {
    return callJson<T>(this.url, method, path, body, { timeoutMs, token: this.token });
  }
  macs(): Promise<{ mac: string; port: string; node: string; switch: string; lastSeenMs: number; ageMs: number }[]> {
    return this.call('GET', '/v1/macs');
  }
  switches(): Promise<SwitchState[]> {
    return this.call('GET', '/v1/switches');
  }
  apply(name: string, wanted: SwitchWanted): Promise<SwitchState> {
    return this.call('PUT', `/v1/switches/${encodeURIComponent(name)}`, wanted);
  }
  remove(name: string): Promise<void> {
    return this.call('DELETE', `/v1/switches/${encodeURIComponent(name)}`);
  }
  moves(mac: string, sinceMs: number): Promise<{ mac: string; toNode: string; fromNode?: string; atMs: number; etherType: number }[]> {
    return this.call('GET', `/v1/moves?mac=${encodeURIComponent(mac)}&since=${sinceMs}`);
  }
  ping(ip: string, mac: string, timeoutMs = 2000, sw = DEFAULT_SWITCH): Promise<{ answered: boolean; rttMs: number | null }> {
    return this.call('POST', '/v1/ping', { ip, mac, timeoutMs, switch: sw }, timeoutMs + 5000);
  }
  startProbe(id: string, ip: string, mac: string, intervalMs = 1, sw = DEFAULT_SWITCH): Promise<void> {
    return this.call('POST', `/v1/probes/${id}`, { ip, mac, intervalMs, switch: sw });
  }
  probe(id: string): Promise<ProbeResult> {
    return this.call('GET', `/v1/probes/${id}`);
  }
  stopProbe(id: string): Promise<ProbeResult> {
    return this.call('DELETE', `/v1/probes/${id}`);
  }
}

/**
 * Polls a VM's transfer on one agent until QEMU reports it completed
 * (an incoming migration loaded, a state saved or restored). `label` names
 * the transfer in errors: "<label> failed: …", "<label> timed out …".
 */
export async function waitTransferCompleted(
  agent: AgentClient,
  vm: string,
  clock: Clock,
  opts: { label: string; timeoutMs: number; stepMs: number; signal?: AbortSignal },
): Promise<void> {
  const deadline = clock.nowMs() + opts.timeoutMs;
  for (;;) {
    const p = await agent.migration(vm, opts.signal ? { signal: opts.signal } : undefined);
    if (p.status === 'completed') return;
    if (p.status === 'failed' || p.status === 'cancelled') {
      throw new FerryError(ErrorCode.MigrationFailed, `${opts.label} ${p.status}${p.error ? `: ${p.error}` : ''}`);
    }
    if (clock.nowMs() > deadline) throw errors.timeout(opts.label, opts.timeoutMs);
    await clock.sleep(opts.stepMs);
  }
}

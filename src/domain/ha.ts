/**
 * High availability: the rules that keep a VM from running twice while its
 * host fails. Pure: the controller's failover and the agent's watchdogs
 * both read their timing from here.
 *
 * Each host holds a lease (TTL `hostLeaseTtlS`). On etcd the agent renews
 * it in etcd itself (node/host-lease.ts), so a controller that is down or
 * changing hands fences nothing; on the single-machine SQLite store each
 * answered heartbeat renews it at the controller. The agent counts from the
 * moment it *sent* the renewal (or heartbeat) that succeeded, so its clock
 * runs ahead of the store's, which counts from the renewal:
 *
 *   t0 renewal sent ── renewed in the store ── … no answer …
 *   t0 + TTL − FENCE_GUARD   the agent and its watchdog kill every HA VM's QEMU
 *   renewal + TTL            the lease expires: the controller declares the host failed
 *   expiry + RESTART_MARGIN  the controller starts the host's HA VMs elsewhere
 *
 * so a failed host's HA VMs are dead at least FENCE_GUARD + RESTART_MARGIN
 * before any copy starts elsewhere. QEMU's lock on the shared disk is the
 * backstop: a second QEMU cannot open a disk the first still holds.
 */
import type { VmRecord } from './records.js';

/** The agent fences this long before its lease can expire at the controller. */
export const FENCE_GUARD_MS = 2_000;
/** The controller waits this long after a lease expired before it restarts anything. */
export const RESTART_MARGIN_MS = 1_000;
/** HA restarts that may fail in a row before the VM is held (quarantined). */
export const HA_MAX_FAILURES = 3;
/** Waits between restart attempts of one VM: 1 s, 2 s, 4 s, … at most 30 s. */
export function restartBackoffMs(failures: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, failures - 1));
}

/** Why a running VM is stopped when its QEMU ended without being asked (the reconciler's word; HA VMs start again). */
export const QEMU_EXITED = 'QEMU exited';

export const HA_PRIORITY = { min: 0, max: 1000, default: 100 } as const;

/**
 * The key whose holder leads the controllers (on etcd, see controller/core/leadership.ts): its create revision is
 * the leadership, which every agent call carries and a restarted agent reads back.
 */
export const LEADER_KEY = 'controller/leader';

/** Host leases' keys: `liveness/NODE`. */
export const LIVENESS_PREFIX = 'liveness/';

/** A host lease's key, on the lease: since when, and (renewed by the agent itself) the HA VMs it fences. */
export interface LivenessRecord {
  node: string;
  sinceMs: number;
  ha?: string[];
}

/** Until when an agent may run HA VMs after a heartbeat sent at `sentMs` was answered. */
export function fenceDeadline(sentMs: number, ttlMs: number): number {
  return sentMs + ttlMs - FENCE_GUARD_MS;
}

/** The order a failed host's HA VMs restart in: highest priority first, then by name. */
export function restartOrder<T extends Pick<VmRecord, 'name' | 'ha'>>(vms: T[]): T[] {
  return [...vms].sort((a, b) => (b.ha?.priority ?? 0) - (a.ha?.priority ?? 0) || a.name.localeCompare(b.name));
}

/** `host-1 (leads, leadership 88), host-2, host-3`: the controllers, the leader marked. */
export function describeControllers(controllers: { name: string; leads: boolean }[], leadership: number | undefined): string {
  return controllers.map((c) => (c.leads ? `${c.name} (leads${leadership !== undefined ? `, leadership ${leadership}` : ''})` : c.name)).join(', ');
}

/** The VM's HA status, one line: off, on (priority), held (why). */
export function describeHa(vm: Pick<VmRecord, 'ha' | 'haHeld'>): string {
  if (!vm.ha) return 'off';
  if (vm.haHeld) return `held: ${vm.haHeld.reason}`;
  return `on (priority ${vm.ha.priority})`;
}

/**
 * What an agent's watchdogs read: until when HA VMs may run here, and which
 * of this host's VMs are HA (by name: the watchdog finds each QEMU by its pid file).
 */
export interface FenceFile {
  validUntilMs: number;
  ha: string[];
}

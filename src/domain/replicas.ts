/**
 * Replica (R5) records: the primary's view of a replicated VM, the replica
 * side's copy with its recovery points, and the health rule.
 */

export interface RecoveryPoint {
  id: string;
  /** The point in time: when the sync's copy started on the primary. */
  atMs: number;
  bytes: number;
  mode: 'full' | 'incremental';
}

export interface IncomingReplica {
  vm: string;
  /** The primary: its cluster id, and its API and token for `replica reverse`. */
  source: { clusterId: string; url: string; token: string };
  spec: { memoryMiB: number; cpus: number; diskGiB: number; workload: string };
  interval: string;
  keep: number;
  disk: string;
  points: RecoveryPoint[];
  state: 'replicating' | 'failed-over' | 'reversed';
  createdAtMs: number;
  failedOverAtMs?: number;
}

export type IncomingView = Omit<IncomingReplica, 'source'> & { source: { clusterId: string; url: string } };

export const REPLICA_INTERVALS: Record<string, number> = { '30s': 30_000, '5m': 300_000, '15m': 900_000 };
export const REPLICA_KEEP = { min: 1, max: 24 };

export type ReplicaHealth = 'normal' | 'warning' | 'critical';

export interface ReplicaRecord {
  vm: string;
  target: { url: string; clusterId: string };
  interval: string;
  intervalMs: number;
  keep: number;
  state: 'replicating' | 'failed-over';
  createdAtMs: number;
  /** The point in time of the newest recovery point on the replica side. */
  lastSyncAtMs?: number;
  lastSyncMs?: number;
  lastSyncBytes?: number;
  lastSyncMode?: 'full' | 'incremental';
  lastAttemptAtMs?: number;
  lastError?: string;
  /** The replica side did not answer at the last attempt. */
  unreachable?: boolean;
  bytesSent: number;
  syncs: number;
  /** Why the last due sync waited (migration, backup, VM not running). */
  deferred?: string;
}

export interface ReplicaStatus extends ReplicaRecord {
  lagMs: number | null;
  health: ReplicaHealth;
  syncing: boolean;
}

export function replicaHealth(r: ReplicaRecord, nowMs: number): ReplicaHealth {
  if (r.unreachable) return 'critical';
  const lag = r.lastSyncAtMs === undefined ? Infinity : nowMs - r.lastSyncAtMs;
  if (lag > 2 * r.intervalMs || r.lastError) return 'warning';
  return 'normal';
}

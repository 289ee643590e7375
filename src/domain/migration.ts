/**
 * A live migration as a saved state machine. Every phase change is written to
 * the store (with its time) before the phase's effects run, so a restarted
 * controller knows where an unfinished migration stood.
 *
 *   pending ─► connect ─► config ─► create ─► memory ─► disks ─► resume ─► network ─► completed
 *      │          │          │         │         │  ╲
 *      └──────────┴──────────┴─────────┴─────────┴───► rolling-back ─► failed | cancelled
 *
 * Ownership of the VM moves to the target between `resume` and `network`,
 * only once the source QEMU reported completion and the target QEMU runs.
 * Before that, rollback = cancel the transfer, make sure the source runs,
 * destroy the target. After it, nothing rolls back: the VM lives on the target.
 */
import type { TransferProgress, TransferTuning } from './transfer.js';
import type { PhasedRecord } from './phases.js';
import type { MigrationPolicy } from './policy.js';
import type { Prediction } from './predict.js';

/** R3's seven steps, in order. */
export const STEPS = ['connect', 'config', 'create', 'memory', 'disks', 'resume', 'network'] as const;
export type StepName = (typeof STEPS)[number];

export type MigrationPhase = 'queued' | 'pending' | StepName | 'rolling-back' | 'completed' | 'failed' | 'cancelled';
export type MigrationStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
/** Who asked: a drain goes before a user, a user before the balancer (R11, R12, R14). */
export type MigrationPriority = 'drain' | 'manual' | 'rebalance';
export const PRIORITY_RANK: Record<MigrationPriority, number> = { drain: 0, manual: 1, rebalance: 2 };
/** live: pre-copy while the guest runs; quick (R7): pause, save to the shared volume, restore. */
export type MigrationMode = 'live' | 'quick';

export interface StepRecord {
  name: StepName;
  startedAtMs: number;
  endedAtMs?: number;
  ms?: number;
}

export interface MigrationProgress extends TransferProgress {
  /** Estimated time left in the memory step, from remaining bytes and throughput. */
  estimatedRemainingMs?: number;
  sampledAtMs: number;
}

export interface MigrationRecord extends PhasedRecord {
  id: string;
  vm: string;
  mode: MigrationMode;
  from: string;
  to: string;
  phase: MigrationPhase;
  status: MigrationStatus;
  requestedAtMs: number;
  priority: MigrationPriority;
  /** When it left the queue and took its slots. */
  startedAtMs?: number;
  finishedAtMs?: number;
  steps: StepRecord[];
  /** The transfer tuning this migration runs with. */
  tuning: TransferTuning;
  /** The effective policy (cluster default, VM, migration merged). */
  policy?: MigrationPolicy;
  /** The pre-flight prediction this migration was planned with (live). */
  predicted?: Prediction;
  /** When post-copy started, if it did. */
  postcopyStartedAtMs?: number;
  /** Why the policy escalated (post-copy or abort), if it did. */
  escalation?: string;
  maxThrottlePercent?: number;
  /** QEMU's own figure: from migrate to completion. */
  transferMs?: number;
  progress?: MigrationProgress;
  /** Shared-nothing: the disk is copied along (QEMU mirror into the target's NBD export). */
  storage?: {
    sourceDisk: string;
    targetDisk: string;
    sizeBytes: number;
    nbd?: { address: string; port: number; export: string };
    /** Bytes the mirror copied in all, and how long the first full copy took. */
    copiedBytes?: number;
    syncedAfterMs?: number;
  };
  /** Where the target QEMU listens for the stream (live). */
  target?: { address: string; port: number };
  /** The cluster network the stream crosses (live), and the better ones that could not be used. */
  network?: MigrationNetwork;
  /** The saved state on the shared volume (quick); removed when the migration ends. */
  stateFile?: string;
  /** Quick: when the guest was paused, and for how long it did not run. */
  pausedAtMs?: number;
  pausedMs?: number;
  /** Set when the VM's owner changed to `to`. */
  ownerMovedAtMs?: number;
  cancelRequested?: boolean;
  // report figures
  /** Time spent in the queue waiting for slots. */
  queuedMs?: number;
  totalMs?: number;
  downtimeMs?: number;
  guestBlackoutMs?: number;
  transferredBytes?: number;
  rounds?: number;
  error?: string;
  /** Problems during cleanup, recorded beside the cause, never instead of it. */
  cleanupErrors?: string[];
  /** Non-fatal trouble after the handover (e.g. the MAC move was late). */
  warnings?: string[];
}

export interface MigrationNetwork {
  name: string;
  sourceAddress: string;
  targetAddress: string;
  /** Better-ranked networks passed over, with the reason (e.g. unreachable). */
  skipped: { network: string; reason: string }[];
}

export interface MigrationReport {
  id: string;
  /** Shared-nothing: where the disk was copied, and how much the mirror sent. */
  storage?: { from: string; to: string; copiedBytes: number; syncedAfterMs: number | null };
  vm: string;
  mode: MigrationMode;
  from: string;
  to: string;
  status: MigrationStatus;
  priority: MigrationPriority;
  queuedMs: number;
  totalMs: number;
  downtimeMs: number | null;
  guestBlackoutMs: number | null;
  transferredBytes: number;
  rounds: number;
  steps: { name: StepName; ms: number }[];
  /** Quick migrations: how long the guest was not running. */
  pausedMs?: number;
  /** Live migrations: the network the memory crossed; quick ones move it through the shared volume. */
  network?: MigrationNetwork;
  /** QEMU's own time for the transfer (migrate to completion). */
  transferMs?: number;
  /** The pre-flight prediction, beside the actual figures above. */
  predicted?: { strategy: string; reason: string; totalMs: number; transferMs: number; rounds: number; downtimeMs: number; bytes: number };
  /** Live figures at the end: the highest auto-converge throttle, the last dirty rate QEMU saw. */
  maxThrottlePercent?: number;
  dirtyRateBytesPerSec?: number;
  /** When post-copy started, counted from the start of the transfer; absent if it did not. */
  postcopyAfterMs?: number;
  /** Why the policy switched to post-copy or aborted. */
  escalation?: string;
  policy?: MigrationPolicy;
  error?: string;
  warnings?: string[];
  cleanupErrors?: string[];
}

export function isFinal(status: MigrationStatus): boolean {
  return status !== 'running' && status !== 'queued';
}

/**
 * Which queued migrations may start now: in priority order, first come first
 * served within a priority, each only when both its nodes have a free slot.
 * A migration that cannot start does not block later ones on other nodes.
 */
export function startable(all: MigrationRecord[], slotsPerNode: number): MigrationRecord[] {
  const busy = new Map<string, number>();
  const take = (n: string) => busy.set(n, (busy.get(n) ?? 0) + 1);
  for (const m of all) {
    if (m.status === 'running') {
      take(m.from);
      take(m.to);
    }
  }
  const out: MigrationRecord[] = [];
  for (const m of queueOrder(all)) {
    if ((busy.get(m.from) ?? 0) < slotsPerNode && (busy.get(m.to) ?? 0) < slotsPerNode) {
      take(m.from);
      take(m.to);
      out.push(m);
    }
  }
  return out;
}

/** Queued migrations in the order they will be considered. */
export function queueOrder(all: MigrationRecord[]): MigrationRecord[] {
  return all
    .filter((m) => m.status === 'queued')
    .sort((a, b) => PRIORITY_RANK[a.priority] - PRIORITY_RANK[b.priority] || a.requestedAtMs - b.requestedAtMs || a.id.localeCompare(b.id));
}

export function toReport(r: MigrationRecord): MigrationReport {
  const report: MigrationReport = {
    id: r.id,
    vm: r.vm,
    mode: r.mode,
    from: r.from,
    to: r.to,
    status: r.status,
    priority: r.priority,
    queuedMs: r.queuedMs ?? 0,
    totalMs: r.totalMs ?? 0,
    downtimeMs: r.downtimeMs ?? null,
    guestBlackoutMs: r.guestBlackoutMs ?? null,
    // A move that failed or was cancelled reports what it had sent by its last progress sample.
    transferredBytes: r.transferredBytes ?? r.progress?.transferredBytes ?? 0,
    rounds: r.rounds ?? r.progress?.rounds ?? 0,
    steps: r.steps.filter((s) => s.ms !== undefined).map((s) => ({ name: s.name, ms: s.ms! })),
  };
  if (r.mode === 'quick' && r.pausedMs !== undefined) report.pausedMs = r.pausedMs;
  if (r.network) report.network = r.network;
  if (r.transferMs !== undefined) report.transferMs = r.transferMs;
  if (r.predicted) {
    const { strategy, reason, totalMs, transferMs, rounds, downtimeMs, bytes } = r.predicted;
    report.predicted = { strategy, reason, totalMs, transferMs, rounds, downtimeMs, bytes };
  }
  if (r.maxThrottlePercent !== undefined) report.maxThrottlePercent = r.maxThrottlePercent;
  if (r.progress) report.dirtyRateBytesPerSec = r.progress.dirtyRateBytesPerSec;
  const memoryStep = r.steps.find((s) => s.name === 'memory');
  if (r.postcopyStartedAtMs !== undefined && memoryStep) report.postcopyAfterMs = r.postcopyStartedAtMs - memoryStep.startedAtMs;
  if (r.escalation) report.escalation = r.escalation;
  if (r.storage)
    report.storage = {
      from: r.storage.sourceDisk,
      to: r.storage.targetDisk,
      copiedBytes: r.storage.copiedBytes ?? 0,
      syncedAfterMs: r.storage.syncedAfterMs ?? null,
    };
  if (r.policy) report.policy = r.policy;
  if (r.error) report.error = r.error;
  if (r.warnings?.length) report.warnings = r.warnings;
  if (r.cleanupErrors?.length) report.cleanupErrors = r.cleanupErrors;
  return report;
}

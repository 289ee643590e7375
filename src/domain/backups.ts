/**
 * Backups (R13) and backup schedules as records, and the pure rules of
 * schedules: durations, local-time windows (which may wrap past midnight)
 * and when a scheduled backup is due.
 */
import { errors } from './errors.js';
import type { FreezeResult } from './block-jobs.js';
import type { PhasedRecord } from './phases.js';

export interface BackupRecord extends PhasedRecord {
  id: string;
  vm: string;
  mode: 'full' | 'incremental';
  /** The backup this one's file is backed by (incremental). */
  parent?: string;
  file: string;
  status: 'waiting' | 'running' | 'completed' | 'failed';
  requestedAtMs: number;
  startedAtMs?: number;
  finishedAtMs?: number;
  /** Time spent waiting for migrations of the VM: before the freeze, the copy paused, and before the merge. */
  waitedMs?: number;
  /** Of waitedMs: the copy paused while a migration of the VM ran. */
  copyPausedMs?: number;
  /** Of waitedMs: before merging the overlay back (a migration started during the backup). */
  mergeWaitedMs?: number;
  /** The node whose QEMU merged the overlay back; movedTo when the VM migrated during the backup. */
  mergedOn?: string;
  movedTo?: string;
  /** The backup stands but its overlay could not be merged back (the VM runs on overlay + image). */
  mergeError?: string;
  /** Bytes QEMU copied. */
  bytes?: number;
  /** Taken by a backup schedule (only these are pruned). */
  scheduled?: boolean;
  /** A pruned base was merged into it: it no longer needs that base. */
  mergedFrom?: string[];
  /** The disk's virtual size. */
  sizeBytes: number;
  /** The guest's file systems were frozen for the point in time (or the VM was stopped); false: crash-consistent. */
  quiesced?: boolean;
  quiesceNote?: string;
  node?: string;
  verified?: boolean;
  error?: string;
  /** Cap on the copy, MiB/s. */
  bandwidthMiBps?: number;
  /** The frozen image and its overlay, once frozen (a running VM). */
  frozen?: FreezeResult;
  /** The freeze: asked for at, and done at (controller clock); the point in time lies between. */
  freezeStartedAtMs?: number;
  frozenAtMs?: number;
}

export interface BackupWindow {
  /** Minutes after local midnight. */
  startMin: number;
  endMin: number;
  /** As given, "HH:MM-HH:MM". */
  text: string;
}

export interface BackupSchedule {
  vm: string;
  everyMs: number;
  /** As given, "30s", "15m", "1h", "1d". */
  every: string;
  keep: number;
  window?: BackupWindow;
  createdAtMs: number;
  lastRunMs?: number;
  lastBackup?: string;
  lastError?: string;
  /** Times a due backup waited because the clock was outside the window. */
  skippedOutsideWindow?: number;
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
export const KEEP_RANGE = { min: 1, max: 1000 };

/** "30s" | "5m" | "2h" | "1d" → milliseconds (1 s to 366 d). */
export function parseDuration(text: unknown, field = 'every'): number {
  const m = typeof text === 'string' ? /^(\d{1,6})(s|m|h|d)$/.exec(text) : null;
  const ms = m ? Number(m[1]) * UNITS[m[2]!]! : NaN;
  if (!m || ms < 1000 || ms > 366 * UNITS.d!)
    throw errors.invalid(field, `--${field} must be a duration like 30s, 15m, 6h or 1d (1s to 366d), got '${String(text)}'`);
  return ms;
}

/** "HH:MM-HH:MM" → a window; start == end is refused (it would be empty or everything). */
export function parseWindow(text: unknown): BackupWindow {
  const m = typeof text === 'string' ? /^(\d{2}):(\d{2})-(\d{2}):(\d{2})$/.exec(text) : null;
  const mins = m ? [Number(m[1]) * 60 + Number(m[2]), Number(m[3]) * 60 + Number(m[4])] : [];
  const ok = m && Number(m[1]) < 24 && Number(m[2]) < 60 && Number(m[3]) < 24 && Number(m[4]) < 60 && mins[0] !== mins[1];
  if (!ok) throw errors.invalid('window', `--window must be HH:MM-HH:MM with two different times (e.g. 22:00-04:00), got '${String(text)}'`);
  return { startMin: mins[0]!, endMin: mins[1]!, text: text as string };
}

/** Whether a local time (minutes after midnight) is inside the window; the end is exclusive. */
export function inWindow(w: BackupWindow | undefined, minuteOfDay: number): boolean {
  if (!w) return true;
  return w.startMin < w.endMin ? minuteOfDay >= w.startMin && minuteOfDay < w.endMin : minuteOfDay >= w.startMin || minuteOfDay < w.endMin;
}

/** Whether a scheduled backup is due at `nowMs` (window checked separately). */
export function isDue(s: BackupSchedule, nowMs: number): boolean {
  return s.lastRunMs === undefined || nowMs - s.lastRunMs >= s.everyMs;
}

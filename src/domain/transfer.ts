/**
 * What the source QEMU says about a running transfer, in Ferry's words.
 * (The QEMU driver maps query-migrate onto this.)
 */
export type TransferStatus =
  | 'none'
  | 'setup'
  | 'active'
  | 'postcopy'
  /** Paused before the device state is sent (pause-before-switchover): waits for migrate-continue. */
  | 'pre-switchover'
  | 'device'
  | 'completed'
  | 'failed'
  | 'cancelling'
  | 'cancelled';

export interface TransferProgress {
  status: TransferStatus;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  /** Bytes per second of memory being dirtied, as QEMU measures it per round. */
  dirtyRateBytesPerSec: number;
  throughputBytesPerSec: number;
  /** Completed dirty-bitmap syncs: round 1 is the first full pass. */
  rounds: number;
  downtimeMs?: number;
  expectedDowntimeMs?: number;
  totalTimeMs?: number;
  setupTimeMs?: number;
  throttlePercent: number;
  error?: string;
}

export function isTransferFinal(status: TransferStatus): boolean {
  return status === 'completed' || status === 'failed' || status === 'cancelled';
}

/** Tuning QEMU applies to one migration; what each field does is in src/qemu/migration-params.ts. */
export interface TransferTuning {
  /** Bytes per second, or 0 for no cap. */
  maxBandwidthBytesPerSec: number;
  maxDowntimeMs: number;
  autoConverge: boolean;
  multifdChannels: number;
  xbzrle: boolean;
  postcopy: boolean;
  /** Auto-converge: the first throttle and each step after it (QEMU: 20 and 10). */
  throttleInitialPercent?: number;
  throttleIncrementPercent?: number;
  /** Pause before the switchover and wait for `continueMigration` (a disk copy must end first). */
  pauseBeforeSwitchover?: boolean;
}

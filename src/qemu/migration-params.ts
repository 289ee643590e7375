/**
 * Ferry's transfer tuning → QEMU 7.2 migration capabilities and parameters,
 * and query-migrate → Ferry's TransferProgress.
 */
import type { TransferProgress, TransferStatus, TransferTuning } from '../domain/transfer.js';
import type { QemuMigrationInfo } from './qmp/types.js';

export function migrationCapabilities(t: TransferTuning): { capability: string; state: boolean }[] {
  return [
    { capability: 'auto-converge', state: t.autoConverge },
    { capability: 'multifd', state: t.multifdChannels > 1 },
    { capability: 'xbzrle', state: t.xbzrle },
    { capability: 'postcopy-ram', state: t.postcopy },
    // Shared-nothing: the source pauses before sending the device state, so the disk copy can end first.
    { capability: 'pause-before-switchover', state: t.pauseBeforeSwitchover === true },
    // Keep the source's blocks consistent: QEMU inactivates the source's
    // images at switchover and the target activates them, so the shared
    // qcow2 is never written by two QEMUs.
    { capability: 'events', state: true },
  ];
}

/** Capabilities both ends must agree on (the target needs them before migrate-incoming). */
export function incomingCapabilities(t: TransferTuning): { capability: string; state: boolean }[] {
  return migrationCapabilities(t).filter((c) => ['multifd', 'postcopy-ram', 'xbzrle'].includes(c.capability));
}

export function migrationParameters(t: TransferTuning): Record<string, unknown> {
  const p: Record<string, unknown> = {
    // QEMU treats 0 as "no limit" only for max-bandwidth in newer versions; in
    // 7.2 a huge value is the way to say "the link is the limit".
    'max-bandwidth': t.maxBandwidthBytesPerSec > 0 ? t.maxBandwidthBytesPerSec : 0x7fffffffffff,
    'downtime-limit': t.maxDowntimeMs,
  };
  if (t.multifdChannels > 1) p['multifd-channels'] = t.multifdChannels;
  if (t.throttleInitialPercent !== undefined) p['cpu-throttle-initial'] = t.throttleInitialPercent;
  if (t.throttleIncrementPercent !== undefined) p['cpu-throttle-increment'] = t.throttleIncrementPercent;
  return p;
}

/**
 * The target's parameters. QEMU announces the VM's MAC (RARP, and asks a
 * virtio guest to send its own) once it runs on the target, after
 * `announce-initial` ms: 50 by default, all of it guest-visible blackout
 * while the switch still sends to the old port. Ferry announces at once.
 */
export function incomingParameters(t: TransferTuning): Record<string, unknown> {
  const p: Record<string, unknown> = { 'announce-initial': 1, 'announce-step': 50, 'announce-rounds': 5, 'announce-max': 100 };
  if (t.multifdChannels > 1) p['multifd-channels'] = t.multifdChannels;
  return p;
}

const STATUS: Record<string, TransferStatus> = {
  none: 'none',
  setup: 'setup',
  active: 'active',
  'pre-switchover': 'pre-switchover',
  device: 'device',
  'postcopy-active': 'postcopy',
  'postcopy-paused': 'postcopy',
  'postcopy-recover': 'postcopy',
  completed: 'completed',
  failed: 'failed',
  cancelling: 'cancelling',
  cancelled: 'cancelled',
  'wait-unplug': 'setup',
  colo: 'active',
};

export function toTransferProgress(info: QemuMigrationInfo): TransferProgress {
  const ram = info.ram;
  const pageSize = ram?.['page-size'] ?? 4096;
  const progress: TransferProgress = {
    status: STATUS[info.status ?? 'none'] ?? 'failed',
    transferredBytes: ram?.transferred ?? 0,
    remainingBytes: ram?.remaining ?? 0,
    totalBytes: ram?.total ?? 0,
    dirtyRateBytesPerSec: (ram?.['dirty-pages-rate'] ?? 0) * pageSize,
    throughputBytesPerSec: ((ram?.mbps ?? 0) * 1e6) / 8,
    rounds: ram?.['dirty-sync-count'] ?? 0,
    throttlePercent: info['cpu-throttle-percentage'] ?? 0,
  };
  if (info.downtime !== undefined) progress.downtimeMs = info.downtime;
  if (info['expected-downtime'] !== undefined) progress.expectedDowntimeMs = info['expected-downtime'];
  if (info['total-time'] !== undefined) progress.totalTimeMs = info['total-time'];
  if (info['setup-time'] !== undefined) progress.setupTimeMs = info['setup-time'];
  if (info['error-desc']) progress.error = info['error-desc'];
  return progress;
}

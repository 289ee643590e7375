/**
 * The transfer tuning live migrations use until migration policies (issue 6)
 * choose per migration. Unlike QEMU 7.2's defaults (128 MiB/s cap, 300 ms
 * downtime limit, no convergence help), the link is the limit, the switchover
 * waits for a small final set, and auto-converge throttles a guest that dirties
 * memory faster than the link carries it.
 */
import type { TransferTuning } from './transfer.js';

export const DEFAULT_TUNING: TransferTuning = {
  maxBandwidthBytesPerSec: 0,
  maxDowntimeMs: 100,
  autoConverge: true,
  multifdChannels: 1,
  xbzrle: false,
  postcopy: false,
};

/** QEMU 7.2's own defaults, for side-by-side benchmarks. */
export const QEMU_DEFAULT_TUNING: TransferTuning = {
  maxBandwidthBytesPerSec: 128 * 1024 * 1024,
  maxDowntimeMs: 300,
  autoConverge: false,
  multifdChannels: 1,
  xbzrle: false,
  postcopy: false,
};

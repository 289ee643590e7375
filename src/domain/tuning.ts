/**
 * The transfer tuning live migrations use until migration policies choose per
 * migration. Unlike QEMU 7.2's defaults (128 MiB/s cap, no convergence help),
 * the link is the limit and auto-converge throttles a guest that dirties
 * memory faster than the link carries it.
 *
 * The downtime ceiling is 100 ms. QEMU 7.2 (Debian 12's own) could not be
 * trusted with it: under TCG it lost guest writes during multi-second
 * migrations of guests receiving traffic (guest panics on the target in 4 of
 * 5 plain two-QEMU runs). QEMU 10 from bookworm-backports, which setup
 * installs, ran the same case 0 of 5 plain and 0 of 14 in Ferry
 * (docs/known-issues.md).
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

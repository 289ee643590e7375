/**
 * The transfer tuning live migrations use until migration policies choose per
 * migration. Unlike QEMU 7.2's defaults (128 MiB/s cap, no convergence help),
 * the link is the limit and auto-converge throttles a guest that dirties
 * memory faster than the link carries it.
 *
 * The downtime limit stays at QEMU's 300 ms: with a 100 ms limit, QEMU 7.2
 * under TCG corrupts a guest that receives network traffic during a
 * multi-second migration (guest panics on the target 4/5 runs with a plain
 * two-QEMU setup, slirp or stream netdev alike; 0/11 at 300 ms). See
 * docs/known-issues.md and scripts/repro-tcg-rx-migration.sh. The limit is a
 * ceiling: an idle guest's actual downtime stays around 10 ms.
 */
import type { TransferTuning } from './transfer.js';

export const DEFAULT_TUNING: TransferTuning = {
  maxBandwidthBytesPerSec: 0,
  maxDowntimeMs: 300,
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

/**
 * Migration policy: plain data saying how a live migration may use the link
 * and what happens when pre-copy does not converge. A cluster default,
 * overridable per VM and per migration; the effective policy is the three
 * merged field by field (migration over VM over cluster).
 *
 * Escalation (pure, `escalate`): pre-copy runs with QEMU's auto-converge
 * throttling when the policy lists it (QEMU throttles the guest's vCPUs once
 * it sees rounds not shrinking). When there is no progress for
 * `progressTimeoutS`, or the migration has run longer than
 * `completionTimeoutSPerGiB` per GiB of guest RAM, the next step is
 * post-copy if the policy allows it, else abort: the transfer is cancelled
 * and the VM keeps running on its source.
 */
import type { TransferTuning } from './transfer.js';

export type EscalationStep = 'auto-converge' | 'postcopy';

export interface MigrationPolicy {
  /** Bandwidth cap in MiB/s; null: the link is the limit. */
  bandwidthMiBps: number | null;
  /** The downtime QEMU aims for at switchover. */
  downtimeMs: number;
  /** Give up (or switch to post-copy) after this many seconds per GiB of guest RAM; 0: never. */
  completionTimeoutSPerGiB: number;
  /** Give up (or switch to post-copy) when the remaining bytes have not reached a new low for this long; 0: never. */
  progressTimeoutS: number;
  /** What to try when pre-copy does not converge, in order; after the last, abort. */
  escalation: EscalationStep[];
  multifdChannels: number;
  xbzrle: boolean;
}

/**
 * Ferry's default, chosen by the benchmarks (docs/BENCHMARKS.md): the link
 * is the limit (QEMU's 128 MiB/s cap only slows faster links), a 30 ms
 * downtime target (at 100 ms QEMU stopped idle guests with ~5 MB still to
 * send: 45–52 ms of downtime instead of 2–3 ms, and 121 ms instead of
 * 58–73 ms of blackout at 75% dirty rate, for the same total time and
 * bytes), auto-converge with a starting throttle from the prediction, and
 * abort rather than post-copy (a post-copy migration that loses its link
 * cannot leave the VM running on its source).
 */
export const FERRY_POLICY: MigrationPolicy = {
  bandwidthMiBps: null,
  downtimeMs: 30,
  completionTimeoutSPerGiB: 150,
  progressTimeoutS: 30,
  escalation: ['auto-converge'],
  multifdChannels: 1,
  xbzrle: false,
};

/**
 * What plain QEMU does when nobody sets anything: 128 MiB/s, 300 ms, no
 * convergence help. The timeout is only the benchmark's cut-off (QEMU itself
 * would try forever).
 */
export const QEMU_DEFAULTS_POLICY: MigrationPolicy = {
  bandwidthMiBps: 128,
  downtimeMs: 300,
  completionTimeoutSPerGiB: 150,
  progressTimeoutS: 0,
  escalation: [],
  multifdChannels: 1,
  xbzrle: false,
};

export const NAMED_POLICIES: Record<string, MigrationPolicy> = { ferry: FERRY_POLICY, 'qemu-defaults': QEMU_DEFAULTS_POLICY };

/** A named policy, or undefined (a prototype key such as 'constructor' is no policy name). */
export function namedPolicy(name: string): MigrationPolicy | undefined {
  return Object.hasOwn(NAMED_POLICIES, name) ? NAMED_POLICIES[name] : undefined;
}

/** The fields a policy has. */
export const POLICY_FIELDS = Object.keys(FERRY_POLICY) as (keyof MigrationPolicy)[];

/** Cluster default, then the VM's, then the migration's: later wins field by field. */
export function effectivePolicy(...layers: (Partial<MigrationPolicy> | undefined)[]): MigrationPolicy {
  return Object.assign({}, FERRY_POLICY, ...layers.filter(Boolean)) as MigrationPolicy;
}

/** What QEMU is told at the start of a transfer. Post-copy must be enabled up front to be possible later. */
export function tuningFor(p: MigrationPolicy): TransferTuning {
  return {
    maxBandwidthBytesPerSec: p.bandwidthMiBps === null ? 0 : p.bandwidthMiBps * 1048576,
    maxDowntimeMs: p.downtimeMs,
    autoConverge: p.escalation.includes('auto-converge'),
    multifdChannels: p.multifdChannels,
    xbzrle: p.xbzrle,
    postcopy: p.escalation.includes('postcopy'),
  };
}

export interface TransferWatch {
  elapsedMs: number;
  guestRamBytes: number;
  /** Remaining bytes now. */
  remainingBytes: number;
  /** The lowest remaining seen so far and when (ms since start). */
  lowestRemaining: number;
  lowestAtMs: number;
  rounds: number;
  postcopyStarted: boolean;
  /** From the prediction: switch to post-copy once this many rounds are done (when it is allowed). */
  postcopyAfterRound?: number;
}

export type EscalationDecision = { action: 'continue' } | { action: 'postcopy'; reason: string } | { action: 'abort'; reason: string };

/** Decides, from one look at the transfer, whether to go on, switch to post-copy or abort. Pure. */
export function escalate(p: MigrationPolicy, w: TransferWatch): EscalationDecision {
  if (w.postcopyStarted) return { action: 'continue' }; // post-copy always finishes: the guest runs on the target
  const postcopy = p.escalation.includes('postcopy');
  if (postcopy && w.postcopyAfterRound !== undefined && w.rounds >= w.postcopyAfterRound) {
    return { action: 'postcopy', reason: `the prediction said pre-copy would not converge: post-copy after round ${w.postcopyAfterRound}` };
  }
  const gib = Math.max(w.guestRamBytes / 1073741824, 1 / 16);
  const limitMs = p.completionTimeoutSPerGiB * gib * 1000;
  let why: string | undefined;
  if (p.completionTimeoutSPerGiB > 0 && w.elapsedMs > limitMs) {
    why = `not complete after ${Math.round(w.elapsedMs / 1000)} s (limit ${p.completionTimeoutSPerGiB} s per GiB: ${Math.round(limitMs / 1000)} s)`;
  } else if (p.progressTimeoutS > 0 && w.elapsedMs - w.lowestAtMs > p.progressTimeoutS * 1000) {
    why = `no progress for ${p.progressTimeoutS} s (remaining stuck above ${Math.round(w.lowestRemaining / 1048576)} MiB)`;
  }
  if (!why) return { action: 'continue' };
  return postcopy ? { action: 'postcopy', reason: why } : { action: 'abort', reason: `pre-copy did not converge: ${why}` };
}

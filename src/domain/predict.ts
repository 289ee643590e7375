/**
 * Pre-flight prediction from the pre-copy model (pure). With R the rate the
 * stream gets (the measured link, or the policy's cap if lower), D the
 * guest's dirty rate and V0 the guest's non-zero memory, round 1 sends V0 and
 * round i+1 sends what was dirtied while round i ran, D·(Vi/R), never more
 * than the memory the guest has written. QEMU switches over once a round's
 * bytes fit the downtime target at R. Auto-converge is modelled as QEMU does
 * it: once a round dirties more than half of what the round before sent,
 * twice in a row, the guest's vCPUs are throttled, then more each round, up
 * to 99%. QEMU starts at 20% and adds 10; Ferry starts where the measured
 * dirty rate says the guest must be (dirtying at most 40% of the link) and
 * adds 20, which converges in fewer rounds and sends fewer bytes.
 *
 * The strategy follows: plain pre-copy when it converges, auto-converge when
 * it needs the throttle, post-copy after the first round when neither
 * finishes within the policy's time and post-copy is allowed, and otherwise
 * an honest "will probably abort".
 */
import type { MigrationPolicy } from './policy.js';

export interface PredictionInput {
  ramBytes: number;
  /** Guest memory that is not zero: what the first round really sends. */
  nonZeroBytes: number;
  dirtyRateBytesPerSec: number;
  linkBytesPerSec: number;
  /** What measuring took (it happens before the transfer). */
  measureMs: number;
}

export type Strategy = 'pre-copy' | 'pre-copy + auto-converge' | 'post-copy after round 1' | 'pre-copy (expected to abort)';

export interface Prediction extends Simulation {
  strategy: Strategy;
  reason: string;
  /** The whole migration: measuring, orchestration and the transfer. */
  totalMs: number;
  /** Switch to post-copy once QEMU's round counter reaches this (post-copy strategy only). */
  postcopyAfterRound?: number;
  /** Auto-converge's first throttle and step, for QEMU (auto-converge strategy only). */
  throttleInitialPercent?: number;
  throttleIncrementPercent?: number;
  input: PredictionInput;
}

/** Everything around the transfer (connect, create the target, switchover, network): measured at about 150 ms here. */
export const ORCHESTRATION_MS = 150;
const MAX_ROUNDS = 200;

/** What the model says QEMU will do: the transfer (first byte to switchover), its rounds, downtime and bytes. */
export interface Simulation {
  transferMs: number;
  rounds: number;
  downtimeMs: number;
  bytes: number;
  converges: boolean;
  /** The throttle the guest ends up at (auto-converge). */
  throttlePercent: number;
}

/** The throttle at which the guest dirties at most 40% of what the link carries. */
export function throttleFor(dirtyRate: number, rate: number): number {
  return Math.min(90, Math.max(20, Math.ceil((1 - (0.4 * rate) / Math.max(dirtyRate, 1)) * 100)));
}

const THROTTLE_STEP = 20;

function simulate(inp: PredictionInput, rate: number, downtimeMs: number, autoConverge: boolean, limitMs: number, throttle0 = 20, step = 10): Simulation {
  const fit = (rate * downtimeMs) / 1000;
  let send = inp.nonZeroBytes;
  let t = 0;
  let bytes = 0;
  let throttle = 0;
  let slowRounds = 0;
  let prev = Infinity;
  for (let round = 1; round <= MAX_ROUNDS; round++) {
    const dt = (send / rate) * 1000;
    t += dt;
    bytes += send;
    const dirtied = Math.min((inp.dirtyRateBytesPerSec * (1 - throttle / 100) * dt) / 1000, inp.nonZeroBytes);
    if (dirtied <= fit) {
      const down = (dirtied / rate) * 1000;
      return { transferMs: t + down, rounds: round + 1, downtimeMs: down, bytes: bytes + dirtied, converges: true, throttlePercent: throttle };
    }
    if (autoConverge) {
      slowRounds = dirtied > send / 2 ? slowRounds + 1 : 0;
      if (slowRounds >= 2) throttle = throttle === 0 ? throttle0 : Math.min(99, throttle + step);
    }
    if (t > limitMs || (dirtied >= prev && (!autoConverge || throttle >= 99))) {
      return { transferMs: t, rounds: round, downtimeMs: 0, bytes, converges: false, throttlePercent: throttle };
    }
    prev = dirtied;
    send = dirtied;
  }
  return { transferMs: t, rounds: MAX_ROUNDS, downtimeMs: 0, bytes, converges: false, throttlePercent: throttle };
}

export function predict(inp: PredictionInput, policy: MigrationPolicy): Prediction {
  const cap = policy.bandwidthMiBps === null ? Infinity : policy.bandwidthMiBps * 1048576;
  const rate = Math.max(1, Math.min(inp.linkBytesPerSec, cap));
  const gib = Math.max(inp.ramBytes / 1073741824, 1 / 16);
  const limitMs = policy.completionTimeoutSPerGiB > 0 ? policy.completionTimeoutSPerGiB * gib * 1000 : Infinity;
  const auto = policy.escalation.includes('auto-converge');
  const rateText = `${Math.round(rate / 1048576)} MiB/s${rate < inp.linkBytesPerSec ? ' (policy cap)' : ''}`;
  const ratio = inp.dirtyRateBytesPerSec / rate;
  const base = { input: inp };
  const wrap = (s: Simulation, strategy: Strategy, reason: string, extra: Partial<Prediction> = {}): Prediction => ({
    ...base,
    ...s,
    strategy,
    reason,
    totalMs: Math.round(inp.measureMs + ORCHESTRATION_MS + s.transferMs),
    transferMs: Math.round(s.transferMs),
    downtimeMs: Math.round(s.downtimeMs),
    bytes: Math.round(s.bytes),
    ...extra,
  });
  // With auto-converge in the policy QEMU throttles whenever its condition holds, so the model does too.
  const t0 = throttleFor(inp.dirtyRateBytesPerSec, rate);
  const throttle = auto ? { throttleInitialPercent: t0, throttleIncrementPercent: THROTTLE_STEP } : {};
  const plain = simulate(inp, rate, policy.downtimeMs, auto, limitMs, t0, THROTTLE_STEP);
  if (plain.converges && plain.transferMs <= limitMs) {
    if (plain.throttlePercent === 0) {
      return wrap(plain, 'pre-copy', `dirty rate is ${Math.round(ratio * 100)}% of ${rateText}: pre-copy converges in ${plain.rounds} rounds`, throttle);
    }
    return wrap(
      plain,
      'pre-copy + auto-converge',
      `dirty rate is ${Math.round(ratio * 100)}% of ${rateText}: needs the guest throttled to about ${plain.throttlePercent}%`,
      throttle,
    );
  }
  if (policy.escalation.includes('postcopy')) {
    // Round 1 sends everything once; then the guest runs on the target and pulls what was dirtied meanwhile.
    const first = (inp.nonZeroBytes / rate) * 1000;
    const dirtied = Math.min((inp.dirtyRateBytesPerSec * first) / 1000, inp.nonZeroBytes);
    const s: Simulation = {
      transferMs: first + (dirtied / rate) * 1000,
      rounds: 2,
      downtimeMs: 0,
      bytes: inp.nonZeroBytes + dirtied,
      converges: true,
      throttlePercent: 0,
    };
    return wrap(
      s,
      'post-copy after round 1',
      `dirty rate is ${Math.round(ratio * 100)}% of ${rateText}: pre-copy would not finish within ${Math.round(limitMs / 1000)} s`,
      { postcopyAfterRound: 2 },
    );
  }
  return wrap(
    { ...plain, converges: false },
    'pre-copy (expected to abort)',
    `dirty rate is ${Math.round(ratio * 100)}% of ${rateText}: pre-copy is not expected to finish within ${Number.isFinite(limitMs) ? `${Math.round(limitMs / 1000)} s` : 'any time'} and the policy allows no post-copy`,
  );
}

/** Migration policy (issue 6): validation, layering, tuning and the escalation decisions. Pure. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FERRY_POLICY, QEMU_DEFAULTS_POLICY, type TransferWatch, effectivePolicy, escalate, tuningFor } from '../../src/domain/policy.js';

const GiB = 1073741824;
const watch = (w: Partial<TransferWatch>): TransferWatch => ({
  elapsedMs: 1000,
  guestRamBytes: GiB / 4,
  remainingBytes: 50e6,
  lowestRemaining: 50e6,
  lowestAtMs: 1000,
  rounds: 3,
  postcopyStarted: false,
  ...w,
});

describe('migration policy', () => {
  it("layers cluster, VM and migration field by field over Ferry's default", () => {
    const p = effectivePolicy({ downtimeMs: 200, multifdChannels: 2 }, { downtimeMs: 50 }, { bandwidthMiBps: 64 });
    assert.deepEqual(p, { ...FERRY_POLICY, downtimeMs: 50, multifdChannels: 2, bandwidthMiBps: 64 });
    assert.deepEqual(effectivePolicy(undefined, undefined, undefined), FERRY_POLICY);
  });

  it('tells QEMU what it needs up front: no cap means the link, post-copy only when it may be used', () => {
    assert.deepEqual(tuningFor(FERRY_POLICY), {
      maxBandwidthBytesPerSec: 0,
      maxDowntimeMs: 30,
      autoConverge: true,
      multifdChannels: 1,
      xbzrle: false,
      postcopy: false,
    });
    assert.deepEqual(tuningFor(QEMU_DEFAULTS_POLICY), {
      maxBandwidthBytesPerSec: 128 * 1048576,
      maxDowntimeMs: 300,
      autoConverge: false,
      multifdChannels: 1,
      xbzrle: false,
      postcopy: false,
    });
    assert.equal(tuningFor({ ...FERRY_POLICY, escalation: ['auto-converge', 'postcopy'] }).postcopy, true);
  });
});

describe('escalation', () => {
  const p = { ...FERRY_POLICY, progressTimeoutS: 5, completionTimeoutSPerGiB: 40 };
  it('goes on while pre-copy makes progress within its time', () => {
    assert.deepEqual(escalate(p, watch({ elapsedMs: 6000, lowestAtMs: 4000 })), { action: 'continue' });
  });

  it('aborts without post-copy when there was no progress for the progress timeout (the VM stays on its source)', () => {
    const d = escalate(p, watch({ elapsedMs: 9001, lowestAtMs: 4000, lowestRemaining: 80 * 1048576 }));
    assert.deepEqual(d, { action: 'abort', reason: 'pre-copy did not converge: no progress for 5 s (remaining stuck above 80 MiB)' });
  });

  it('aborts after the completion timeout per GiB of guest RAM', () => {
    // 256 MiB at 40 s/GiB: 10 s.
    assert.equal(escalate(p, watch({ elapsedMs: 9999, lowestAtMs: 9000 })).action, 'continue');
    assert.deepEqual(escalate(p, watch({ elapsedMs: 10_001, lowestAtMs: 9000 })), {
      action: 'abort',
      reason: 'pre-copy did not converge: not complete after 10 s (limit 40 s per GiB: 10 s)',
    });
  });

  it('switches to post-copy instead of aborting when the policy allows it, and never looks back once it did', () => {
    const pc = { ...p, escalation: ['auto-converge', 'postcopy'] as ('auto-converge' | 'postcopy')[] };
    assert.deepEqual(escalate(pc, watch({ elapsedMs: 9001, lowestAtMs: 4000 })), {
      action: 'postcopy',
      reason: 'no progress for 5 s (remaining stuck above 48 MiB)',
    });
    assert.deepEqual(escalate(pc, watch({ elapsedMs: 60_000, lowestAtMs: 0, postcopyStarted: true })), { action: 'continue' });
  });

  it('follows the prediction: post-copy after the planned round, only where post-copy is allowed', () => {
    const pc = { ...p, escalation: ['postcopy'] as ('auto-converge' | 'postcopy')[] };
    assert.equal(escalate(pc, watch({ rounds: 1, postcopyAfterRound: 2 })).action, 'continue');
    assert.equal(escalate(pc, watch({ rounds: 2, postcopyAfterRound: 2 })).action, 'postcopy');
    assert.equal(escalate(p, watch({ rounds: 2, postcopyAfterRound: 2 })).action, 'continue', 'no post-copy in the policy: the plan cannot force it');
  });

  it('never times out when the timeouts are 0', () => {
    assert.equal(escalate({ ...p, progressTimeoutS: 0, completionTimeoutSPerGiB: 0 }, watch({ elapsedMs: 1e9, lowestAtMs: 0 })).action, 'continue');
  });
});

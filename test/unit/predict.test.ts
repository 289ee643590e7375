/**
 * The pre-copy model on measurements recorded by `npm run bench`
 * (test/fixtures/migration-measurements.json: what the pre-flight measured,
 * the policy, and what the migration then did).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { FERRY_POLICY, QEMU_DEFAULTS_POLICY, type MigrationPolicy } from '../../src/domain/policy.js';
import { type PredictionInput, predict, throttleFor } from '../../src/domain/predict.js';

interface Run {
  case: string;
  input: PredictionInput;
  policy: MigrationPolicy;
  actual: { totalMs: number; transferMs: number; bytes: number; maxThrottlePercent: number };
  strategy: string;
  note?: string;
}
const recorded = JSON.parse(fs.readFileSync(new URL('../../../test/fixtures/migration-measurements.json', import.meta.url), 'utf8')) as { runs: Run[] };
const MiB = 1048576;

describe('prediction on recorded measurements', () => {
  it('picks the strategy each recorded run used', () => {
    for (const r of recorded.runs) assert.equal(predict(r.input, r.policy).strategy, r.strategy, r.case);
  });

  it('predicts total time within 22% of what happened, and the median within 10%', () => {
    const errors = recorded.runs
      .filter((r) => !r.note)
      .map((r) => {
        const e = Math.abs(predict(r.input, r.policy).totalMs - r.actual.totalMs) / r.actual.totalMs;
        assert.ok(e <= 0.22, `${r.case}: predicted ${predict(r.input, r.policy).totalMs} ms, actual ${r.actual.totalMs} ms`);
        return e;
      })
      .sort((a, b) => a - b);
    assert.ok(errors[Math.floor(errors.length / 2)]! <= 0.1, `median error ${errors[Math.floor(errors.length / 2)]}`);
  });

  it('predicts the throttle auto-converge reached', () => {
    for (const r of recorded.runs.filter((x) => x.actual.maxThrottlePercent > 0)) {
      assert.equal(predict(r.input, r.policy).throttlePercent, r.actual.maxThrottlePercent, r.case);
    }
  });
});

describe('pre-copy model', () => {
  const base: PredictionInput = { ramBytes: 512 * MiB, nonZeroBytes: 300 * MiB, dirtyRateBytesPerSec: 0, linkBytesPerSec: 119 * MiB, measureMs: 400 };
  it('an idle guest: one pass at the link rate plus the switchover', () => {
    const p = predict(base, FERRY_POLICY);
    assert.equal(p.strategy, 'pre-copy');
    assert.equal(p.transferMs, Math.round((300 / 119) * 1000));
    assert.equal(p.totalMs, p.transferMs + 400 + 150);
  });

  it('the policy cap is the rate when it is below the link', () => {
    const p = predict(base, QEMU_DEFAULTS_POLICY);
    assert.equal(p.transferMs, Math.round((300 / 119) * 1000), '128 MiB/s cap above a 119 MiB/s link changes nothing');
    const slow = predict({ ...base, linkBytesPerSec: 1000 * MiB }, QEMU_DEFAULTS_POLICY);
    assert.equal(slow.transferMs, Math.round((300 / 128) * 1000));
    assert.match(slow.reason, /128 MiB\/s \(policy cap\)/);
  });

  it('a guest dirtying faster than the link: auto-converge with the throttle it needs, else post-copy, else an honest abort', () => {
    const hot = { ...base, dirtyRateBytesPerSec: 180 * MiB };
    const ac = predict(hot, FERRY_POLICY);
    assert.equal(ac.strategy, 'pre-copy + auto-converge');
    assert.equal(ac.throttleInitialPercent, throttleFor(180 * MiB, 119 * MiB));
    assert.equal(throttleFor(180 * MiB, 119 * MiB), 74, 'dirtying at most 40% of the link');
    const pc = predict(hot, { ...FERRY_POLICY, escalation: ['postcopy'] });
    assert.equal(pc.strategy, 'post-copy after round 1');
    assert.equal(pc.postcopyAfterRound, 2);
    const none = predict(hot, { ...FERRY_POLICY, escalation: [] });
    assert.equal(none.strategy, 'pre-copy (expected to abort)');
    assert.equal(none.converges, false);
  });
});

/**
 * The pure parts of backup schedules and replica health: durations,
 * windows (also across midnight), when a schedule is due, and how a
 * replica's lag and last attempt map to normal / warning / critical.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type BackupSchedule, inWindow, isDue, parseDuration, parseWindow } from '../../src/domain/backups.js';
import { type ReplicaRecord, replicaHealth } from '../../src/domain/replicas.js';

describe('backup schedules', () => {
  it('parses durations from 1s to 366d and refuses the rest with one line', () => {
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('15m'), 900_000);
    assert.equal(parseDuration('6h'), 21_600_000);
    assert.equal(parseDuration('1d'), 86_400_000);
    for (const bad of ['0s', '5x', '10', '', '367d', 5, '1.5h']) {
      assert.throws(() => parseDuration(bad), /^FerryError: --every must be a duration like 30s, 15m, 6h or 1d \(1s to 366d\), got '.*'$/m);
    }
  });

  it('parses windows and tells whether a time is inside, also across midnight', () => {
    const day = parseWindow('08:30-17:00');
    assert.deepEqual([day.startMin, day.endMin], [510, 1020]);
    assert.equal(inWindow(day, 510), true);
    assert.equal(inWindow(day, 1019), true);
    assert.equal(inWindow(day, 1020), false, 'the end is exclusive');
    assert.equal(inWindow(day, 100), false);
    const night = parseWindow('22:00-04:00');
    assert.equal(inWindow(night, 23 * 60), true);
    assert.equal(inWindow(night, 60), true);
    assert.equal(inWindow(night, 12 * 60), false);
    assert.equal(inWindow(undefined, 12 * 60), true, 'no window: any time');
    for (const bad of ['24:00-01:00', '10:00-10:00', '9:00-10:00', '10:60-11:00', 'always']) {
      assert.throws(() => parseWindow(bad), /--window must be HH:MM-HH:MM with two different times/);
    }
  });

  it('is due first at once, then every period after its last run', () => {
    const s: BackupSchedule = { vm: 'db', every: '10s', everyMs: 10_000, keep: 2, createdAtMs: 0 };
    assert.equal(isDue(s, 1), true);
    assert.equal(isDue({ ...s, lastRunMs: 1000 }, 10_999), false);
    assert.equal(isDue({ ...s, lastRunMs: 1000 }, 11_000), true);
  });
});

describe('replica health', () => {
  const r: ReplicaRecord = {
    vm: 'db',
    target: { url: 'http://127.0.0.1:1', clusterId: 'x' },
    interval: '30s',
    intervalMs: 30_000,
    keep: 3,
    state: 'replicating',
    createdAtMs: 0,
    bytesSent: 0,
    syncs: 1,
    lastSyncAtMs: 100_000,
  };
  it('is normal while the lag is at most twice the interval', () => {
    assert.equal(replicaHealth(r, 100_000 + 60_000), 'normal');
  });
  it('warns when the lag exceeds twice the interval or the last sync failed', () => {
    assert.equal(replicaHealth(r, 100_000 + 60_001), 'warning');
    assert.equal(replicaHealth({ ...r, lastError: 'job failed' }, 100_001), 'warning');
    assert.equal(replicaHealth({ ...r, lastSyncAtMs: undefined }, 1), 'warning', 'no sync yet');
  });
  it('is critical when the replica side did not answer', () => {
    assert.equal(replicaHealth({ ...r, unreachable: true }, 100_001), 'critical');
  });
});

/**
 * Backup schedules (issue 8, item 3) with real QEMU: a schedule whose window
 * does not contain the current time takes no backup; one whose window does
 * backs the writing VM up every few seconds and prunes its scheduled
 * backups to --keep, merging a pruned base into the backup built on it, so
 * every kept backup restores to a consistent point; backups taken by hand
 * are never pruned; --off stops it; bad input is refused with one line.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BackupRecord } from '../../src/controller/storage/backups.js';
import type { BackupSchedule } from '../../src/controller/storage/schedules.js';
import { readRecords } from '../helpers/disk.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { eventRoutes } from '../../src/api/routes/events.js';

/** Local "HH:MM" `minutes` from now (wrapping past midnight). */
function hhmm(minutes: number): string {
  const d = new Date(Date.now() + minutes * 60_000);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

describe('backup schedules', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 1, nodeMemoryMiB: 512 });
    await c.createAndStart('db', { node: 'node-1', memoryMiB: 128, workload: 'disk:50' });
    await waitFor('the guest to write', 30_000, () => (c.console('db').diskAcked ?? 0) >= 50);
  });
  after(async () => {
    await c?.stop();
  });
  const backups = () => c.ferryJson<BackupRecord[]>(['backup', 'list', 'db']);

  it('refuses bad schedules with one line', async () => {
    const cases: [string[], string][] = [
      [['--every', '5x', '--keep', '2'], "error: --every must be a duration like 30s, 15m, 6h or 1d (1s to 366d), got '5x'"],
      [['--every', '10s', '--keep', '0'], "error: --keep must be a whole number from 1 to 1000, got '0'"],
      [
        ['--every', '10s', '--keep', '2', '--window', '25:00-01:00'],
        "error: --window must be HH:MM-HH:MM with two different times (e.g. 22:00-04:00), got '25:00-01:00'",
      ],
      [['--every', '10s'], "error: 'backup schedule' needs --every DURATION and --keep N (or --off)"],
    ];
    for (const [args, message] of cases) {
      const r = await c.ferry(['backup', 'schedule', 'db', ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim(), message);
    }
    const unknown = await c.ferry(['backup', 'schedule', 'nope', '--every', '10s', '--keep', '2']);
    assert.equal(unknown.code, 2);
    assert.equal(unknown.stderr.trim(), "error: unknown VM 'nope'");
    assert.deepEqual(await c.ferryJson<BackupSchedule[]>(['backup', 'schedules']), [], 'nothing half-made');
  });

  it('takes no backup outside its window', async () => {
    const window = `${hhmm(120)}-${hhmm(180)}`;
    const out = await c.ferryOk(['backup', 'schedule', 'db', '--every', '1s', '--keep', '2', '--window', window]);
    assert.match(out, /backups of db every 1s, keeping the newest 2, only between/);
    await new Promise((r) => setTimeout(r, 4000));
    assert.deepEqual(await backups(), []);
    const [s] = await c.ferryJson<BackupSchedule[]>(['backup', 'schedules']);
    assert.equal(s!.window!.text, window);
    assert.equal(s!.lastError, 'outside the window');
    assert.equal(s!.lastRunMs, undefined);
  });

  it('backs up inside its window and prunes its own backups to --keep, each kept one restoring', async () => {
    // The backup store is a setting: another directory than the shared volume's backups/.
    const store = path.join(c.dir, 'backup-store');
    await c.ferryOk(['cluster', 'set', 'storageRoots', store]);
    await c.ferryOk(['cluster', 'set', 'backupStore', store]);
    const manual = await c.ferryJson<BackupRecord>(['backup', 'create', 'db']);
    assert.ok(manual.file.startsWith(`${store}/db/`), manual.file);
    await c.ferryOk(['backup', 'schedule', 'db', '--every', '2s', '--keep', '2', '--window', `${hhmm(-60)}-${hhmm(60)}`]);
    // Enough runs that pruning has merged scheduled bases into newer ones.
    await waitFor(
      'five scheduled backups',
      90_000,
      async () => {
        const events = await c.api.call(eventRoutes.list, {});
        return events.filter((e) => e.type === 'backup.pruned').flatMap((e) => e.data?.pruned ?? []).length >= 3;
      },
      500,
    );
    await c.ferryOk(['backup', 'schedule', 'db', '--off']);
    await waitFor('the last scheduled backup to end', 30_000, async () => (await backups()).every((b) => b.status !== 'running' && b.status !== 'waiting'));
    const list = await backups();
    const scheduled = list.filter((b) => b.scheduled);
    assert.equal(scheduled.length, 2, `kept two scheduled backups: ${JSON.stringify(list.map((b) => b.id))}`);
    assert.ok(
      list.some((b) => b.id === manual.id),
      'the backup taken by hand stays',
    );
    assert.ok(scheduled.every((b) => b.mode === 'incremental' && b.status === 'completed' && b.verified));
    // The older kept one had its pruned bases merged into it and now builds on the manual backup.
    assert.ok((scheduled[0]!.mergedFrom ?? []).length >= 1, JSON.stringify(scheduled[0]));
    assert.equal(scheduled[0]!.parent, manual.id);
    assert.equal(scheduled[1]!.parent, scheduled[0]!.id);
    let previous = 0;
    for (const b of scheduled) {
      assert.equal((await c.ferry(['backup', 'restore', b.id, '--as', `r-${b.id}`])).code, 0);
      const records = readRecords((await c.vm(`r-${b.id}`)).diskPath);
      assert.deepEqual(records.holes, [], `${b.id} is a point in time`);
      assert.ok(records.last > previous, `${b.id} holds newer records (${records.last} > ${previous})`);
      previous = records.last;
      await c.ferryOk(['vm', 'delete', `r-${b.id}`]);
    }
    // --off stopped it.
    const count = (await backups()).length;
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal((await backups()).length, count);
    assert.deepEqual(await c.ferryJson<BackupSchedule[]>(['backup', 'schedules']), []);
  });
});

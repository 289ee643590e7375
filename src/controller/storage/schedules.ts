/**
 * Backup schedules: `ferry backup schedule VM --every DURATION --keep N
 * [--window HH:MM-HH:MM]`. The controller checks every schedule once a
 * second; a backup is due when the last scheduled one started `every` ago
 * or more, and it runs only while the controller's local time is inside the
 * window (a window may wrap past midnight, 22:00-04:00), so busy hours stay
 * free. A due backup is incremental when the VM runs and has a completed
 * backup to build on, else full. After each scheduled backup the VM's
 * scheduled backups beyond the newest `keep` are pruned, oldest first; a
 * pruned backup that another one builds on is merged into it first, so
 * every kept backup still restores. Backups taken by hand are never pruned.
 *
 * Store keys: backup-schedules/<vm> → BackupSchedule.
 */
import type { Clock } from '../../domain/clock.js';
import { ErrorCode, errors, isFerryError, toFerryError } from '../../domain/errors.js';
import { VmState } from '../../domain/records.js';
import type { EventSink } from '../../ports/events.js';
import type { Logger } from '../../ports/logger.js';
import type { ClusterStore } from '../../ports/store.js';
import type { VmRepository } from '../../ports/vm-repository.js';
import type { Backups } from './backups.js';
import { type BackupSchedule, type BackupWindow, inWindow, isDue } from '../../domain/backups.js';
export type { BackupSchedule };

export interface SchedulesDeps {
  store: ClusterStore;
  vms: VmRepository;
  events: EventSink;
  clock: Clock;
  log: Logger;
  backups: Pick<Backups, 'create' | 'list' | 'delete'>;
}

export class BackupSchedules {
  private readonly active = new Set<string>();

  constructor(private readonly d: SchedulesDeps) {}

  private key(vm: string): string {
    return `backup-schedules/${vm}`;
  }

  async list(): Promise<BackupSchedule[]> {
    return (await this.d.store.list<BackupSchedule>('backup-schedules/')).map((e) => e.value);
  }

  /** Sets a VM's schedule (checked by the API's schema: `every` parsed to `everyMs`, `window` parsed). */
  async set(vm: string, body: { every: string; everyMs: number; keep: number; window?: BackupWindow | null }): Promise<BackupSchedule> {
    const { everyMs, keep } = body;
    const window = body.window ?? undefined;
    await this.d.vms.get(vm);
    const previous = (await this.d.store.get<BackupSchedule>(this.key(vm)))?.value;
    const s: BackupSchedule = {
      vm,
      everyMs,
      every: body.every,
      keep,
      createdAtMs: this.d.clock.nowMs(),
      ...(window ? { window } : {}),
      ...(previous?.lastRunMs !== undefined ? { lastRunMs: previous.lastRunMs } : {}),
      ...(previous?.lastBackup ? { lastBackup: previous.lastBackup } : {}),
    };
    await this.d.store.put(this.key(vm), s);
    await this.d.events.emit({
      type: 'backup.schedule',
      vm,
      message: `backups of ${vm} every ${s.every}, keeping ${keep}${window ? `, only ${window.text}` : ''}`,
    });
    return s;
  }

  async remove(vm: string): Promise<BackupSchedule> {
    const e = await this.d.store.get<BackupSchedule>(this.key(vm));
    if (!e) throw errors.invalid('vm', `VM '${vm}' has no backup schedule`);
    await this.d.store.delete(this.key(vm));
    await this.d.events.emit({ type: 'backup.schedule', vm, message: `backup schedule of ${vm} removed` });
    return e.value;
  }

  /** Called every second by the controller: starts the due backups (each VM's one at a time). */
  async tick(): Promise<void> {
    const now = this.d.clock.nowMs();
    const d = new Date(now);
    const minute = d.getHours() * 60 + d.getMinutes();
    for (const s of await this.list()) {
      if (this.active.has(s.vm) || !isDue(s, now)) continue;
      if (!inWindow(s.window, minute)) {
        // Counted once per due period, not every second.
        if (s.lastError !== 'outside the window')
          await this.patch(s.vm, { lastError: 'outside the window', skippedOutsideWindow: (s.skippedOutsideWindow ?? 0) + 1 });
        continue;
      }
      this.active.add(s.vm);
      void this.run(s, now).finally(() => this.active.delete(s.vm));
    }
  }

  private async patch(vm: string, p: Partial<BackupSchedule>): Promise<void> {
    const cur = (await this.d.store.get<BackupSchedule>(this.key(vm)))?.value;
    if (cur) await this.d.store.put(this.key(vm), { ...cur, ...p });
  }

  private async run(s: BackupSchedule, now: number): Promise<void> {
    try {
      const vm = await this.d.vms.get(s.vm);
      const base = (await this.d.backups.list(s.vm)).some((b) => b.status === 'completed');
      const incremental = base && vm.state === VmState.Running;
      await this.patch(s.vm, { lastRunMs: now });
      // A disk that lost its change bitmap (moved, or copied along a migration) gets a full backup instead.
      const b = await this.d.backups.create(s.vm, { incremental, scheduled: true }).catch((e: unknown) => {
        if (incremental && isFerryError(e, ErrorCode.BitmapMissing)) return this.d.backups.create(s.vm, { scheduled: true });
        throw e;
      });
      await this.patch(s.vm, { lastBackup: b.id, lastError: undefined });
      await this.prune(s.vm, s.keep);
    } catch (e) {
      const err = toFerryError(e);
      await this.patch(s.vm, { lastRunMs: now, lastError: err.message });
      this.d.log.warn({ vm: s.vm, err: err.message }, 'scheduled backup failed');
    }
  }

  /** Deletes the VM's oldest scheduled backups beyond `keep`, merging each into the backup built on it. */
  async prune(vm: string, keep: number): Promise<string[]> {
    const scheduled = (await this.d.backups.list(vm)).filter((b) => b.scheduled && b.status === 'completed');
    const pruned: string[] = [];
    for (const b of scheduled.slice(0, Math.max(0, scheduled.length - keep))) {
      await this.d.backups.delete(b.id, { mergeIntoChildren: true });
      pruned.push(b.id);
    }
    if (pruned.length)
      await this.d.events.emit({
        type: 'backup.pruned',
        vm,
        message: `pruned ${pruned.length} scheduled backup(s) of ${vm} to keep ${keep}: ${pruned.join(', ')}`,
        data: { pruned },
      });
    return pruned;
  }
}

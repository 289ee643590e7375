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
import type { Controller } from '../controller.js';
import { validateName } from '../../domain/validate.js';
import { errors, toFerryError } from '../../domain/errors.js';
import { VmState } from '../../domain/records.js';
import type { Backups } from './backups.js';
import { type BackupSchedule, inWindow, isDue, parseDuration, parseWindow, KEEP_RANGE } from '../../domain/backups.js';
export { type BackupSchedule, inWindow, isDue, parseDuration, parseWindow, KEEP_RANGE };

export class BackupSchedules {
  private readonly active = new Set<string>();

  constructor(
    private readonly c: Controller,
    private readonly backups: Backups,
  ) {}

  private key(vm: string): string {
    return `backup-schedules/${vm}`;
  }

  async list(): Promise<BackupSchedule[]> {
    return (await this.c.store.list<BackupSchedule>('backup-schedules/')).map((e) => e.value);
  }

  async set(vm: string, body: { every?: unknown; keep?: unknown; window?: unknown }): Promise<BackupSchedule> {
    validateName('VM', vm);
    const everyMs = parseDuration(body.every);
    const keep = body.keep;
    if (typeof keep !== 'number' || !Number.isInteger(keep) || keep < KEEP_RANGE.min || keep > KEEP_RANGE.max) {
      throw errors.invalid('keep', `--keep must be a whole number from ${KEEP_RANGE.min} to ${KEEP_RANGE.max}, got '${String(keep)}'`);
    }
    const window = body.window === undefined || body.window === null ? undefined : parseWindow(body.window);
    await this.c.vm(vm);
    const previous = (await this.c.store.get<BackupSchedule>(this.key(vm)))?.value;
    const s: BackupSchedule = {
      vm, everyMs, every: body.every as string, keep, createdAtMs: this.c.clock.nowMs(),
      ...(window ? { window } : {}),
      ...(previous?.lastRunMs !== undefined ? { lastRunMs: previous.lastRunMs } : {}),
      ...(previous?.lastBackup ? { lastBackup: previous.lastBackup } : {}),
    };
    await this.c.store.put(this.key(vm), s);
    await this.c.event({ type: 'backup.schedule', vm, message: `backups of ${vm} every ${s.every}, keeping ${keep}${window ? `, only ${window.text}` : ''}` });
    return s;
  }

  async remove(vm: string): Promise<BackupSchedule> {
    validateName('VM', vm);
    const e = await this.c.store.get<BackupSchedule>(this.key(vm));
    if (!e) throw errors.invalid('vm', `VM '${vm}' has no backup schedule`);
    await this.c.store.delete(this.key(vm));
    await this.c.event({ type: 'backup.schedule', vm, message: `backup schedule of ${vm} removed` });
    return e.value;
  }

  /** Called every second by the controller: starts the due backups (each VM's one at a time). */
  async tick(): Promise<void> {
    const now = this.c.clock.nowMs();
    const d = new Date(now);
    const minute = d.getHours() * 60 + d.getMinutes();
    for (const s of await this.list()) {
      if (this.active.has(s.vm) || !isDue(s, now)) continue;
      if (!inWindow(s.window, minute)) {
        // Counted once per due period, not every second.
        if (s.lastError !== 'outside the window') await this.patch(s.vm, { lastError: 'outside the window', skippedOutsideWindow: (s.skippedOutsideWindow ?? 0) + 1 });
        continue;
      }
      this.active.add(s.vm);
      void this.run(s, now).finally(() => this.active.delete(s.vm));
    }
  }

  private async patch(vm: string, p: Partial<BackupSchedule>): Promise<void> {
    const cur = (await this.c.store.get<BackupSchedule>(this.key(vm)))?.value;
    if (cur) await this.c.store.put(this.key(vm), { ...cur, ...p });
  }

  private async run(s: BackupSchedule, now: number): Promise<void> {
    try {
      const vm = await this.c.vm(s.vm);
      const base = (await this.backups.list(s.vm)).some((b) => b.status === 'completed');
      const incremental = base && vm.state === VmState.Running;
      await this.patch(s.vm, { lastRunMs: now });
      // A disk that lost its change bitmap (moved, or copied along a migration) gets a full backup instead.
      const b = await this.backups.create(s.vm, { incremental, scheduled: true }).catch((e: unknown) => {
        if (incremental && toFerryError(e).message.includes('no change bitmap')) return this.backups.create(s.vm, { scheduled: true });
        throw e;
      });
      await this.patch(s.vm, { lastBackup: b.id, lastError: undefined });
      await this.prune(s.vm, s.keep);
    } catch (e) {
      const err = toFerryError(e);
      await this.patch(s.vm, { lastRunMs: now, lastError: err.message });
      this.c.log(`scheduled backup of ${s.vm}: ${err.message}`);
    }
  }

  /** Deletes the VM's oldest scheduled backups beyond `keep`, merging each into the backup built on it. */
  async prune(vm: string, keep: number): Promise<string[]> {
    const scheduled = (await this.backups.list(vm)).filter((b) => b.scheduled && b.status === 'completed');
    const pruned: string[] = [];
    for (const b of scheduled.slice(0, Math.max(0, scheduled.length - keep))) {
      await this.backups.delete(b.id, { mergeIntoChildren: true });
      pruned.push(b.id);
    }
    if (pruned.length) await this.c.event({ type: 'backup.pruned', vm, message: `pruned ${pruned.length} scheduled backup(s) of ${vm} to keep ${keep}: ${pruned.join(', ')}`, data: { pruned } });
    return pruned;
  }
}

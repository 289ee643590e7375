/** `ferry backup …`: create, list, restore, delete, schedule, schedules. */
import type { Command } from 'commander';
import { backupRoutes } from '../../api/routes/storage.js';
import { errors } from '../../domain/errors.js';
import { type Cluster, command, numberOrText } from '../context.js';
import { bytes, json, ms, print, table } from '../output.js';

/** Whether the point in time was quiesced, in words. */
function quiesceWords(b: { quiesced?: boolean; quiesceNote?: string }): string {
  if (b.quiesced) return `quiesced (${b.quiesceNote ?? 'file systems frozen'})`;
  return `crash-consistent${b.quiesceNote ? ` (not quiesced: ${b.quiesceNote})` : ''}`;
}

export function backupCommands(program: Command, connect: () => Cluster): void {
  const backup = command(program, 'backup', 'online backups and their schedules');
  command(backup, 'create', 'back up a VM now (verified when written; the VM may migrate meanwhile)')
    .argument('<vm>', 'a VM name')
    .option('--incremental', 'only the blocks changed since the last backup')
    .option('--bandwidth <MiB/s>', 'cap on the copy')
    .option('--json', 'print as JSON')
    .action(async (vm: string, o: { incremental?: boolean; bandwidth?: string; json?: boolean }) => {
      if (o.bandwidth !== undefined && !/^\d+$/.test(o.bandwidth)) throw errors.usage(`--bandwidth must be a whole number of MiB/s, got '${o.bandwidth}'`);
      const b = await connect().api.call(
        backupRoutes.create,
        { body: { vm, incremental: o.incremental === true, ...(o.bandwidth ? { bandwidthMiBps: Number(o.bandwidth) } : {}) } },
        { timeoutMs: 32 * 60_000 },
      );
      if (o.json) json(b);
      else {
        print(
          `backup ${b.id} of ${b.vm}: ${b.mode}, ${bytes(b.bytes ?? 0)} copied in ${ms((b.finishedAtMs ?? 0) - (b.startedAtMs ?? 0))}${(b.waitedMs ?? 0) >= 100 ? `, waited ${ms(b.waitedMs!)} for migrations` : ''}${b.movedTo ? ` (the VM moved to ${b.movedTo} meanwhile)` : ''}, ${quiesceWords(b)}, verified, ${b.file}`,
        );
        if (b.mergeError) print(`warning: the VM runs on the backup's overlay: ${b.mergeError}`);
      }
    });
  command(backup, 'list', 'backups, of one VM or all')
    .argument('[vm]', 'a VM name')
    .option('--json', 'print as JSON')
    .action(async (vm: string | undefined, o: { json?: boolean }) => {
      const list = await connect().api.call(backupRoutes.list, { query: vm ? { vm } : {} });
      if (o.json) json(list);
      else
        print(
          table(
            ['ID', 'VM', 'MODE', 'STATUS', 'TAKEN', 'COPIED', 'BASE', 'QUIESCED'],
            list.map((b) => [
              b.id,
              b.vm,
              b.mode,
              b.status,
              b.startedAtMs ? new Date(b.startedAtMs).toISOString() : '-',
              bytes(b.bytes ?? 0),
              b.parent ?? '-',
              b.quiesced === undefined ? '-' : b.quiesced ? 'yes' : 'no',
            ]),
          ),
        );
    });
  command(backup, 'restore', 'restore a backup as a new VM, or onto its stopped VM')
    .argument('<id>', 'a backup id')
    .option('--as <NAME>', 'a new VM of this name')
    .option('--json', 'print as JSON')
    .action(async (id: string, o: { as?: string; json?: boolean }) => {
      const vm = await connect().api.call(backupRoutes.restore, { params: { id }, body: o.as ? { as: o.as } : {} }, { timeoutMs: 10 * 60_000 });
      if (o.json) json(vm);
      else print(`backup ${id} restored ${o.as ? `as VM ${vm.name}` : `onto VM ${vm.name}`} (stopped; 'ferry vm start ${vm.name}')`);
    });
  command(backup, 'delete', 'delete a backup no other backup builds on')
    .argument('<id>', 'a backup id')
    .option('--json', 'print as JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const b = await connect().api.call(backupRoutes.delete, { params: { id } });
      if (o.json) json(b);
      else print(`backup ${b.id} deleted`);
    });
  command(backup, 'schedule', 'back a VM up every so often inside a local-time window, pruned to N (--off stops)')
    .argument('<vm>', 'a VM name')
    .option('--every <DURATION>', '30s, 15m, 6h, 1d')
    .option('--keep <N>', 'scheduled backups kept')
    .option('--window <HH:MM-HH:MM>', 'only then (local time; may wrap past midnight)')
    .option('--off', 'stop scheduling (backups stay)')
    .option('--json', 'print as JSON')
    .action(async (vm: string, o: { every?: string; keep?: string; window?: string; off?: boolean; json?: boolean }) => {
      const c = connect();
      if (o.off) {
        const s = await c.api.call(backupRoutes.unschedule, { params: { vm } });
        if (o.json) json(s);
        else print(`backup schedule of ${vm} removed (its backups stay)`);
        return;
      }
      if (!o.every || !o.keep) throw errors.usage("'backup schedule' needs --every DURATION and --keep N (or --off)");
      if (!/^\d+$/.test(o.keep)) throw errors.usage(`--keep must be a whole number, got '${o.keep}'`);
      const s = await c.api.call(backupRoutes.schedule, {
        params: { vm },
        body: { every: o.every, keep: numberOrText(o.keep) as number, ...(o.window ? { window: o.window } : {}) },
      });
      if (o.json) json(s);
      else print(`backups of ${vm} every ${s.every}, keeping the newest ${s.keep}${s.window ? `, only between ${s.window.text.replace('-', ' and ')}` : ''}`);
    });
  command(backup, 'schedules', 'backup schedules with their last run')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const list = await connect().api.call(backupRoutes.schedules, {});
      if (o.json) json(list);
      else
        print(
          table(
            ['VM', 'EVERY', 'KEEP', 'WINDOW', 'LAST RUN', 'LAST BACKUP', 'NOTE'],
            list.map((s) => [
              s.vm,
              s.every,
              String(s.keep),
              s.window?.text ?? 'any time',
              s.lastRunMs ? new Date(s.lastRunMs).toISOString() : '-',
              s.lastBackup ?? '-',
              s.lastError ?? '',
            ]),
          ),
        );
    });
}

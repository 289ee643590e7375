/** `ferry migration …`: list, show, cancel. */
import type { Command } from 'commander';
import { migrationRoutes } from '../../api/routes/migrations.js';
import { type Cluster, command } from '../context.js';
import { bytes, json, ms, print, table } from '../output.js';
import { progressLine } from './vm.js';

export function migrationCommands(program: Command, connect: () => Cluster): void {
  const migration = command(program, 'migration', 'migrations: the queue and history');
  command(migration, 'list', 'every migration, queued ones with their place')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const list = await connect().api.call(migrationRoutes.list, {});
      if (o.json) json(list);
      else
        print(
          table(
            ['ID', 'VM', 'MODE', 'FROM', 'TO', 'STATUS', 'STEP', 'PRIORITY', 'TOTAL', 'DOWNTIME', 'BLACKOUT'],
            list.map((m) => [
              m.id,
              m.vm,
              m.mode,
              m.from,
              m.to,
              m.status + (m.queuePosition ? ` #${m.queuePosition}` : ''),
              m.phase,
              m.priority,
              ms(m.totalMs),
              ms(m.downtimeMs),
              ms(m.guestBlackoutMs),
            ]),
          ),
        );
    });
  command(migration, 'show', 'one migration and its report')
    .argument('<id>', 'a migration id')
    .option('--json', 'print as JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const m = await connect().api.call(migrationRoutes.show, { params: { id } });
      if (o.json) json(m);
      else {
        print(`${m.id}: ${m.vm} ${m.from} → ${m.to} (${m.mode}) ${m.status}, step ${m.phase}`);
        if (m.progress && m.status === 'running') print(`  ${progressLine(m.progress)}`);
        for (const s of m.steps) print(`  ${s.name.padEnd(8)} ${ms(s.ms)}`);
        if (m.report) print(`  total ${ms(m.totalMs)}, downtime ${ms(m.downtimeMs)}, guest blackout ${ms(m.guestBlackoutMs)}, ${bytes(m.transferredBytes)}`);
        if (m.error) print(`  error: ${m.error}`);
      }
    });
  command(migration, 'cancel', 'cancel a migration (the VM stays on its source)')
    .argument('<id>', 'a migration id')
    .action(async (id: string) => {
      await connect().api.call(migrationRoutes.cancel, { params: { id } });
      print(`migration ${id}: cancel requested`);
    });
}

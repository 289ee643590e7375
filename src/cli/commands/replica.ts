/** `ferry replica …`: replicate a VM to another Ferry cluster (R5), fail over, reverse. */
import fs from 'node:fs';
import type { Command } from 'commander';
import type { Output } from '../../api/client.js';
import { replicaRoutes } from '../../api/routes/replicas.js';
import { errors } from '../../domain/errors.js';
import { type Cluster, command, numberOrText } from '../context.js';
import { bytes, json, ms, print, table } from '../output.js';

type Status = Output<typeof replicaRoutes.enable>;

function describe(s: Status): string {
  return `${s.vm} → ${s.target.url}: ${s.health}, ${s.lastSyncAtMs ? `last sync ${new Date(s.lastSyncAtMs).toISOString()} (lag ${ms(s.lagMs ?? 0)}, ${s.lastSyncMode} ${bytes(s.lastSyncBytes ?? 0)})` : 'no sync yet'}${s.lastError ? `; last error: ${s.lastError}` : ''}`;
}

export function replicaCommands(program: Command, connect: () => Cluster, done: (code: number) => void): void {
  const replica = command(program, 'replica', 'replicas in another Ferry cluster or a standalone Ferry node');
  command(replica, 'enable', 'an initial full copy, then changed blocks every interval; N recovery points kept there')
    .argument('<vm>', 'a VM name')
    .option('--to <URL>', "the replica cluster's API")
    .option('--token-file <FILE>', 'its token')
    .option('--interval <30s|5m|15m>', 'how often to sync (default 5m)')
    .option('--keep <N>', 'recovery points kept (default 3)')
    .option('--json', 'print as JSON')
    .action(async (vm: string, o: { to?: string; tokenFile?: string; interval?: string; keep?: string; json?: boolean }) => {
      if (!o.to || !o.tokenFile) throw errors.usage("'replica enable' needs --to URL (the replica cluster's API) and --token-file FILE (its token)");
      let token: string;
      try {
        token = fs.readFileSync(o.tokenFile, 'utf8').trim();
      } catch (e) {
        throw errors.usage(`cannot read --token-file ${o.tokenFile}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      if (o.keep !== undefined && !/^\d+$/.test(o.keep)) throw errors.usage(`--keep must be a whole number, got '${o.keep}'`);
      const s = await connect().api.call(
        replicaRoutes.enable,
        {
          params: { vm },
          body: {
            to: o.to,
            token,
            ...(o.interval !== undefined ? { interval: o.interval } : {}),
            ...(o.keep !== undefined ? { keep: numberOrText(o.keep) as number } : {}),
          },
        },
        { timeoutMs: 32 * 60_000 },
      );
      if (o.json) json(s);
      else print(`replicating ${vm} every ${s.interval}, keeping ${s.keep} recovery points; ${describe(s)}`);
      done(s.lastSyncAtMs ? 0 : 1);
    });
  command(replica, 'status', 'last sync, lag, bytes sent, health; replicas this cluster holds')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const st = await connect().api.call(replicaRoutes.status, {});
      if (o.json) return json(st);
      print(
        table(
          ['VM', 'TO', 'STATE', 'HEALTH', 'INTERVAL', 'LAST SYNC', 'LAG', 'SENT', 'NOTE'],
          st.outgoing.map((s) => [
            s.vm,
            s.target.url,
            s.state,
            s.health,
            s.interval,
            s.lastSyncAtMs ? new Date(s.lastSyncAtMs).toISOString() : '-',
            s.lagMs === null ? '-' : ms(s.lagMs),
            bytes(s.bytesSent),
            s.lastError ?? s.deferred ?? '',
          ]),
        ),
      );
      if (st.incoming.length) {
        print('');
        print(
          table(
            ['REPLICA OF', 'FROM', 'STATE', 'RECOVERY POINTS (newest last)'],
            st.incoming.map((r) => [r.vm, r.source.url, r.state, r.points.map((p) => `${p.id} ${new Date(p.atMs).toISOString()}`).join(', ') || 'none']),
          ),
        );
      }
    });
  command(replica, 'sync', 'sync now')
    .argument('<vm>', 'a VM name')
    .option('--json', 'print as JSON')
    .action(async (vm: string, o: { json?: boolean }) => {
      const r = await connect().api.call(replicaRoutes.sync, { params: { vm } }, { timeoutMs: 32 * 60_000 });
      if (o.json) json(r);
      else print(r.point ? `recovery point ${r.point.id}: ${r.point.mode}, ${bytes(r.point.bytes)}` : `no sync: ${r.status.deferred ?? 'deferred'}`);
      done(r.point ? 0 : 1);
    });
  command(replica, 'failover', 'planned (nothing lost), unplanned (a recovery point) or test failover')
    .argument('<vm>', 'a VM name')
    .option('--planned', 'stop here after a final sync, start there')
    .option('--test', 'start a copy on an isolated switch there; replication goes on')
    .option('--point <ID>', '(on the replica cluster) this recovery point')
    .option('--json', 'print as JSON')
    .action(async (vm: string, o: { planned?: boolean; test?: boolean; point?: string; json?: boolean }) => {
      const r = await connect().api.call(
        replicaRoutes.failover,
        { params: { vm }, body: { planned: o.planned === true, test: o.test === true, ...(o.point ? { point: o.point } : {}) } },
        { timeoutMs: 10 * 60_000 },
      );
      if (o.json) json(r);
      else print(`${r.mode} failover: VM ${r.vm} runs in cluster ${r.cluster} from recovery point ${r.point.id} (${new Date(r.point.atMs).toISOString()})`);
    });
  command(replica, 'reverse', '(where the VM runs after a failover) replicate back to the old primary')
    .argument('<vm>', 'a VM name')
    .option('--json', 'print as JSON')
    .action(async (vm: string, o: { json?: boolean }) => {
      const s = await connect().api.call(replicaRoutes.reverse, { params: { vm } }, { timeoutMs: 32 * 60_000 });
      if (o.json) json(s);
      else print(`replicating ${vm} back: ${describe(s)}`);
    });
  command(replica, 'disable', 'stop replicating; the replica side drops its copy')
    .argument('<vm>', 'a VM name')
    .option('--json', 'print as JSON')
    .action(async (vm: string, o: { json?: boolean }) => {
      const r = await connect().api.call(replicaRoutes.disable, { params: { vm } });
      if (o.json) json(r);
      else print(`replication of ${vm} disabled`);
    });
}

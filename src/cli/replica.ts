/**
 * `ferry replica …`: Replica (R5) from the command line; see src/replica/.
 */
import fs from 'node:fs';
import { errors } from '../domain/errors.js';
import type { RecoveryPoint } from '../controller/replica/incoming.js';
import type { ReplicaStatus } from '../controller/replica/replicas.js';
import type { IncomingView } from '../controller/replica/incoming.js';
import type { Args } from './args.js';
import type { Client } from './main.js';
import { bytes, json, ms, print, table } from './output.js';

const USAGE = 'replica enable VM --to URL --token-file FILE [--interval 30s|5m|15m] [--keep N], replica status, replica sync VM, replica failover VM [--planned|--test|--point ID], replica reverse VM, replica disable VM';

function describe(s: ReplicaStatus): string {
  return `${s.vm} → ${s.target.url}: ${s.health}, ${s.lastSyncAtMs ? `last sync ${new Date(s.lastSyncAtMs).toISOString()} (lag ${ms(s.lagMs ?? 0)}, ${s.lastSyncMode} ${bytes(s.lastSyncBytes ?? 0)})` : 'no sync yet'}${s.lastError ? `; last error: ${s.lastError}` : ''}`;
}

export async function replicaCommand(sub: string | undefined, a: Args, client: () => Client): Promise<number> {
  const enc = encodeURIComponent;
  switch (sub) {
    case 'enable': {
      a.allow('to', 'token-file', 'interval', 'keep', 'json').maxPositionals(1);
      const vm = a.positional(0, 'a VM name');
      const to = a.string('to');
      const tokenFile = a.string('token-file');
      if (!to || !tokenFile) throw errors.usage("'replica enable' needs --to URL (the replica cluster's API) and --token-file FILE (its token)");
      let token: string;
      try {
        token = fs.readFileSync(tokenFile, 'utf8').trim();
      } catch (e) {
        throw errors.usage(`cannot read --token-file ${tokenFile}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      const keep = a.string('keep');
      if (keep !== undefined && !/^\d+$/.test(keep)) throw errors.usage(`--keep must be a whole number, got '${keep}'`);
      const s = await client().call<ReplicaStatus>('PUT', `/api/v1/replicas/${enc(vm)}`, {
        to, token, ...(a.string('interval') !== undefined ? { interval: a.string('interval') } : {}), ...(keep !== undefined ? { keep: Number(keep) } : {}),
      }, 32 * 60_000);
      if (a.bool('json')) json(s);
      else print(`replicating ${vm} every ${s.interval}, keeping ${s.keep} recovery points; ${describe(s)}`);
      return s.lastSyncAtMs ? 0 : 1;
    }
    case 'status': {
      a.allow('json').maxPositionals(0);
      const st = await client().call<{ outgoing: ReplicaStatus[]; incoming: IncomingView[] }>('GET', '/api/v1/replicas');
      if (a.bool('json')) {
        json(st);
        return 0;
      }
      print(table(['VM', 'TO', 'STATE', 'HEALTH', 'INTERVAL', 'LAST SYNC', 'LAG', 'SENT', 'NOTE'], st.outgoing.map((s) => [
        s.vm, s.target.url, s.state, s.health, s.interval, s.lastSyncAtMs ? new Date(s.lastSyncAtMs).toISOString() : '-', s.lagMs === null ? '-' : ms(s.lagMs),
        bytes(s.bytesSent), s.lastError ?? s.deferred ?? '',
      ])));
      if (st.incoming.length) {
        print('');
        print(table(['REPLICA OF', 'FROM', 'STATE', 'RECOVERY POINTS (newest last)'], st.incoming.map((r) => [
          r.vm, r.source.url, r.state, r.points.map((p) => `${p.id} ${new Date(p.atMs).toISOString()}`).join(', ') || 'none',
        ])));
      }
      return 0;
    }
    case 'sync': {
      a.allow('json').maxPositionals(1);
      const vm = a.positional(0, 'a VM name');
      const r = await client().call<{ point: RecoveryPoint | null; status: ReplicaStatus }>('POST', `/api/v1/replicas/${enc(vm)}/sync`, {}, 32 * 60_000);
      if (a.bool('json')) json(r);
      else print(r.point ? `recovery point ${r.point.id}: ${r.point.mode}, ${bytes(r.point.bytes)}` : `no sync: ${r.status.deferred ?? 'deferred'}`);
      return r.point ? 0 : 1;
    }
    case 'failover': {
      a.allow('planned', 'test', 'point', 'json').maxPositionals(1);
      const vm = a.positional(0, 'a VM name');
      const r = await client().call<{ vm: string; cluster: string; point: RecoveryPoint; mode: string }>('POST', `/api/v1/replicas/${enc(vm)}/failover`, {
        planned: a.bool('planned'), test: a.bool('test'), ...(a.string('point') ? { point: a.string('point') } : {}),
      }, 10 * 60_000);
      if (a.bool('json')) json(r);
      else print(`${r.mode} failover: VM ${r.vm} runs in cluster ${r.cluster} from recovery point ${r.point.id} (${new Date(r.point.atMs).toISOString()})`);
      return 0;
    }
    case 'reverse': {
      a.allow('json').maxPositionals(1);
      const vm = a.positional(0, 'a VM name');
      const s = await client().call<ReplicaStatus>('POST', `/api/v1/replicas/${enc(vm)}/reverse`, {}, 32 * 60_000);
      if (a.bool('json')) json(s);
      else print(`replicating ${vm} back: ${describe(s)}`);
      return 0;
    }
    case 'disable': {
      a.allow('json').maxPositionals(1);
      const vm = a.positional(0, 'a VM name');
      const r = await client().call<ReplicaStatus>('DELETE', `/api/v1/replicas/${enc(vm)}`);
      if (a.bool('json')) json(r);
      else print(`replication of ${vm} disabled`);
      return 0;
    }
    default:
      throw errors.usage(`unknown command 'replica ${sub ?? ''}' (try: ${USAGE})`);
  }
}

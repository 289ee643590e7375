/**
 * Prometheus metrics (text exposition format 0.0.4), computed from the store
 * at each scrape: migrations by mode and status, their durations, downtime
 * and guest blackout as histograms, bytes transferred, the queue, and VMs
 * per node and state. Pure: records in, text out.
 */
import { isFinal, type MigrationRecord } from '../domain/migration.js';
import type { NodeRecord, VmRecord } from '../domain/records.js';

const DURATION_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300];
const PAUSE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

function label(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function histogram(out: string[], name: string, help: string, buckets: number[], values: number[]): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
  for (const b of buckets) out.push(`${name}_bucket${label({ le: String(b) })} ${values.filter((v) => v <= b).length}`);
  out.push(`${name}_bucket{le="+Inf"} ${values.length}`, `${name}_sum ${values.reduce((s, v) => s + v, 0)}`, `${name}_count ${values.length}`);
}

export function renderMetrics(migrations: MigrationRecord[], vms: VmRecord[], nodes: NodeRecord[]): string {
  const out: string[] = [];
  const done = migrations.filter((m) => isFinal(m.status));
  out.push('# HELP ferry_migrations_total Migrations that ended, by mode and status.', '# TYPE ferry_migrations_total counter');
  const byKey = new Map<string, number>();
  for (const m of done) byKey.set(`${m.mode}\u0000${m.status}`, (byKey.get(`${m.mode}\u0000${m.status}`) ?? 0) + 1);
  for (const mode of ['live', 'quick']) {
    for (const status of ['completed', 'failed', 'cancelled']) {
      out.push(`ferry_migrations_total${label({ mode, status })} ${byKey.get(`${mode}\u0000${status}`) ?? 0}`);
    }
  }
  const completed = done.filter((m) => m.status === 'completed');
  histogram(out, 'ferry_migration_duration_seconds', 'Total time of completed migrations.', DURATION_BUCKETS, completed.map((m) => (m.totalMs ?? 0) / 1000));
  histogram(out, 'ferry_migration_downtime_seconds', 'QEMU-reported downtime of completed migrations.', PAUSE_BUCKETS,
    completed.filter((m) => m.downtimeMs !== undefined).map((m) => m.downtimeMs! / 1000));
  histogram(out, 'ferry_migration_guest_blackout_seconds', 'Longest gap in the probe\'s pings to the guest during completed migrations.', PAUSE_BUCKETS,
    completed.filter((m) => m.guestBlackoutMs !== undefined).map((m) => m.guestBlackoutMs! / 1000));
  out.push('# HELP ferry_migration_transferred_bytes_total Bytes QEMU sent in completed migrations.', '# TYPE ferry_migration_transferred_bytes_total counter',
    `ferry_migration_transferred_bytes_total ${completed.reduce((s, m) => s + (m.transferredBytes ?? 0), 0)}`);
  out.push('# HELP ferry_migration_queue_length Migrations waiting for a slot.', '# TYPE ferry_migration_queue_length gauge',
    `ferry_migration_queue_length ${migrations.filter((m) => m.status === 'queued').length}`);
  out.push('# HELP ferry_migrations_running Migrations in progress.', '# TYPE ferry_migrations_running gauge',
    `ferry_migrations_running ${migrations.filter((m) => m.status === 'running').length}`);
  out.push('# HELP ferry_vms VMs by node and state.', '# TYPE ferry_vms gauge');
  const vmKey = new Map<string, number>();
  for (const v of vms) vmKey.set(`${v.node || 'none'}\u0000${v.state}`, (vmKey.get(`${v.node || 'none'}\u0000${v.state}`) ?? 0) + 1);
  for (const [k, n] of [...vmKey.entries()].sort()) {
    const [node, state] = k.split('\u0000') as [string, string];
    out.push(`ferry_vms${label({ node, state })} ${n}`);
  }
  out.push('# HELP ferry_node_up Whether a node is up (1), in maintenance (0.5) or down (0).', '# TYPE ferry_node_up gauge');
  for (const n of nodes) out.push(`ferry_node_up${label({ node: n.name, state: n.state })} ${n.state === 'up' ? 1 : n.state === 'maintenance' ? 0.5 : 0}`);
  return out.join('\n') + '\n';
}

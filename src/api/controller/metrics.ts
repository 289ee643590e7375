/**
 * Prometheus metrics with prom-client, computed from the store at each
 * scrape: migrations by mode and status, their durations, downtime and guest
 * blackout as histograms, bytes transferred, the queue, VMs per node and
 * state, nodes up; failover (host failures, fencing, HA restarts with their
 * detection and restart times, held VMs) counted from the events as this
 * controller records them; on etcd the leadership (a new value: a leader
 * change); plus the controller process's own metrics.
 */
import { type OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { isFinal, type MigrationRecord } from '../../domain/migration.js';
import type { ClusterEvent } from '../../domain/events.js';
import type { NicLink, NodeRecord, RunState, VmRecord } from '../../domain/records.js';
import type { ControllerServices } from '../../controller/services.js';

const DURATION_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300];
const PAUSE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** Failover's targets are detection within 10 s and a restart within 20 s of it. */
const FAILOVER_BUCKETS = [1, 2, 5, 8, 10, 15, 20, 30, 60];

export const metricsRoute = createRoute({
  method: 'get',
  path: '/metrics',
  tags: ['Cluster'],
  summary: 'Prometheus metrics',
  responses: { 200: { description: 'Text exposition format 0.0.4', content: { 'text/plain': { schema: z.string() } } } },
});

export interface Snapshot {
  migrations: MigrationRecord[];
  /** With what each VM's node reports of its process (run state, NIC link), when it runs. */
  vms: (VmRecord & { runState?: RunState; network?: NicLink })[];
  nodes: NodeRecord[];
}

/** A registry whose cluster metrics are filled from `snapshot()` at every scrape, and failover's from `subscribe`'s events. */
export function clusterMetrics(
  snapshot: () => Promise<Snapshot>,
  opts: {
    processMetrics?: boolean;
    subscribe?: (listener: (event: ClusterEvent) => void) => void;
    /** On etcd: the leadership the answering controller leads under, and its URL. */
    leadership?: () => { leadership: number; url: string } | undefined;
  } = {},
): Registry {
  const registry = new Registry();
  let current: Promise<Snapshot> | undefined;
  // Every collector of one scrape reads the same snapshot.
  const snap = () => (current ??= snapshot().finally(() => setImmediate(() => (current = undefined))));
  const done = async () => (await snap()).migrations.filter((m) => isFinal(m.status));
  const completed = async () => (await done()).filter((m) => m.status === 'completed');

  new Counter({
    name: 'ferry_migrations_total',
    help: 'Migrations that ended, by mode and status.',
    labelNames: ['mode', 'status'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const mode of ['live', 'quick']) for (const status of ['completed', 'failed', 'cancelled']) this.inc({ mode, status }, 0);
      for (const m of await done()) this.inc({ mode: m.mode, status: m.status });
    },
  });
  const histogram = (name: string, help: string, buckets: number[], values: (m: MigrationRecord[]) => number[]) =>
    new Histogram({
      name,
      help,
      buckets,
      registers: [registry],
      async collect() {
        this.reset();
        for (const v of values(await completed())) this.observe(v);
      },
    });
  histogram('ferry_migration_duration_seconds', 'Total time of completed migrations.', DURATION_BUCKETS, (l) => l.map((m) => (m.totalMs ?? 0) / 1000));
  histogram('ferry_migration_downtime_seconds', 'QEMU-reported downtime of completed migrations.', PAUSE_BUCKETS, (l) =>
    l.filter((m) => m.downtimeMs !== undefined).map((m) => m.downtimeMs! / 1000),
  );
  histogram('ferry_migration_guest_blackout_seconds', "Longest gap in the probe's pings to the guest during completed migrations.", PAUSE_BUCKETS, (l) =>
    l.filter((m) => m.guestBlackoutMs !== undefined).map((m) => m.guestBlackoutMs! / 1000),
  );
  new Counter({
    name: 'ferry_migration_transferred_bytes_total',
    help: 'Bytes QEMU sent in completed migrations.',
    registers: [registry],
    async collect() {
      this.reset();
      this.inc((await completed()).reduce((s, m) => s + (m.transferredBytes ?? 0), 0));
    },
  });
  new Gauge({
    name: 'ferry_migration_queue_length',
    help: 'Migrations waiting for a slot.',
    registers: [registry],
    async collect() {
      this.set((await snap()).migrations.filter((m) => m.status === 'queued').length);
    },
  });
  new Gauge({
    name: 'ferry_migrations_running',
    help: 'Migrations in progress.',
    registers: [registry],
    async collect() {
      this.set((await snap()).migrations.filter((m) => m.status === 'running').length);
    },
  });
  new Gauge({
    name: 'ferry_vms',
    help: 'VMs by node and state.',
    labelNames: ['node', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const v of (await snap()).vms) this.inc({ node: v.node || 'none', state: v.state });
    },
  });
  new Gauge({
    name: 'ferry_vm_network_connected',
    help: "Whether a running VM's NIC is plugged into its virtual switch (1) or cut off (0).",
    labelNames: ['vm', 'node'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const v of (await snap()).vms) if (v.network) this.set({ vm: v.name, node: v.node }, v.network === 'connected' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'ferry_vm_run_state',
    help: 'Running VMs by the run state their node reports (running, paused, io-error, failed, …).',
    labelNames: ['vm', 'node', 'run_state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const v of (await snap()).vms) if (v.runState) this.set({ vm: v.name, node: v.node, run_state: v.runState }, 1);
    },
  });
  new Gauge({
    name: 'ferry_node_up',
    help: 'Whether a node is up (1), in maintenance (0.5) or down (0).',
    labelNames: ['node', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const n of (await snap()).nodes) this.set({ node: n.name, state: n.state }, n.state === 'up' ? 1 : n.state === 'maintenance' ? 0.5 : 0);
    },
  });
  new Gauge({
    name: 'ferry_vms_ha_held',
    help: 'HA VMs held after repeated failed restarts (ferry vm start releases one).',
    registers: [registry],
    async collect() {
      this.set((await snap()).vms.filter((v) => v.haHeld).length);
    },
  });
  if (opts.subscribe) failoverMetrics(registry, opts.subscribe);
  const leadership = opts.leadership;
  if (leadership)
    new Gauge({
      name: 'ferry_controller_leadership',
      help: "On etcd: the leadership the leading controller (its URL) leads under, the leader key's create revision; each new value is a leader change (changes() counts them).",
      labelNames: ['controller'],
      registers: [registry],
      collect() {
        // No series at all while none leads (a labelled gauge without values shows none, not a 0).
        this.reset();
        const lead = leadership();
        if (lead) this.set({ controller: lead.url }, lead.leadership);
      },
    });
  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'ferry_controller_' });
  return registry;
}

/** Counters and histograms of failover, from its events (they count from this controller's start, as counters do). */
function failoverMetrics(registry: Registry, subscribe: (listener: (event: ClusterEvent) => void) => void): void {
  const failures = new Counter({
    name: 'ferry_node_failures_total',
    help: 'Hosts found failed: their lease lapsed.',
    labelNames: ['node'],
    registers: [registry],
  });
  const fenced = new Counter({
    name: 'ferry_vm_fenced_total',
    help: 'HA VMs a host fenced (killed) itself when its lease ran out.',
    labelNames: ['node'],
    registers: [registry],
  });
  const restarts = new Counter({
    name: 'ferry_ha_restarts_total',
    help: 'HA VMs started again: on another host after a failure (failover), or in place after their QEMU exited (in_place).',
    labelNames: ['kind'],
    registers: [registry],
  });
  const held = new Counter({ name: 'ferry_ha_holds_total', help: 'HA VMs held after repeated failed restarts.', registers: [registry] });
  const detection = new Histogram({
    name: 'ferry_failover_detection_seconds',
    help: "From a failed host's last lease renewal to its detection.",
    buckets: FAILOVER_BUCKETS,
    registers: [registry],
  });
  const restart = new Histogram({
    name: 'ferry_failover_restart_seconds',
    help: "From a host's detected failure to its HA VM running elsewhere.",
    buckets: FAILOVER_BUCKETS,
    registers: [registry],
  });
  for (const kind of ['failover', 'in_place']) restarts.inc({ kind }, 0);
  const seconds = (v: unknown) => (typeof v === 'number' ? v / 1000 : undefined);
  subscribe((e) => {
    switch (e.type) {
      case 'node.failed': {
        failures.inc({ node: e.node ?? '' });
        const s = seconds(e.data?.detectionMs);
        if (s !== undefined) detection.observe(s);
        break;
      }
      case 'vm.fenced':
        fenced.inc({ node: e.node ?? '' });
        break;
      case 'vm.failover': {
        restarts.inc({ kind: 'failover' });
        const s = seconds(e.data?.sinceDetectionMs);
        if (s !== undefined) restart.observe(s);
        break;
      }
      case 'vm.restarted':
        restarts.inc({ kind: 'in_place' });
        break;
      case 'vm.ha-held':
        held.inc();
        break;
    }
  });
}

export function mountMetrics(app: OpenAPIHono, s: ControllerServices): void {
  const registry = clusterMetrics(
    async () => ({
      migrations: await s.migrations.list(),
      vms: await Promise.all((await s.vms.list()).map((v) => s.viewVm(v))),
      nodes: await s.nodes.list(),
    }),
    {
      subscribe: (listener) => s.events.subscribe((_id, e) => listener(e)),
      leadership: () => {
        const n = s.leadership?.();
        return n === undefined ? undefined : { leadership: n, url: s.info.url() };
      },
    },
  );
  app.openapi(metricsRoute, async (c) => {
    c.header('content-type', registry.contentType);
    return c.body(await registry.metrics(), 200) as never;
  });
}

/**
 * Replica (R5), the primary's side: a running VM's disk is replicated
 * asynchronously to another Ferry cluster (or a standalone Ferry node),
 * reached through its API with its token. The first sync copies the whole
 * disk, every later one only the blocks changed since (QEMU's persistent
 * bitmap, see qemu/replica-job.ts); the replica side keeps each sync as a
 * recovery point (see incoming.ts).
 *
 * Every `interval` (30s, 5m or 15m, as Hyper-V Replica offers) the
 * controller syncs each replicated VM that runs and is not migrating or
 * being backed up (those wait for the next second). `status` reports the
 * last sync, the lag (now minus the last recovery point's point in time),
 * bytes sent and the health: normal; warning when the lag exceeds twice the
 * interval or the last sync failed; critical when the replica side could
 * not be reached. A migration cancels a sync in flight (its changed blocks
 * stay marked) and the next interval picks it up on the new node.
 *
 * Failover: `--planned` pauses the VM, runs a final sync, stops it here and
 * starts it on the replica side from that last point (nothing lost);
 * unplanned (the primary is gone: run it on the replica cluster) starts the
 * VM there from the newest or a chosen recovery point; `--test` starts a
 * copy there on an isolated switch while replication goes on. `reverse`,
 * run where the VM now runs, replicates it back to its old primary.
 *
 * Store keys: replicas/<vm> → ReplicaRecord; replica-tokens/<vm> → the
 * replica side's token (never shown).
 */
import type { Controller } from '../controller.js';
import { readEndpoint } from '../../config/cluster-config.js';
import { validateName } from '../../domain/validate.js';
import { callJson } from '../../api/http.js';
import { ErrorCode, FerryError, errors, isFerryError, toFerryError } from '../../domain/errors.js';
import { VmState } from '../../domain/records.js';
import type { NbdEndpoint } from '../../qemu/nbd-mirror.js';
import { type ReplicaHealth, type ReplicaRecord, type ReplicaStatus, REPLICA_INTERVALS, REPLICA_KEEP, replicaHealth } from '../../domain/replicas.js';
export { type ReplicaHealth, type ReplicaRecord, type ReplicaStatus, REPLICA_INTERVALS, REPLICA_KEEP, replicaHealth };
const TARGET_TIMEOUT_MS = 5000;
import { IncomingReplicas, type IncomingView, type RecoveryPoint } from './incoming.js';

export class Replicas {
  readonly incoming: IncomingReplicas;
  private readonly syncing = new Map<string, Promise<void>>();
  /** Syncs cancelled because a migration moves the VM: not a failure. */
  private readonly cancelledForMigration = new Set<string>();

  constructor(private readonly c: Controller) {
    this.incoming = new IncomingReplicas(c);
  }

  private key(vm: string): string {
    return `replicas/${vm}`;
  }

  private async token(vm: string): Promise<string> {
    const t = (await this.c.store.get<string>(`replica-tokens/${vm}`))?.value;
    if (!t) throw errors.internal(`no token stored for the replica of '${vm}'`);
    return t;
  }

  /** Calls the replica side's API. */
  private async remote<T>(vm: string, method: string, path: string, body?: unknown, timeoutMs = TARGET_TIMEOUT_MS): Promise<T> {
    const r = await this.get(vm);
    return callJson<T>(r.target.url, method, path, body, { token: await this.token(vm), timeoutMs });
  }

  async find(vm: string): Promise<ReplicaRecord | undefined> {
    return (await this.c.store.get<ReplicaRecord>(this.key(vm)))?.value;
  }

  async get(vm: string): Promise<ReplicaRecord> {
    const r = await this.find(vm);
    if (!r) throw errors.invalid('vm', `VM '${vm}' is not replicated (see 'ferry replica status')`);
    return r;
  }

  private async patch(vm: string, p: Partial<ReplicaRecord>): Promise<ReplicaRecord> {
    const next = { ...(await this.get(vm)), ...p };
    await this.c.store.put(this.key(vm), next);
    return next;
  }

  /** This cluster's own API URL (the replica side stores it for `reverse`). */
  private ownUrl(): string {
    const e = readEndpoint(this.c.layout, 'controller');
    if (!e) throw errors.internal('the controller has no API endpoint recorded');
    return e.url;
  }

  async enable(vm: string, body: { to?: unknown; token?: unknown; interval?: unknown; keep?: unknown }): Promise<ReplicaStatus> {
    validateName('VM', vm);
    const interval = body.interval ?? '5m';
    if (typeof interval !== 'string' || !(interval in REPLICA_INTERVALS)) throw errors.invalid('interval', `--interval must be one of ${Object.keys(REPLICA_INTERVALS).join(', ')}, got '${String(interval)}'`);
    const keep = body.keep ?? 3;
    if (typeof keep !== 'number' || !Number.isInteger(keep) || keep < REPLICA_KEEP.min || keep > REPLICA_KEEP.max) {
      throw errors.invalid('keep', `--keep must be a whole number from ${REPLICA_KEEP.min} to ${REPLICA_KEEP.max}, got '${String(keep)}'`);
    }
    let url: URL;
    try {
      url = new URL(String(body.to));
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
    } catch {
      throw errors.invalid('to', `--to must be the replica cluster's API URL (http://HOST:PORT), got '${String(body.to)}'`);
    }
    if (typeof body.token !== 'string' || !body.token) throw errors.invalid('token', "a replica needs the replica cluster's API token (--token-file FILE)");
    const v = await this.c.vm(vm);
    if (v.state !== VmState.Running) throw errors.invalidState(`VM '${vm}' is ${v.state}: replication starts from a running VM`);
    const existing = await this.find(vm);
    if (existing?.state === 'replicating') throw errors.alreadyExists('replica of VM', vm);
    const base = url.origin;
    const info = await callJson<{ clusterId: string }>(base, 'GET', '/api/v1/replica-target', undefined, { token: body.token, timeoutMs: TARGET_TIMEOUT_MS })
      .catch((e: unknown) => {
        const err = toFerryError(e);
        if (err.code === ErrorCode.Unauthorized) throw errors.invalid('token', `cannot use ${base} as a replica target: it refused the token (wrong --token-file?)`);
        throw new FerryError(err.code, `cannot use ${base} as a replica target: ${err.message}`);
      });
    if (info.clusterId === this.c.config.id) throw errors.invalid('to', `${base} is this same cluster: a replica goes to a host outside it (another Ferry cluster or a standalone Ferry node)`);
    await callJson(base, 'POST', '/api/v1/replica-in', {
      vm, interval, keep, spec: { memoryMiB: v.memoryMiB, cpus: v.cpus, diskGiB: v.diskGiB, workload: v.workload },
      source: { clusterId: this.c.config.id, url: this.ownUrl(), token: this.c.token },
    }, { token: body.token, timeoutMs: 60_000 });
    await this.c.store.put(`replica-tokens/${vm}`, body.token);
    const r: ReplicaRecord = {
      vm, target: { url: base, clusterId: info.clusterId }, interval, intervalMs: REPLICA_INTERVALS[interval]!, keep,
      state: 'replicating', createdAtMs: this.c.clock.nowMs(), bytesSent: 0, syncs: 0,
    };
    await this.c.store.put(this.key(vm), r);
    await this.c.event({ type: 'replica.enabled', vm, message: `replicating ${vm} to ${base} (cluster ${info.clusterId}) every ${interval}, keeping ${keep} recovery points` });
    // The initial full copy, now.
    await this.sync(vm).catch(() => {});
    return this.statusOf(vm);
  }

  private toStatus(r: ReplicaRecord): ReplicaStatus {
    const now = this.c.clock.nowMs();
    return { ...r, lagMs: r.lastSyncAtMs === undefined ? null : now - r.lastSyncAtMs, health: replicaHealth(r, now), syncing: this.syncing.has(r.vm) };
  }

  async statusOf(vm: string): Promise<ReplicaStatus> {
    return this.toStatus(await this.get(vm));
  }

  async status(): Promise<{ outgoing: ReplicaStatus[]; incoming: IncomingView[] }> {
    const outgoing = (await this.c.store.list<ReplicaRecord>('replicas/')).map((e) => this.toStatus(e.value));
    return { outgoing, incoming: (await this.incoming.list()).map(IncomingReplicas.view) };
  }

  /** Called every second: starts the syncs that are due. */
  async tick(): Promise<void> {
    const now = this.c.clock.nowMs();
    for (const { value: r } of await this.c.store.list<ReplicaRecord>('replicas/')) {
      if (r.state !== 'replicating' || this.syncing.has(r.vm)) continue;
      if (r.lastAttemptAtMs !== undefined && now - r.lastAttemptAtMs < r.intervalMs) continue;
      void this.sync(r.vm).catch(() => {});
    }
  }

  /** One sync now (also `ferry replica sync VM`). Resolves with the new recovery point. */
  async sync(vm: string, opts: { final?: boolean } = {}): Promise<RecoveryPoint | undefined> {
    while (this.syncing.has(vm)) await this.syncing.get(vm);
    const p = this.syncOnce(vm, opts);
    const done = p.then(() => {}, () => {}).finally(() => this.syncing.delete(vm));
    this.syncing.set(vm, done);
    return p;
  }

  isSyncing(vm: string): boolean {
    return this.syncing.has(vm);
  }

  private async syncOnce(vm: string, opts: { final?: boolean } = {}): Promise<RecoveryPoint | undefined> {
    const r = await this.get(vm);
    if (r.state !== 'replicating') throw errors.invalidState(`the replica of '${vm}' is ${r.state}`);
    const v = await this.c.vm(vm);
    const defer = v.migrationId ? 'the VM is migrating' : this.c.backups.runningFor(vm) ? 'a backup of the VM is running' : v.state !== VmState.Running ? `the VM is ${v.state}` : undefined;
    if (defer && !opts.final) {
      await this.patch(vm, { deferred: defer });
      return undefined;
    }
    const attemptAt = this.c.clock.nowMs();
    await this.patch(vm, { lastAttemptAtMs: attemptAt, deferred: undefined });
    let nbd: NbdEndpoint;
    try {
      nbd = await this.remote<NbdEndpoint>(vm, 'POST', `/api/v1/replica-in/${vm}/sync`, {});
    } catch (e) {
      const err = toFerryError(e);
      const unreachable = isFerryError(err, ErrorCode.AgentUnreachable) || isFerryError(err, ErrorCode.Timeout);
      await this.patch(vm, { lastError: `replica side: ${err.message}`, unreachable });
      await this.c.event({ type: 'replica.sync-failed', vm, message: `replica sync of ${vm} failed: ${err.message}` });
      throw err;
    }
    const id = `p-${attemptAt.toString(36)}`;
    try {
      const res = await (await this.c.agentFor(v.node)).replicaSync(vm, { ...nbd, mode: r.syncs === 0 ? 'full' : 'incremental' });
      const point: RecoveryPoint = { id, atMs: attemptAt, bytes: res.bytes, mode: res.mode };
      await this.remote(vm, 'POST', `/api/v1/replica-in/${vm}/sync/close`, { point }, 60_000);
      await this.patch(vm, {
        lastSyncAtMs: attemptAt, lastSyncMs: this.c.clock.nowMs() - attemptAt, lastSyncBytes: res.bytes, lastSyncMode: res.mode,
        bytesSent: r.bytesSent + res.bytes, syncs: r.syncs + 1, lastError: undefined, unreachable: false,
      });
      await this.c.event({ type: 'replica.synced', vm, message: `replica of ${vm}: ${res.mode} sync, ${res.bytes} bytes, recovery point ${id}`, data: { point } });
      return point;
    } catch (e) {
      const err = toFerryError(e);
      await this.remote(vm, 'POST', `/api/v1/replica-in/${vm}/sync/close`, {}).catch(() => {});
      if (this.cancelledForMigration.has(vm)) {
        // Its blocks stay marked: the next interval sends them from the VM's new node.
        await this.patch(vm, { deferred: 'the VM is migrating' });
        throw err;
      }
      await this.patch(vm, { lastError: err.message, unreachable: false });
      await this.c.event({ type: 'replica.sync-failed', vm, message: `replica sync of ${vm} failed: ${err.message}` });
      throw err;
    }
  }

  /** A migration is about to move the VM: cancel a sync in flight and wait for it to end. */
  async pauseFor(vm: string): Promise<void> {
    const running = this.syncing.get(vm);
    if (!running) return;
    const v = await this.c.vm(vm);
    this.cancelledForMigration.add(vm);
    await (await this.c.agentFor(v.node)).cancelReplicaSync(vm).catch(() => {});
    await running;
    this.cancelledForMigration.delete(vm);
  }

  /**
   * Failover. On the primary: --planned (pause, final sync, stop here,
   * start there), --test (a copy there on an isolated switch), or unplanned
   * (start there; the VM must not run here). On the replica side: unplanned
   * or --test, from the newest or a chosen recovery point.
   */
  async failover(vm: string, opts: { planned?: boolean; test?: boolean; point?: string }): Promise<{ vm: string; cluster: string; point: RecoveryPoint; mode: string }> {
    validateName('VM', vm);
    if (opts.planned && (opts.test || opts.point)) throw errors.invalid('planned', '--planned fails over to the final sync: it takes no --point or --test');
    const out = await this.find(vm);
    const mode = opts.planned ? 'planned' : opts.test ? 'test' : 'unplanned';
    if (!out || out.state !== 'replicating') {
      const inc = await this.incoming.find(vm);
      if (!inc) throw errors.invalid('vm', `VM '${vm}' is not replicated from or to this cluster (see 'ferry replica status')`);
      if (opts.planned) throw errors.invalid('planned', `a planned failover runs on the primary cluster (${inc.source.url}), which stops the VM and sends the final sync`);
      const res = await this.incoming.failover(vm, { test: opts.test, ...(opts.point ? { point: opts.point } : {}) });
      return { vm: res.vm.name, cluster: this.c.config.id, point: res.point, mode };
    }
    if (opts.test) {
      const res = await this.remote<{ vm: { name: string }; point: RecoveryPoint }>(vm, 'POST', `/api/v1/replica-in/${vm}/failover`, { test: true, ...(opts.point ? { point: opts.point } : {}) }, 120_000);
      return { vm: res.vm.name, cluster: out.target.clusterId, point: res.point, mode };
    }
    const v = await this.c.vm(vm);
    if (!opts.planned) {
      if (v.state === VmState.Running) throw errors.invalidState(`VM '${vm}' still runs here: use --planned (nothing lost), or stop it first`);
      const res = await this.remote<{ vm: { name: string }; point: RecoveryPoint }>(vm, 'POST', `/api/v1/replica-in/${vm}/failover`, opts.point ? { point: opts.point } : {}, 120_000);
      await this.patch(vm, { state: 'failed-over' });
      return { vm: res.vm.name, cluster: out.target.clusterId, point: res.point, mode };
    }
    if (v.state !== VmState.Running || v.migrationId) throw errors.invalidState(`VM '${vm}' is ${v.migrationId ? 'migrating' : v.state}: a planned failover starts from the running VM`);
    await this.pauseFor(vm);
    const agent = await this.c.agentFor(v.node);
    await agent.pause(vm);
    let point: RecoveryPoint | undefined;
    try {
      // Paused: no write is lost between this last sync and the start over there.
      point = await this.sync(vm, { final: true });
      if (!point) throw errors.internal('the final sync did not run');
    } catch (e) {
      await agent.resume(vm).catch(() => {});
      throw new FerryError(toFerryError(e).code, `planned failover of '${vm}' stopped, the VM runs on here: final sync failed: ${toFerryError(e).message}`);
    }
    await this.c.stopVm(vm);
    try {
      const res = await this.remote<{ vm: { name: string }; point: RecoveryPoint }>(vm, 'POST', `/api/v1/replica-in/${vm}/failover`, { point: point.id }, 120_000);
      await this.patch(vm, { state: 'failed-over' });
      await this.c.event({ type: 'replica.failover', vm, message: `planned failover of ${vm} to ${out.target.url}: stopped here after the final sync ${point.id}` });
      return { vm: res.vm.name, cluster: out.target.clusterId, point: res.point, mode };
    } catch (e) {
      // It could not start over there: it runs here again, from its own disk (nothing lost).
      await this.c.startVm(vm).catch(() => {});
      throw new FerryError(toFerryError(e).code, `planned failover of '${vm}' failed on the replica side, the VM was started here again: ${toFerryError(e).message}`);
    }
  }

  /** Run where the VM runs after a failover: replicate it back to its old primary. */
  async reverse(vm: string): Promise<ReplicaStatus> {
    validateName('VM', vm);
    const inc = await this.incoming.find(vm);
    if (!inc || inc.state !== 'failed-over') throw errors.invalidState(`VM '${vm}' has not failed over to this cluster: reverse runs where the VM runs after a failover`);
    const status = await this.enable(vm, { to: inc.source.url, token: inc.source.token, interval: inc.interval, keep: inc.keep });
    await this.incoming.remove(vm, 'reversed');
    return status;
  }

  /** Stops replicating; the replica side drops its copy (if it answers) and the record goes. */
  async disable(vm: string): Promise<ReplicaRecord> {
    const r = await this.get(vm);
    await this.pauseFor(vm);
    if (r.state === 'replicating') await this.remote(vm, 'DELETE', `/api/v1/replica-in/${vm}`).catch(() => {});
    await this.c.store.delete(this.key(vm));
    await this.c.store.delete(`replica-tokens/${vm}`);
    await this.c.event({ type: 'replica.disabled', vm, message: `replication of ${vm} disabled` });
    return r;
  }

  /** A replica arriving for a VM this cluster used to replicate out (after `reverse` there): the old record goes. */
  async supersede(vm: string): Promise<void> {
    const r = await this.find(vm);
    if (r && r.state === 'failed-over') {
      await this.c.store.delete(this.key(vm));
      await this.c.store.delete(`replica-tokens/${vm}`);
    }
  }
}

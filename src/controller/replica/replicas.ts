/**
 * Replica (R5), the primary's side: a running VM's disk is replicated
 * asynchronously to another Ferry cluster (or a standalone Ferry node),
 * reached through its API with its token. The first sync copies the whole
 * disk, every later one only the blocks changed since (QEMU's persistent
 * bitmap); the replica side keeps each sync as a recovery point.
 *
 * One sync is a phase table, saved on `replica-syncs/<vm>`:
 *
 *   open ──────────────► copy ──────────────► close ─commit─► record
 *   (the replica side    (the VM's QEMU       (the replica side keeps
 *    opens an NBD        writes the changed    a recovery point)
 *    export) undo: close blocks into it)
 *
 * Every `interval` the controller syncs each replicated VM that runs and no
 * migration or backup holds (those wait for the next second). A migration
 * preempts a sync in flight (its changed blocks stay marked) and the next
 * interval picks it up on the new node. `status` reports the last sync, the
 * lag, bytes sent and the health.
 *
 * Failover: `--planned` pauses the VM, runs a final sync, stops it here and
 * starts it on the replica side from that last point (nothing lost);
 * unplanned starts the VM there from the newest or a chosen recovery point;
 * `--test` starts a copy there on an isolated switch while replication
 * goes on. `reverse`, run where the VM now runs, replicates it back.
 *
 * Store keys: replicas/<vm> → ReplicaRecord; replica-tokens/<vm> → the
 * replica side's token (never shown); replica-syncs/<vm> → the sync in flight.
 */
import type { Clock } from '../../domain/clock.js';
import { ErrorCode, FerryError, errors, isFerryError, toFerryError } from '../../domain/errors.js';
import type { PhasedRecord } from '../../domain/phases.js';
import { VmState } from '../../domain/records.js';
import { type RecoveryPoint, type ReplicaRecord, type ReplicaStatus, REPLICA_INTERVALS, replicaHealth } from '../../domain/replicas.js';
import { VmOperation } from '../../domain/vm-locks.js';
import type { EventSink } from '../../ports/events.js';
import type { VmLocks } from '../../ports/locks.js';
import type { Logger } from '../../ports/logger.js';
import type { NodeDirectory } from '../../ports/node-directory.js';
import type { RemoteCluster, RemoteConnector } from '../../ports/remote-cluster.js';
import { type ClusterStore, update, updateRecord } from '../../ports/store.js';
import type { VmRepository } from '../../ports/vm-repository.js';
import { preemptedBy } from '../core/locks.js';
import { type Phase, type PhaseGate, PhaseRunner } from '../core/phase-runner.js';
import { IncomingReplicas } from './incoming.js';

export type { ReplicaRecord, ReplicaStatus };

/** How long the replica side has to answer a call. */
const TARGET_TIMEOUT_MS = 5000;

/** One sync in flight (saved so a restarted controller can close it). */
interface SyncRecord extends PhasedRecord {
  vm: string;
  /** The recovery point it makes. */
  point: string;
  startedAtMs: number;
  mode: 'full' | 'incremental';
  node: string;
  result?: RecoveryPoint;
}

export interface ReplicasDeps {
  store: ClusterStore;
  vms: VmRepository;
  nodes: NodeDirectory;
  locks: VmLocks;
  events: EventSink;
  clock: Clock;
  log: Logger;
  remote: RemoteConnector;
  incoming: IncomingReplicas;
  /** This cluster, as the replica side stores it for `reverse`. */
  self: { clusterId: string; url: () => string; token: string };
  stopVm: (vm: string) => Promise<unknown>;
  startVm: (vm: string) => Promise<unknown>;
  gate?: PhaseGate;
}

export class Replicas {
  readonly incoming: IncomingReplicas;
  /** Syncs running in this process, by VM. */
  private readonly syncing = new Map<string, Promise<unknown>>();
  /** Stops a sync in flight (disable, planned failover). */
  private readonly aborts = new Map<string, AbortController>();

  constructor(private readonly d: ReplicasDeps) {
    this.incoming = d.incoming;
  }

  private key(vm: string): string {
    return `replicas/${vm}`;
  }

  private async token(vm: string): Promise<string> {
    const t = (await this.d.store.get<string>(`replica-tokens/${vm}`))?.value;
    if (!t) throw errors.internal(`no token stored for the replica of '${vm}'`);
    return t;
  }

  /** The replica side of a VM's replica. */
  private async far(vm: string, timeoutMs = TARGET_TIMEOUT_MS): Promise<RemoteCluster> {
    const r = await this.get(vm);
    return this.d.remote(r.target.url, await this.token(vm), timeoutMs);
  }

  async find(vm: string): Promise<ReplicaRecord | undefined> {
    return (await this.d.store.get<ReplicaRecord>(this.key(vm)))?.value;
  }

  async get(vm: string): Promise<ReplicaRecord> {
    const r = await this.find(vm);
    if (!r) throw errors.invalid('vm', `VM '${vm}' is not replicated (see 'ferry replica status')`);
    return r;
  }

  private patch(vm: string, p: Partial<ReplicaRecord>): Promise<ReplicaRecord> {
    return update<ReplicaRecord>(this.d.store, this.key(vm), (cur) => {
      if (!cur) throw errors.invalid('vm', `VM '${vm}' is not replicated`);
      const next = { ...cur, ...p };
      for (const [k, v] of Object.entries(p)) if (v === undefined) delete (next as Record<string, unknown>)[k];
      return next;
    });
  }

  async enable(vm: string, body: { to: string; token: string; interval: string; keep: number }): Promise<ReplicaStatus> {
    const { interval, keep } = body;
    const v = await this.d.vms.get(vm);
    if (v.state !== VmState.Running) throw errors.invalidState(`VM '${vm}' is ${v.state}: replication starts from a running VM`);
    const existing = await this.find(vm);
    if (existing?.state === 'replicating') throw errors.alreadyExists('replica of VM', vm);
    const base = new URL(body.to).origin;
    const far = this.d.remote(base, body.token, TARGET_TIMEOUT_MS);
    const info = await far.replicaTarget().catch((e: unknown) => {
      const err = toFerryError(e);
      if (err.code === ErrorCode.Unauthorized)
        throw errors.invalid('token', `cannot use ${base} as a replica target: it refused the token (wrong --token-file?)`);
      throw new FerryError(err.code, `cannot use ${base} as a replica target: ${err.message}`);
    });
    if (info.clusterId === this.d.self.clusterId) {
      throw errors.invalid('to', `${base} is this same cluster: a replica goes to a host outside it (another Ferry cluster or a standalone Ferry node)`);
    }
    await this.d.remote(base, body.token, 60_000).register({
      vm,
      interval,
      keep,
      spec: { memoryMiB: v.memoryMiB, cpus: v.cpus, diskGiB: v.diskGiB, workload: v.workload },
      source: { clusterId: this.d.self.clusterId, url: this.d.self.url(), token: this.d.self.token },
    });
    await this.d.store.put(`replica-tokens/${vm}`, body.token);
    const r: ReplicaRecord = {
      vm,
      target: { url: base, clusterId: info.clusterId },
      interval,
      intervalMs: REPLICA_INTERVALS[interval]!,
      keep,
      state: 'replicating',
      createdAtMs: this.d.clock.nowMs(),
      bytesSent: 0,
      syncs: 0,
    };
    await this.d.store.put(this.key(vm), r);
    await this.d.events.emit({
      type: 'replica.enabled',
      vm,
      message: `replicating ${vm} to ${base} (cluster ${info.clusterId}) every ${interval}, keeping ${keep} recovery points`,
    });
    // The initial full copy, now.
    await this.sync(vm).catch(() => {});
    return this.statusOf(vm);
  }

  private toStatus(r: ReplicaRecord): ReplicaStatus {
    const now = this.d.clock.nowMs();
    return { ...r, lagMs: r.lastSyncAtMs === undefined ? null : now - r.lastSyncAtMs, health: replicaHealth(r, now), syncing: this.syncing.has(r.vm) };
  }

  async statusOf(vm: string): Promise<ReplicaStatus> {
    return this.toStatus(await this.get(vm));
  }

  async status(): Promise<{ outgoing: ReplicaStatus[]; incoming: ReturnType<typeof IncomingReplicas.view>[] }> {
    const outgoing = (await this.d.store.list<ReplicaRecord>('replicas/')).map((e) => this.toStatus(e.value));
    return { outgoing, incoming: (await this.incoming.list()).map(IncomingReplicas.view) };
  }

  /** Called every second: starts the syncs that are due. */
  async tick(): Promise<void> {
    const now = this.d.clock.nowMs();
    for (const { value: r } of await this.d.store.list<ReplicaRecord>('replicas/')) {
      if (r.state !== 'replicating' || this.syncing.has(r.vm)) continue;
      if (r.lastAttemptAtMs !== undefined && now - r.lastAttemptAtMs < r.intervalMs) continue;
      void this.sync(r.vm).catch(() => {});
    }
  }

  /** One sync now (also `ferry replica sync VM`). Resolves with the new recovery point. */
  async sync(vm: string, opts: { final?: boolean } = {}): Promise<RecoveryPoint | undefined> {
    while (this.syncing.has(vm)) await this.syncing.get(vm)!.catch(() => {});
    const p = this.syncOnce(vm, opts);
    this.syncing.set(vm, p);
    try {
      return await p;
    } finally {
      this.syncing.delete(vm);
    }
  }

  /** Why a due sync waits now, if it does. */
  private deferral(vm: string, state: VmState): string | undefined {
    if (this.d.locks.isHeld(vm, VmOperation.Migration)) return 'the VM is migrating';
    if (this.d.locks.isHeld(vm, VmOperation.Backup, VmOperation.DiskFreeze)) return 'a backup of the VM is running';
    if (state !== VmState.Running) return `the VM is ${state}`;
    return undefined;
  }

  private async syncOnce(vm: string, opts: { final?: boolean }): Promise<RecoveryPoint | undefined> {
    const r = await this.get(vm);
    if (r.state !== 'replicating') throw errors.invalidState(`the replica of '${vm}' is ${r.state}`);
    const v = await this.d.vms.get(vm);
    const defer = opts.final ? undefined : this.deferral(vm, v.state);
    if (defer) {
      await this.patch(vm, { deferred: defer });
      return undefined;
    }
    const lease = await this.d.locks.acquire(vm, VmOperation.ReplicaSync, { waitMs: 60_000 }).catch(async (e: unknown) => {
      if (opts.final) throw e;
      await this.patch(vm, { deferred: toFerryError(e).message });
      return undefined;
    });
    if (!lease) return undefined;
    try {
      const attemptAt = this.d.clock.nowMs();
      await this.patch(vm, { lastAttemptAtMs: attemptAt, deferred: undefined });
      const sync: SyncRecord = {
        vm,
        point: `p-${attemptAt.toString(36)}`,
        startedAtMs: attemptAt,
        mode: r.syncs === 0 ? 'full' : 'incremental',
        node: v.node,
        phase: 'open',
      };
      await this.d.store.put(`replica-syncs/${vm}`, sync);
      const ac = new AbortController();
      this.aborts.set(vm, ac);
      const outcome = await this.runner(vm)
        .run(AbortSignal.any([lease.signal, ac.signal]))
        .finally(() => this.aborts.delete(vm));
      const done = (await this.d.store.get<SyncRecord>(`replica-syncs/${vm}`))?.value;
      await this.d.store.delete(`replica-syncs/${vm}`);
      if (outcome.ok && done?.result) return done.result;
      const err = outcome.error ?? errors.aborted(`the replica sync of '${vm}'`);
      if (preemptedBy(lease.signal) === VmOperation.Migration) {
        // Its blocks stay marked: the next interval sends them from the VM's new node.
        await this.patch(vm, { deferred: 'the VM is migrating' });
        throw err;
      }
      if (done?.phase !== 'open') {
        await this.patch(vm, { lastError: err.message, unreachable: false });
        await this.d.events.emit({ type: 'replica.sync-failed', vm, message: `replica sync of ${vm} failed: ${err.message}` });
      }
      throw err;
    } finally {
      lease.release();
    }
  }

  private runner(vm: string): PhaseRunner<SyncRecord> {
    const key = `replica-syncs/${vm}`;
    const load = async () => {
      const s = (await this.d.store.get<SyncRecord>(key))?.value;
      if (!s) throw errors.internal(`no sync of '${vm}' in flight`);
      return s;
    };
    const save = (change: (s: SyncRecord) => SyncRecord) => updateRecord<SyncRecord>(this.d.store, this.d.clock, key, (cur) => change(cur!));
    return new PhaseRunner<SyncRecord>({
      operation: 'replica-sync',
      ...(this.d.gate ? { gate: this.d.gate } : {}),
      phases: this.syncPhases(vm, load, save),
      record: { load, save },
      undo: {
        'close-remote': async ({ vm: name }: { vm: string }) => {
          await (await this.far(name)).closeSync(name);
        },
      },
      clock: this.d.clock,
    });
  }

  private syncPhases(vm: string, load: () => Promise<SyncRecord>, save: (change: (s: SyncRecord) => SyncRecord) => Promise<SyncRecord>): Phase[] {
    let nbd: Awaited<ReturnType<RemoteCluster['openSync']>> | undefined;
    let result: RecoveryPoint | undefined;
    return [
      {
        // The replica side starts an NBD export of its copy.
        name: 'open',
        run: async (ctx) => {
          try {
            nbd = await (await this.far(vm)).openSync(vm);
          } catch (e) {
            const err = toFerryError(e);
            const unreachable = isFerryError(err, ErrorCode.AgentUnreachable) || isFerryError(err, ErrorCode.Timeout);
            await this.patch(vm, { lastError: `replica side: ${err.message}`, unreachable });
            await this.d.events.emit({ type: 'replica.sync-failed', vm, message: `replica sync of ${vm} failed: ${err.message}` });
            throw err;
          }
          await ctx.onUndo({ action: 'close-remote', args: { vm } });
        },
      },
      {
        // The VM's QEMU writes the changed blocks into it (all of them the first time).
        name: 'copy',
        run: async (ctx) => {
          const s = await load();
          const agent = await this.d.nodes.agent(s.node);
          const onAbort = () => void agent.cancelReplicaSync(vm).catch(() => {});
          ctx.signal.addEventListener('abort', onAbort, { once: true });
          try {
            const res = await agent.replicaSync(vm, nbd!, s.mode);
            if (ctx.signal.aborted) throw errors.aborted(`the replica sync of '${vm}'`);
            result = { id: s.point, atMs: s.startedAtMs, bytes: res.bytes, mode: res.mode };
          } finally {
            ctx.signal.removeEventListener('abort', onAbort);
          }
        },
      },
      {
        // The replica side keeps it as a recovery point.
        name: 'close',
        run: async (ctx) => {
          await (await this.far(vm, 60_000)).closeSync(vm, result!);
          await ctx.commit();
          await save((s) => ({ ...s, result: result! }));
        },
      },
      {
        name: 'record',
        onRestart: 'rerun',
        run: async () => {
          const s = await load();
          const point = s.result!;
          const r = await this.get(vm);
          await this.patch(vm, {
            lastSyncAtMs: point.atMs,
            lastSyncMs: this.d.clock.nowMs() - point.atMs,
            lastSyncBytes: point.bytes,
            lastSyncMode: point.mode,
            bytesSent: r.bytesSent + point.bytes,
            syncs: r.syncs + 1,
            lastError: undefined,
            unreachable: false,
          });
          await this.d.events.emit({
            type: 'replica.synced',
            vm,
            message: `replica of ${vm}: ${point.mode} sync, ${point.bytes} bytes, recovery point ${point.id}`,
            data: { point },
          });
        },
      },
    ];
  }

  /** After a controller restart: a sync that was in flight is closed on the replica side (or recorded, if it got that far). */
  async recover(): Promise<void> {
    for (const { value: s } of await this.d.store.list<SyncRecord>('replica-syncs/')) {
      const outcome = await this.runner(s.vm)
        .recover(new AbortController().signal)
        .catch((e: unknown) => ({ ok: false, error: toFerryError(e) }));
      await this.d.store.delete(`replica-syncs/${s.vm}`);
      if (!outcome.ok) await this.patch(s.vm, { lastError: 'the controller restarted during the sync' }).catch(() => {});
    }
  }

  /**
   * Failover. On the primary: --planned (pause, final sync, stop here,
   * start there), --test (a copy there on an isolated switch), or unplanned
   * (start there; the VM must not run here). On the replica side: unplanned
   * or --test, from the newest or a chosen recovery point.
   */
  async failover(
    vm: string,
    opts: { planned?: boolean; test?: boolean; point?: string },
  ): Promise<{ vm: string; cluster: string; point: RecoveryPoint; mode: string }> {
    if (opts.planned && (opts.test || opts.point)) throw errors.invalid('planned', '--planned fails over to the final sync: it takes no --point or --test');
    const out = await this.find(vm);
    const mode = opts.planned ? 'planned' : opts.test ? 'test' : 'unplanned';
    if (!out || out.state !== 'replicating') {
      const inc = await this.incoming.find(vm);
      if (!inc) throw errors.invalid('vm', `VM '${vm}' is not replicated from or to this cluster (see 'ferry replica status')`);
      if (opts.planned)
        throw errors.invalid('planned', `a planned failover runs on the primary cluster (${inc.source.url}), which stops the VM and sends the final sync`);
      const res = await this.incoming.failover(vm, { test: opts.test, ...(opts.point ? { point: opts.point } : {}) });
      return { vm: res.vm.name, cluster: this.d.self.clusterId, point: res.point, mode };
    }
    if (opts.test) {
      const res = await (await this.far(vm, 120_000)).failover(vm, { test: true, ...(opts.point ? { point: opts.point } : {}) });
      return { vm: res.vm.name, cluster: out.target.clusterId, point: res.point, mode };
    }
    const v = await this.d.vms.get(vm);
    if (!opts.planned) {
      if (v.state === VmState.Running) throw errors.invalidState(`VM '${vm}' still runs here: use --planned (nothing lost), or stop it first`);
      const res = await (await this.far(vm, 120_000)).failover(vm, opts.point ? { point: opts.point } : {});
      await this.patch(vm, { state: 'failed-over' });
      return { vm: res.vm.name, cluster: out.target.clusterId, point: res.point, mode };
    }
    const migrating = this.d.locks.isHeld(vm, VmOperation.Migration);
    if (v.state !== VmState.Running || migrating)
      throw errors.invalidState(`VM '${vm}' is ${migrating ? 'migrating' : v.state}: a planned failover starts from the running VM`);
    // A sync in flight stops; the final one below sends its blocks too.
    this.aborts.get(vm)?.abort();
    while (this.syncing.has(vm)) await this.syncing.get(vm)!.catch(() => {});
    const agent = await this.d.nodes.agent(v.node);
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
    await this.d.stopVm(vm);
    try {
      const res = await (await this.far(vm, 120_000)).failover(vm, { point: point.id });
      await this.patch(vm, { state: 'failed-over' });
      await this.d.events.emit({
        type: 'replica.failover',
        vm,
        message: `planned failover of ${vm} to ${out.target.url}: stopped here after the final sync ${point.id}`,
      });
      return { vm: res.vm.name, cluster: out.target.clusterId, point: res.point, mode };
    } catch (e) {
      // It could not start over there: it runs here again, from its own disk (nothing lost).
      await this.d.startVm(vm).catch(() => {});
      throw new FerryError(
        toFerryError(e).code,
        `planned failover of '${vm}' failed on the replica side, the VM was started here again: ${toFerryError(e).message}`,
      );
    }
  }

  /** Run where the VM runs after a failover: replicate it back to its old primary. */
  async reverse(vm: string): Promise<ReplicaStatus> {
    const inc = await this.incoming.find(vm);
    if (!inc || inc.state !== 'failed-over')
      throw errors.invalidState(`VM '${vm}' has not failed over to this cluster: reverse runs where the VM runs after a failover`);
    const status = await this.enable(vm, { to: inc.source.url, token: inc.source.token, interval: inc.interval, keep: inc.keep });
    await this.incoming.remove(vm, 'reversed');
    return status;
  }

  /** Stops replicating; the replica side drops its copy (if it answers) and the record goes. */
  async disable(vm: string): Promise<ReplicaRecord> {
    const r = await this.get(vm);
    // A sync in flight ends first.
    this.aborts.get(vm)?.abort();
    const lease = await this.d.locks.acquire(vm, VmOperation.ReplicaSync, { waitMs: 60_000 }).catch(() => undefined);
    try {
      if (r.state === 'replicating') await (await this.far(vm)).remove(vm).catch(() => {});
      await this.d.store.delete(this.key(vm));
      await this.d.store.delete(`replica-tokens/${vm}`);
    } finally {
      lease?.release();
    }
    await this.d.events.emit({ type: 'replica.disabled', vm, message: `replication of ${vm} disabled` });
    return r;
  }

  /** A replica arriving for a VM this cluster used to replicate out (after `reverse` there): the old record goes. */
  async supersede(vm: string): Promise<void> {
    const r = await this.find(vm);
    if (r && r.state === 'failed-over') {
      await this.d.store.delete(this.key(vm));
      await this.d.store.delete(`replica-tokens/${vm}`);
    }
  }
}

/**
 * Live and quick migration on the controller (R1, R3, R4, R7, R11).
 *
 * `request()` runs every refusal check, takes the VM's migration lock,
 * saves a record and queues it; the scheduler starts queued migrations
 * whose nodes have free slots; each runs its phase table (phases.ts) in the
 * background while the caller follows the record. `finish()` always runs
 * last and records cleanup trouble beside the cause, never instead of it.
 * A restarted controller takes the locks of unfinished migrations back at
 * once and, when the agents have reported, carries each on or undoes it
 * from its saved phase.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../../domain/clock.js';
import { ErrorCode, FerryError, errors } from '../../domain/errors.js';
import type { StateLayout } from '../../domain/layout.js';
import {
  type MigrationMode,
  type MigrationNetwork,
  type MigrationPhase,
  type MigrationPriority,
  type MigrationRecord,
  type MigrationStatus,
  isFinal,
  queueOrder,
  startable,
  toReport,
} from '../../domain/migration.js';
import type { NodeLoad } from '../../domain/placement.js';
import { type MigrationPolicy, effectivePolicy, tuningFor } from '../../domain/policy.js';
import type { Prediction } from '../../domain/predict.js';
import { type NodeRecord, type VmRecord, VmState } from '../../domain/records.js';
import type { TransferTuning } from '../../domain/transfer.js';
import { VmOperation } from '../../domain/vm-locks.js';
import type { EventSink } from '../../ports/events.js';
import type { VmLease, VmLocks } from '../../ports/locks.js';
import type { Logger } from '../../ports/logger.js';
import type { NodeDirectory } from '../../ports/node-directory.js';
import type { Settings } from '../../ports/settings.js';
import { type ClusterStore, updateRecord } from '../../ports/store.js';
import type { SwitchControl } from '../../ports/switch-control.js';
import type { VmRepository } from '../../ports/vm-repository.js';
import type { Volume } from '../../ports/volume.js';
import { type PhaseGate, PhaseRunner } from '../core/phase-runner.js';
import { Measurements } from './measure.js';
import { migrationPhases, migrationUndo, type MigrationRunDeps } from './phases.js';
import { Preflight } from './preflight.js';

const POLL_MS = 100;

/** A migration as asked for, after the API's schema checked it. */
export interface MigrateRequest {
  to: string;
  mode?: MigrationMode;
  /** Per-migration overrides of the transfer tuning (win over the policy's). */
  tuning?: Partial<TransferTuning>;
  priority?: MigrationPriority;
  /** Only run the pre-flight checks and report every blocker; move nothing. */
  check?: boolean;
  /** Run the pre-flight checks, measure and predict; move nothing. */
  plan?: boolean;
  /** Fields overriding the cluster's and the VM's policy. */
  policy?: Partial<MigrationPolicy>;
  /** Shared-nothing: an absolute directory on the target the VM's disk is copied into. */
  withStorage?: string;
}

export interface CheckResult {
  check: true;
  vm: string;
  to: string;
  mode: MigrationMode;
  ok: boolean;
  blockers: string[];
}

export interface PlanResult {
  plan: true;
  vm: string;
  from?: string;
  to: string;
  mode: MigrationMode;
  ok: boolean;
  blockers: string[];
  policy: MigrationPolicy;
  network?: MigrationNetwork;
  predicted?: Prediction;
}

export interface MigrationsDeps {
  store: ClusterStore;
  vms: VmRepository;
  nodes: NodeDirectory;
  locks: VmLocks;
  events: EventSink;
  clock: Clock;
  settings: Settings;
  switch: SwitchControl;
  volume: Volume;
  layout: StateLayout;
  loads: () => Promise<NodeLoad[]>;
  onSharedVolume: (file: string) => boolean;
  networks: { choose(source: NodeRecord, target: NodeRecord, signal?: AbortSignal): Promise<MigrationNetwork> };
  clusterId: string;
  identify: (url: string) => Promise<{ node: string; clusterId: string }>;
  log: Logger;
  gate?: PhaseGate;
}

/** How often a migration whose run ended unsaved is taken up again. */
const ORPHAN_RETRY_MS = 10_000;

export class Migrations {
  private readonly running = new Map<string, AbortController>();
  private readonly leases = new Map<string, VmLease>();
  private readonly preflight: Preflight;
  private readonly measurements: Measurements;
  private readonly runDeps: MigrationRunDeps;
  private scheduling: Promise<void> = Promise.resolve();
  private ticking = false;
  /** When each orphaned migration was last taken up. */
  private readonly orphanTried = new Map<string, number>();

  constructor(private readonly d: MigrationsDeps) {
    this.measurements = new Measurements(d.nodes, d.clock);
    this.preflight = new Preflight({
      nodes: d.nodes,
      loads: d.loads,
      volume: d.volume,
      settings: d.settings,
      onSharedVolume: d.onSharedVolume,
      networks: d.networks,
      clusterId: d.clusterId,
      identify: d.identify,
      backupOf: (vm) => d.locks.holders(vm).find((h) => h.kind === VmOperation.Backup)?.id,
    });
    this.runDeps = {
      vms: d.vms,
      nodes: d.nodes,
      events: d.events,
      clock: d.clock,
      switch: d.switch,
      volume: d.volume,
      layout: d.layout,
      networks: d.networks,
      measurements: this.measurements,
      load: (id) => this.get(id),
      save: (id, change) => this.save(id, change),
    };
  }

  private key(id: string): string {
    return `migrations/${id}`;
  }

  async list(): Promise<MigrationRecord[]> {
    return (await this.d.store.list<MigrationRecord>('migrations/')).map((e) => e.value).sort((a, b) => a.requestedAtMs - b.requestedAtMs);
  }

  /** Migrations that have not ended. */
  async open(): Promise<MigrationRecord[]> {
    return (await this.list()).filter((m) => !isFinal(m.status));
  }

  async get(id: string): Promise<MigrationRecord & { report?: ReturnType<typeof toReport> }> {
    const e = await this.d.store.get<MigrationRecord>(this.key(id));
    if (!e) throw errors.migrationNotFound(id);
    return isFinal(e.value.status) ? { ...e.value, report: toReport(e.value) } : e.value;
  }

  private save(id: string, change: (r: MigrationRecord) => MigrationRecord): Promise<MigrationRecord> {
    return updateRecord<MigrationRecord>(this.d.store, this.d.clock, this.key(id), (cur) => {
      if (!cur) throw errors.migrationNotFound(id);
      return change(cur);
    });
  }

  /** The migration holding a VM, if one does. */
  migrationOf(vm: string): string | undefined {
    return this.d.locks.holders(vm).find((h) => h.kind === VmOperation.Migration)?.id;
  }

  /** The VM record plus its running migration's step and progress, for `vm show`. */
  async decorate(vm: VmRecord): Promise<VmRecord & { migrationId?: string; migration?: Partial<MigrationRecord> }> {
    const id = this.migrationOf(vm.name);
    if (!id) return vm;
    const m = await this.d.store.get<MigrationRecord>(this.key(id));
    if (!m) return vm;
    const { phase, to, from, progress } = m.value;
    return { ...vm, migrationId: id, migration: { id, phase, from, to, ...(progress ? { progress } : {}) } };
  }

  async request(vmName: string, req: MigrateRequest): Promise<MigrationRecord | CheckResult | PlanResult> {
    const mode = req.mode ?? 'live';
    const priority = req.priority ?? 'manual';
    const vm = await this.d.vms.get(vmName);
    const policy = effectivePolicy(await this.d.settings.policy(), vm.policy, req.policy);
    // Explicit tuning fields (the API's older knobs) win over the policy's.
    const tuning: TransferTuning = { ...tuningFor(policy), ...(req.tuning ?? {}) };
    const target = await this.preflight.resolveTarget(req.to);
    const storage = req.withStorage === undefined ? undefined : await this.preflight.storageCopy(vm, mode, tuning, req.withStorage);
    if (req.check || req.plan) {
      const refusal = this.d.locks.refusal(vmName, VmOperation.Migration);
      const blockers = [...(refusal ? [refusal] : []), ...(await this.preflight.blockers(vm, target, mode, req.withStorage)).map((b) => b.message)];
      if (req.check) return { check: true, vm: vmName, to: target.name, mode, ok: blockers.length === 0, blockers };
      if (blockers.length) return { plan: true, vm: vmName, to: target.name, mode, ok: false, blockers, policy };
      const source = await this.d.nodes.get(vm.node);
      const network = mode === 'live' ? await this.d.networks.choose(source, target) : undefined;
      const predicted = network ? await this.measurements.measureAndPredict(vm.name, source, target, network, policy) : undefined;
      return {
        plan: true,
        vm: vmName,
        from: vm.node,
        to: target.name,
        mode,
        ok: true,
        blockers: [],
        policy,
        ...(network ? { network } : {}),
        ...(predicted ? { predicted } : {}),
      };
    }
    const now = this.d.clock.nowMs();
    const id = `m-${now.toString(36)}-${randomUUID().slice(0, 6)}`;
    // The VM's migration lock: refused while another migration (or a disk move) holds the VM,
    // waits for a backup's freeze or merge, preempts a replica sync.
    const lease = await this.d.locks.acquire(vmName, VmOperation.Migration, { id, waitMs: 60_000 });
    try {
      const blockers = await this.preflight.blockers(await this.d.vms.get(vmName), target, mode, req.withStorage);
      if (blockers.length === 1) throw blockers[0]!;
      if (blockers.length > 1) {
        throw new FerryError(ErrorCode.InvalidState, blockers.map((b) => b.message).join('; '), { details: { blockers: blockers.map((b) => b.message) } });
      }
      const record: MigrationRecord = {
        id,
        vm: vmName,
        mode,
        from: vm.node,
        to: target.name,
        phase: 'queued',
        status: 'queued',
        requestedAtMs: now,
        priority,
        steps: [],
        tuning,
        policy,
        ...(storage ? { storage } : {}),
      };
      await this.d.store.put(this.key(record.id), record, { expectRevision: 0 });
      this.leases.set(id, lease);
    } catch (e) {
      lease.release();
      throw e;
    }
    const queued = await this.get(id);
    await this.d.events.emit({
      type: 'migration.queued',
      vm: vmName,
      migration: id,
      message: `${mode} migration of ${vmName} from ${vm.node} to ${target.name} queued (${priority})`,
      data: { priority },
    });
    this.measurements.whileQueued(queued);
    await this.schedule();
    return this.get(id);
  }

  /** Starts queued migrations whose nodes have free slots (serialised: one decision at a time). */
  schedule(o: { orphans?: boolean } = {}): Promise<void> {
    this.scheduling = this.scheduling
      // Orphans are looked for in the same queue as starts: a migration saved as running is launched before the next look.
      .then(async () => (o.orphans ? this.recoverOrphans(await this.list()) : undefined))
      .then(() => this.scheduleNow())
      .catch((e: unknown) => this.d.log.error({ err: String(e) }, 'scheduling migrations failed'));
    return this.scheduling;
  }

  /** Schedules every `everyMs` (slots freed by a settings change or another process) and takes up orphaned runs, until `signal` aborts. */
  async runScheduler(signal: AbortSignal, everyMs = 1000): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      while (!signal.aborted) {
        // The loop starts after restart recovery (runtime.run): from then on a run that ended unsaved is an orphan.
        await this.schedule({ orphans: true });
        await this.d.clock.sleep(everyMs, signal).catch(() => {});
      }
    } finally {
      this.ticking = false;
    }
  }

  private async scheduleNow(): Promise<void> {
    const { migrationsPerNode } = await this.d.settings.get();
    for (const m of startable(await this.list(), migrationsPerNode)) {
      const now = this.d.clock.nowMs();
      const started = await this.save(m.id, (cur) =>
        cur.status === 'queued' && !cur.cancelRequested ? { ...cur, status: 'running', phase: 'pending', startedAtMs: now } : cur,
      );
      if (started.status !== 'running') continue;
      await this.d.events.emit({
        type: 'migration.started',
        vm: m.vm,
        migration: m.id,
        node: m.from,
        message: `${m.mode} migration of ${m.vm} ${m.from} → ${m.to} started after ${now - m.requestedAtMs} ms in the queue`,
        data: { from: m.from, to: m.to, queuedMs: now - m.requestedAtMs },
      });
      this.launch(m.id, (signal) => this.runner(started).run(signal));
    }
  }

  private runner(r: MigrationRecord): PhaseRunner<MigrationRecord> {
    return new PhaseRunner<MigrationRecord>({
      operation: `${r.mode}-migration`,
      ...(this.d.gate ? { gate: this.d.gate } : {}),
      phases: migrationPhases(this.runDeps, r.id, r.mode),
      record: { load: () => this.get(r.id), save: (change) => this.save(r.id, change) },
      undo: migrationUndo(this.runDeps),
      onPhase: (name) => this.enterStep(r.id, name),
      rollingBackPhase: 'rolling-back',
      latePrefix: 'after handover',
      clock: this.d.clock,
    });
  }

  private launch(id: string, run: (signal: AbortSignal) => Promise<{ ok: boolean; cancelled: boolean; error?: FerryError; committed?: boolean }>): void {
    const ac = new AbortController();
    this.running.set(id, ac);
    void run(ac.signal)
      .then(async (outcome) => {
        const after = await this.get(id);
        const cancelled = outcome.cancelled || (!outcome.ok && !outcome.committed && after.cancelRequested === true);
        if (outcome.ok) await this.finish(id, 'completed');
        else await this.finish(id, cancelled ? 'cancelled' : 'failed', { error: cancelled ? 'cancelled by user' : (outcome.error?.message ?? 'failed') });
      })
      .catch((e: unknown) => this.d.log.error({ migration: id, err: String(e) }, 'migration bookkeeping failed'))
      .finally(() => {
        this.running.delete(id);
        void this.schedule();
      });
  }

  /** Records the start of one of R3's steps on the migration. */
  private async enterStep(id: string, step: string): Promise<void> {
    const now = this.d.clock.nowMs();
    await this.save(id, (r) => {
      const steps = r.steps.map((s) => (s.endedAtMs === undefined ? { ...s, endedAtMs: now, ms: now - s.startedAtMs } : s));
      const known = r.steps.some((s) => s.name === step);
      if (!known) steps.push({ name: step as MigrationRecord['steps'][number]['name'], startedAtMs: now });
      return { ...r, steps };
    });
    await this.d.events.emit({ type: 'migration.step', migration: id, message: `migration ${id}: ${step}`, data: { step } });
  }

  /** Queued migrations with their place in the queue (1 = next). */
  async listWithQueue(): Promise<(MigrationRecord & { queuePosition?: number })[]> {
    const all = await this.list();
    const order = queueOrder(all).map((m) => m.id);
    return all.map((m) => (m.status === 'queued' ? { ...m, queuePosition: order.indexOf(m.id) + 1 } : m));
  }

  async cancel(id: string): Promise<MigrationRecord> {
    const r = await this.get(id);
    if (isFinal(r.status)) throw errors.invalidState(`migration ${id} already ended (${r.status})`, { migration: id });
    const saved = await this.save(id, (cur) => ({ ...cur, cancelRequested: true }));
    if (saved.status === 'queued') {
      // Nothing ran yet: leave the queue; the VM was never touched.
      await this.finish(id, 'cancelled', { error: 'cancelled by user while queued' });
      return this.get(id);
    }
    this.running.get(id)?.abort(errors.aborted(`migration ${id}`));
    return saved;
  }

  async cancelAndWait(id: string, timeoutMs = 30_000): Promise<MigrationRecord> {
    await this.cancel(id).catch(() => {});
    const deadline = this.d.clock.nowMs() + timeoutMs;
    for (;;) {
      const r = await this.get(id);
      if (isFinal(r.status) || this.d.clock.nowMs() > deadline) return r;
      await this.d.clock.sleep(POLL_MS);
    }
  }

  async cancelAll(): Promise<void> {
    // Queued ones first, so none starts while the running ones wind down.
    const open = await this.open();
    for (const m of open.filter((x) => x.status === 'queued')) await this.cancel(m.id).catch(() => {});
    for (const m of open.filter((x) => x.status !== 'queued')) await this.cancelAndWait(m.id);
  }

  private async finish(id: string, status: Exclude<MigrationStatus, 'running' | 'queued'>, extra: Partial<MigrationRecord> = {}): Promise<void> {
    const now = this.d.clock.nowMs();
    const rec = await this.save(id, (cur) => {
      const steps = cur.steps.map((s) => (s.endedAtMs === undefined ? { ...s, endedAtMs: now, ms: now - s.startedAtMs } : s));
      // totalMs is the move itself; time spent waiting for a slot is queuedMs.
      const startedAt = cur.startedAtMs ?? now;
      const next: MigrationRecord = {
        ...cur,
        ...extra,
        steps,
        status,
        phase: status as MigrationPhase,
        finishedAtMs: now,
        totalMs: now - startedAt,
        queuedMs: startedAt - cur.requestedAtMs,
      };
      if (extra.warnings) next.warnings = [...(cur.warnings ?? []), ...extra.warnings];
      return next;
    });
    this.measurements.forget(id);
    this.leases.get(id)?.release();
    this.leases.delete(id);
    await this.d.events.emit({
      type: `migration.${status}`,
      vm: rec.vm,
      migration: id,
      message: `${rec.mode} migration of ${rec.vm} ${rec.from} → ${rec.to} ${status}${rec.error ? `: ${rec.error}` : ''}`,
      data: { report: toReport(rec) },
    });
  }

  // ---- restart recovery -----------------------------------------------------

  /** A restarted controller holds the VMs of unfinished migrations again, before it serves anything. */
  async retakeLocks(): Promise<void> {
    for (const r of await this.open()) {
      if (this.leases.has(r.id)) continue;
      const lease = await this.d.locks.acquire(r.vm, VmOperation.Migration, { id: r.id, waitMs: 0 }).catch(() => undefined);
      if (lease) this.leases.set(r.id, lease);
    }
  }

  /**
   * After a controller restart, once agents had time to report: every
   * migration still marked running carries on or is undone from its saved
   * phase (see phases.ts); queued ones stay queued.
   */
  async recover(): Promise<void> {
    await this.retakeLocks();
    for (const r of await this.list()) {
      if (isFinal(r.status) || r.status === 'queued' || this.running.has(r.id)) continue;
      this.d.log.info({ migration: r.id, vm: r.vm, phase: r.phase }, 'recovering migration');
      await new Promise<void>((resolve) =>
        this.relaunch(
          r,
          {
            completed: 'completed by a restarted controller (or the one that took over)',
            failed: 'the controller restarted (or another took over) during the migration',
          },
          resolve,
        ),
      );
    }
    await this.schedule();
  }

  /**
   * A migration marked running that nothing runs any more: its run ended
   * without its outcome saved (the store did not answer for longer than an
   * operation waits). It is carried on or undone from its saved phase, as
   * after a restart, once the store answers again.
   */
  private recoverOrphans(all: MigrationRecord[]): void {
    const now = this.d.clock.nowMs();
    for (const r of all) {
      if (isFinal(r.status) || r.status === 'queued' || this.running.has(r.id)) continue;
      // One try every ORPHAN_RETRY_MS: a recovery that fails at once is not repeated in a tight loop.
      if (now - (this.orphanTried.get(r.id) ?? -Infinity) < ORPHAN_RETRY_MS) continue;
      this.orphanTried.set(r.id, now);
      this.d.log.warn({ migration: r.id, vm: r.vm, phase: r.phase }, 'recovering a migration whose run ended unsaved');
      const why = 'its run ended while the store did not answer';
      this.relaunch(r, { completed: `completed after ${why}`, failed: why });
    }
  }

  /** Carries a migration on (or undoes it) from its saved phase; `done` is called once that ended. */
  private relaunch(r: MigrationRecord, say: { completed: string; failed: string }, done?: () => void): void {
    this.launch(r.id, async (signal) => {
      try {
        if (!this.leases.has(r.id)) await this.retakeLocks();
        const outcome = await this.runner(r).recover(signal);
        if (outcome.ok) await this.save(r.id, (cur) => ({ ...cur, warnings: [...(cur.warnings ?? []), say.completed] }));
        else if (!outcome.error) outcome.error = new FerryError(ErrorCode.MigrationFailed, `${say.failed}; rolled back to the source`);
        return outcome;
      } finally {
        done?.();
      }
    });
  }

  /** Whether the VM is queued or moving (the VM record's state stays 'running' while it moves). */
  isMigrating(vm: string): boolean {
    return this.migrationOf(vm) !== undefined;
  }

  /** VM state words for a view: a migrating VM shows `running` with its migration. */
  static stateOf(vm: VmRecord): VmState {
    return vm.state;
  }
}

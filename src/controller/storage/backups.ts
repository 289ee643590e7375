/**
 * Online backups (R13). A backup of a running VM is a phase table:
 *
 *   wait ─► freeze ─────────► copy ───────────► verify ─commit─► merge
 *           │undo: merge the  │undo: remove the              (the backup stands;
 *           │overlay back     │half-written file              a failed merge is
 *                                                             recorded, not undone)
 *
 *   freeze  the VM's QEMU puts its disk under an overlay on the shared volume
 *           (the image no longer changes: the backup's point in time);
 *   copy    a qemu-storage-daemon outside the VM's QEMU copies the frozen
 *           image (full, or only the blocks the change bitmap marks, into a
 *           file backed by the previous backup); it pauses while the VM migrates;
 *   verify  qemu-img check of the file and its chain;
 *   merge   whichever QEMU runs the VM then merges the overlay back (offline
 *           when the VM stopped meanwhile).
 *
 * A stopped VM's disk is copied with qemu-img. Backups and migrations of
 * one VM coexist through the VM lock table: the freeze and the merge hold
 * `disk-freeze` for a moment each (a migration waits for them, they wait for
 * a migration); the backup as a whole holds `backup`, which shares with a
 * migration. A restarted controller carries a backup on or undoes it from
 * its saved phase.
 *
 * Store keys: backups/<id> → BackupRecord. Files: <backup store>/<vm>/<id>.qcow2.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { BackupRecord } from '../../domain/backups.js';
import type { Clock } from '../../domain/clock.js';
import { ErrorCode, FerryError, errors, isFerryError, toFerryError } from '../../domain/errors.js';
import type { StateLayout } from '../../domain/layout.js';
import { type VmRecord, VmState } from '../../domain/records.js';
import { VmOperation } from '../../domain/vm-locks.js';
import type { VmCreate } from '../lifecycle.js';
import type { EventSink } from '../../ports/events.js';
import type { VmLease, VmLocks } from '../../ports/locks.js';
import type { Logger } from '../../ports/logger.js';
import type { NodeDirectory } from '../../ports/node-directory.js';
import type { Settings } from '../../ports/settings.js';
import { type ClusterStore, updateRecord } from '../../ports/store.js';
import type { VmRepository } from '../../ports/vm-repository.js';
import type { Volume } from '../../ports/volume.js';
import { type Phase, type PhaseGate, PhaseRunner, type UndoTable } from '../core/phase-runner.js';

export type { BackupRecord };

const MAX_WAIT_MS = 30 * 60_000;
const FAILED_WITH_CONTROLLER = 'the controller stopped during the backup';

export interface BackupsDeps {
  store: ClusterStore;
  vms: VmRepository;
  nodes: NodeDirectory;
  locks: VmLocks;
  events: EventSink;
  clock: Clock;
  settings: Settings;
  volume: Volume;
  layout: StateLayout;
  log: Logger;
  /** Creates a stopped VM (restore --as). */
  createVm: (v: VmCreate) => Promise<VmRecord>;
  deleteVm: (name: string) => Promise<void>;
  gate?: PhaseGate;
}

export interface BackupRequest {
  incremental?: boolean;
  scheduled?: boolean;
  bandwidthMiBps?: number;
}

export class Backups {
  /** The backup lease of each backup running in this process, by backup id. */
  private readonly leases = new Map<string, VmLease>();

  constructor(private readonly d: BackupsDeps) {}

  private key(id: string): string {
    return `backups/${id}`;
  }

  /** Where backups go: the cluster setting, or the shared volume's backups/ directory. */
  private async storeDir(): Promise<string> {
    return (await this.d.settings.get()).backupStore || path.join(this.d.layout.shared, 'backups');
  }

  async list(vm?: string): Promise<BackupRecord[]> {
    return (await this.d.store.list<BackupRecord>('backups/'))
      .map((e) => e.value)
      .filter((b) => !vm || b.vm === vm)
      .sort((a, b) => a.requestedAtMs - b.requestedAtMs);
  }

  async get(id: string): Promise<BackupRecord> {
    const e = await this.d.store.get<BackupRecord>(this.key(id));
    if (!e) throw new FerryError(ErrorCode.InvalidArgument, `no backup '${id}' (see 'ferry backup list')`, { details: { backup: id } });
    return e.value;
  }

  private save(id: string, change: (b: BackupRecord) => BackupRecord): Promise<BackupRecord> {
    return updateRecord<BackupRecord>(this.d.store, this.d.clock, this.key(id), (cur) => {
      if (!cur) throw errors.internal(`backup ${id} vanished`);
      return change(cur);
    });
  }

  async create(vmName: string, opts: BackupRequest = {}): Promise<BackupRecord> {
    const vm = await this.d.vms.get(vmName);
    const mode = opts.incremental ? 'incremental' : 'full';
    let parent: BackupRecord | undefined;
    if (mode === 'incremental') {
      parent = (await this.list(vmName)).filter((b) => b.status === 'completed').at(-1);
      if (!parent) throw errors.invalidState(`VM '${vmName}' has no completed backup to build an incremental one on: take a full backup first`);
      if (vm.state !== VmState.Running) throw errors.invalidState(`VM '${vmName}' is ${vm.state}: incremental backups need the running VM's change bitmap`);
    }
    const id = `b-${this.d.clock.nowMs().toString(36)}-${randomUUID().slice(0, 4)}`;
    const lease = await this.d.locks.acquire(vmName, VmOperation.Backup, { id, waitMs: 0 });
    try {
      const file = path.join(await this.storeDir(), vmName, `${id}.qcow2`);
      const record: BackupRecord = {
        id,
        vm: vmName,
        mode,
        file,
        status: 'waiting',
        phase: 'wait',
        requestedAtMs: this.d.clock.nowMs(),
        sizeBytes: vm.diskGiB * 1073741824,
        ...(parent ? { parent: parent.id } : {}),
        ...(opts.scheduled ? { scheduled: true } : {}),
        ...(opts.bandwidthMiBps ? { bandwidthMiBps: opts.bandwidthMiBps } : {}),
      };
      await this.d.store.put(this.key(id), record, { expectRevision: 0 });
    } catch (e) {
      lease.release();
      throw e;
    }
    this.leases.set(id, lease);
    return this.runToEnd(id, (runner, signal) => runner.run(signal));
  }

  private async runToEnd(
    id: string,
    go: (runner: PhaseRunner<BackupRecord>, signal: AbortSignal) => Promise<{ ok: boolean; error?: FerryError }>,
  ): Promise<BackupRecord> {
    const runner = new PhaseRunner<BackupRecord>({
      operation: 'backup',
      ...(this.d.gate ? { gate: this.d.gate } : {}),
      phases: this.phases(id),
      record: { load: () => this.get(id), save: (change) => this.save(id, change) },
      undo: this.undoTable(),
      clock: this.d.clock,
    });
    let outcome: { ok: boolean; cancelled?: boolean; error?: FerryError };
    const ac = new AbortController();
    const run = go(runner, ac.signal);
    this.running.set(id, { ac, done: run.catch(() => undefined) });
    try {
      outcome = await run;
    } finally {
      this.running.delete(id);
      this.leases.get(id)?.release();
      this.leases.delete(id);
    }
    if (!outcome.ok && ac.signal.aborted) {
      const why = ac.signal.reason instanceof Error ? ac.signal.reason.message : String(ac.signal.reason ?? 'cancelled');
      const vm = (await this.get(id)).vm;
      outcome = {
        ok: false,
        error: new FerryError(ErrorCode.Aborted, `backup ${id} of ${vm} was cancelled: ${why}; the VM's disk is whole (its overlay was merged back)`),
      };
    }
    const b = await this.save(id, (cur) => ({
      ...cur,
      finishedAtMs: this.d.clock.nowMs(),
      status: outcome.ok ? 'completed' : 'failed',
      ...(outcome.ok ? {} : { error: cur.error ?? outcome.error?.message ?? FAILED_WITH_CONTROLLER }),
    }));
    if (outcome.ok) {
      const waited =
        (b.waitedMs ?? 0) >= 100
          ? `waited ${b.waitedMs} ms for migrations (copy paused ${b.copyPausedMs ?? 0} ms, merge on ${b.mergedOn ?? b.node} waited ${b.mergeWaitedMs ?? 0} ms)`
          : '';
      await this.d.events.emit({
        type: 'backup.completed',
        vm: b.vm,
        message: `${b.mode} backup ${id} of ${b.vm}: ${b.bytes} bytes copied${waited ? `, ${waited}` : ''}`,
        data: { backup: id },
      });
      return b;
    }
    await this.d.events.emit({ type: 'backup.failed', vm: b.vm, message: `backup ${id} of ${b.vm} failed: ${b.error}` });
    throw outcome.error ?? errors.internal(b.error ?? 'backup failed');
  }

  /** Backups whose phases run now: their cancel switch and the end of their run. */
  private readonly running = new Map<string, { ac: AbortController; done: Promise<unknown> }>();

  /** Cancels every backup in flight (its copy stops, its overlay is merged back) and waits until each has ended. */
  async cancelAll(reason: string): Promise<string[]> {
    const ids = [...this.running.keys()];
    for (const r of this.running.values()) r.ac.abort(new Error(reason));
    await Promise.all([...this.running.values()].map((r) => r.done));
    return ids;
  }

  private undoTable(): UndoTable {
    return {
      'remove-file': async ({ file }: { file: string }) => this.d.volume.remove(file),
      /** Merges the overlay back without a backup to build on (the change bitmap keeps its old blocks too). */
      'merge-back': async ({ id, base, overlay }: { id: string; base: string; overlay: string }) => {
        const b = await this.get(id);
        await this.merge(b, { base, overlay }, false, 30);
      },
    };
  }

  private phases(id: string): Phase[] {
    const rec = () => this.get(id);
    const save = (change: (b: BackupRecord) => BackupRecord) => this.save(id, change);
    let frozenNow: { base: string; overlay: string } | undefined;
    return [
      {
        // Wait until no migration moves the VM, then freeze its disk wherever it runs.
        name: 'freeze',
        run: async (ctx) => {
          const b = await rec();
          const waitStart = this.d.clock.nowMs();
          await this.d.locks.with(
            b.vm,
            VmOperation.DiskFreeze,
            async () => {
              const cur = await this.d.vms.get(b.vm);
              const waitedMs = this.d.clock.nowMs() - waitStart;
              if (cur.state === VmState.Running) {
                const overlay = path.join(this.d.layout.overlays, `${b.vm}-${id}.qcow2`);
                this.d.volume.ensureWritableDir(this.d.layout.overlays, { recursive: true });
                await ctx.onUndo({ action: 'merge-back', args: { id, base: cur.diskPath, overlay } });
                const freezeStartedAtMs = this.d.clock.nowMs();
                const frozen = await (await this.d.nodes.agent(cur.node)).freezeDisk(b.vm, overlay, b.mode);
                frozenNow = frozen;
                // The VM's disk is the overlay on its frozen image until the merge (a stop and start keeps both).
                await this.d.vms.update(b.vm, (v) => ({ ...v, diskPath: overlay }));
                await save((x) => ({
                  ...x,
                  frozen,
                  freezeStartedAtMs,
                  frozenAtMs: this.d.clock.nowMs(),
                  quiesced: frozen.quiesced === true,
                  ...(frozen.quiesceNote ? { quiesceNote: frozen.quiesceNote } : {}),
                }));
              } else if (cur.state !== VmState.Stopped) {
                throw errors.invalidState(`VM '${b.vm}' is ${cur.state}: only running or stopped VMs are backed up`);
              } else await save((x) => ({ ...x, quiesced: true, quiesceNote: 'the VM was stopped' }));
              await save((x) => ({ ...x, waitedMs, status: 'running', startedAtMs: this.d.clock.nowMs(), node: cur.node }));
            },
            { waitMs: MAX_WAIT_MS, id },
          );
        },
      },
      {
        name: 'copy',
        run: async (ctx) => {
          const b = await rec();
          this.d.volume.ensureWritableDir(path.dirname(b.file), { recursive: true });
          await ctx.onUndo({ action: 'remove-file', args: { file: b.file } });
          if (b.frozen) {
            const parent = b.parent ? await this.get(b.parent) : undefined;
            // The copy runs outside the VM's QEMU; a migration of the VM gets the I/O: the copy waits for it.
            const res = await this.d.volume.copyFrozen({
              source: b.frozen.base,
              target: b.file,
              mode: b.mode,
              sizeBytes: b.sizeBytes,
              ...(parent ? { parent: parent.file } : {}),
              ...(b.bandwidthMiBps ? { bytesPerSec: b.bandwidthMiBps * 1048576 } : {}),
              hold: () => this.d.locks.isHeld(b.vm, VmOperation.Migration),
              signal: ctx.signal,
            });
            await save((x) => ({
              ...x,
              bytes: res.bytes,
              ...(res.pausedMs ? { copyPausedMs: res.pausedMs, waitedMs: (x.waitedMs ?? 0) + res.pausedMs } : {}),
            }));
          } else {
            const vm = await this.d.vms.get(b.vm);
            const bytes = await this.d.volume.convert(vm.diskPath, b.file);
            await save((x) => ({ ...x, bytes }));
          }
        },
      },
      {
        name: 'verify',
        run: async (ctx) => {
          const b = await rec();
          await this.d.volume.verify(b.file);
          await save((x) => ({ ...x, verified: true }));
          // The backup stands: from here on the overlay is merged back as a good backup's.
          await ctx.commit();
        },
      },
      {
        name: 'merge',
        onRestart: 'rerun',
        run: async () => {
          const b = await rec();
          const frozen = b.frozen ?? frozenNow;
          if (!frozen) return;
          try {
            await this.merge(b, frozen, true, 1);
          } catch (e) {
            // The backup stands; the VM keeps running on overlay + image, both on the shared volume.
            const mergeError = toFerryError(e).message;
            await save((x) => ({ ...x, mergeError }));
            await this.d.events.emit({
              type: 'backup.merge-failed',
              vm: b.vm,
              message: `backup ${id} of ${b.vm}: merging the overlay back failed: ${mergeError}`,
            });
          }
        },
      },
    ];
  }

  /**
   * Merges the overlay back where the VM runs now, once no migration runs
   * (offline if it is not running). A disk that is no longer frozen (the
   * merge happened before a restart) counts as merged.
   */
  private async merge(b: BackupRecord, frozen: { base: string; overlay: string }, copied: boolean, attempts: number): Promise<void> {
    const waitStart = this.d.clock.nowMs();
    for (let attempt = 1; ; attempt++) {
      try {
        const node = await this.d.locks.with(
          b.vm,
          VmOperation.DiskFreeze,
          async () => {
            const cur = await this.d.vms.get(b.vm);
            const mergeWaitedMs = this.d.clock.nowMs() - waitStart;
            if (cur.state === VmState.Running) {
              await (await this.d.nodes.agent(cur.node)).mergeOverlay(b.vm, copied).catch((e: unknown) => {
                if (!isFerryError(e, ErrorCode.InvalidState)) throw e;
              });
            } else if (this.d.volume.exists(frozen.overlay)) {
              await this.d.volume.mergeOffline(frozen.overlay, frozen.base, copied);
            }
            this.d.volume.remove(frozen.overlay);
            await this.d.vms.update(b.vm, (v) => ({ ...v, diskPath: frozen.base }));
            await this.save(b.id, (x) => ({ ...x, mergeWaitedMs }));
            return cur.node;
          },
          { waitMs: MAX_WAIT_MS, id: b.id },
        );
        await this.save(b.id, (x) => ({
          ...x,
          mergedOn: node,
          ...(node !== x.node ? { movedTo: node } : {}),
          waitedMs: (x.waitedMs ?? 0) + (x.mergeWaitedMs ?? 0),
        }));
        return;
      } catch (e) {
        if (attempt >= attempts) throw e;
        await this.d.clock.sleep(2000);
      }
    }
  }

  /**
   * After a controller restart: every backup that was waiting or running
   * carries on from its saved phase or is undone (the copy died with the
   * controller: the half-written file goes and the overlay is merged back
   * where the VM runs, retried until its node answers).
   */
  async recover(): Promise<void> {
    for (const b of await this.list()) {
      if (b.status !== 'waiting' && b.status !== 'running') continue;
      const lease = await this.d.locks.acquire(b.vm, VmOperation.Backup, { id: b.id, waitMs: 0 }).catch(() => undefined);
      if (lease) this.leases.set(b.id, lease);
      void this.runToEnd(b.id, async (runner, signal) => {
        const outcome = await runner.recover(signal);
        if (!outcome.ok) {
          await this.save(b.id, (x) => ({ ...x, error: FAILED_WITH_CONTROLLER }));
          const after = await this.get(b.id);
          if (after.frozen) {
            await this.d.events.emit({
              type: 'backup.recovered',
              vm: b.vm,
              message: `backup ${b.id} of ${b.vm} failed with the controller; its overlay was merged back on ${after.mergedOn ?? 'its node'}`,
            });
          }
        }
        return outcome;
      }).catch((e: unknown) => this.d.log.warn({ backup: b.id, err: toFerryError(e).message }, 'backup recovery'));
    }
  }

  /** The backup holding a VM, if one does. */
  runningFor(vm: string): string | undefined {
    return this.d.locks.holders(vm).find((h) => h.kind === VmOperation.Backup)?.id;
  }

  /**
   * Restores a backup: `as` names a new VM with the backup's disk; without
   * it the VM itself gets the backup's disk back (it must be stopped).
   * The chain is flattened into one standalone qcow2.
   */
  async restore(id: string, opts: { as?: string } = {}): Promise<VmRecord> {
    const b = await this.get(id);
    if (b.status !== 'completed') throw errors.invalidState(`backup '${id}' is ${b.status}: only a completed backup restores`);
    if (opts.as !== undefined) {
      const source = await this.d.vms.find(b.vm);
      const vm = await this.d.createVm({
        name: opts.as,
        memoryMiB: source?.memoryMiB ?? 256,
        cpus: source?.cpus ?? 1,
        diskGiB: Math.ceil(b.sizeBytes / 1073741824),
        workload: source?.workload ?? 'idle',
        ...(source?.switch ? { switch: source.switch } : {}),
        ...(source?.boot ? { bootOf: source.boot } : {}),
      });
      try {
        await this.d.volume.replace(vm.diskPath, [b.file]);
      } catch (e) {
        await this.d.deleteVm(vm.name).catch(() => {});
        throw toFerryError(e);
      }
      await this.d.events.emit({ type: 'backup.restored', vm: vm.name, message: `backup ${id} of ${b.vm} restored as ${vm.name}` });
      return vm;
    }
    const vm = await this.d.vms.get(b.vm);
    if (vm.state !== VmState.Stopped) throw errors.invalidState(`VM '${b.vm}' is ${vm.state}: stop it to restore its disk in place, or restore --as NAME`);
    const running = this.runningFor(b.vm);
    if (running) throw errors.invalidState(`a backup of VM '${b.vm}' is running (${running}): restore in place after it`);
    await this.d.volume.replace(vm.diskPath, [b.file]);
    await this.d.events.emit({ type: 'backup.restored', vm: vm.name, message: `backup ${id} restored onto ${vm.name}'s disk` });
    return vm;
  }

  /**
   * Deletes a backup. One another backup builds on is refused, unless
   * `mergeIntoChildren` (pruning): then its data is first merged into each
   * backup built on it (rebased onto its own base, which copies what
   * differs), so those still restore without it.
   */
  async delete(id: string, opts: { mergeIntoChildren?: boolean } = {}): Promise<BackupRecord> {
    const b = await this.get(id);
    if (b.status === 'running' || b.status === 'waiting') throw errors.invalidState(`backup '${id}' is ${b.status}`);
    const children = (await this.list()).filter((x) => x.parent === id);
    if (children.length && !opts.mergeIntoChildren)
      throw errors.invalidState(`backup '${id}' is the base of ${children.map((x) => x.id).join(', ')}: delete those first`);
    const base = b.parent ? await this.get(b.parent) : undefined;
    for (const child of children) {
      await this.d.volume.rebase(child.file, base?.file);
      await this.d.volume.verify(child.file);
      await this.save(child.id, (cur) => {
        const next: BackupRecord = { ...cur, mergedFrom: [...(cur.mergedFrom ?? []), id] };
        if (base) next.parent = base.id;
        else delete next.parent;
        return next;
      });
    }
    this.d.volume.remove(b.file);
    await this.d.store.delete(this.key(id));
    await this.d.events.emit({
      type: 'backup.deleted',
      vm: b.vm,
      message: `backup ${id} of ${b.vm} deleted${children.length ? ` (merged into ${children.map((x) => x.id).join(', ')})` : ''}`,
    });
    return b;
  }
}

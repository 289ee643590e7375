/**
 * Online backups (R13) on the controller. A backup of a running VM freezes
 * its disk image under an overlay on the shared volume (the point in time),
 * copies the frozen image outside the VM's QEMU with qemu-storage-daemon
 * (full, or only the blocks the persistent change bitmap marks, into a file
 * backed by the previous backup), verifies the copy (qemu-img check of the
 * file and its chain), and merges the overlay back; see qemu/backup-job.ts.
 * A stopped VM's disk is copied with qemu-img.
 *
 * Backups and migrations of one VM coexist: a backup asked for during a
 * migration freezes the disk once the migration ended; a migration asked
 * for during a backup runs (the VM moves on overlay + frozen image, both on
 * the shared volume) while the copy goes on, and the backup merges the
 * overlay back in the target's QEMU once the migration ended. The record
 * says how long the backup waited and where it merged. Only the freeze and
 * the merge hold the VM's block lock, for a moment each; a migration that
 * starts then waits for them.
 *
 * Store keys: backups/<id> → BackupRecord. Files: <backup store>/<vm>/<id>.qcow2
 * (the store defaults to the shared volume's backups/ directory).
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Controller } from '../controller.js';
import { validateName } from '../../domain/validate.js';
import { ErrorCode, FerryError, errors, toFerryError } from '../../domain/errors.js';
import { type VmRecord, VmState } from '../../domain/records.js';
import { copyFrozenImage, type FreezeResult, mergeOverlayOffline, verifyImage } from '../../qemu/backup-job.js';
import { replaceImage } from '../../qemu/mirror-job.js';
import type { BackupRecord } from '../../domain/backups.js';
export type { BackupRecord };

const run = promisify(execFile);

const WAIT_STEP_MS = 200;
const MAX_WAIT_MS = 30 * 60_000;

export class Backups {
  /** Backups running in this process, by VM: a migration of that VM is refused meanwhile. */
  private readonly running = new Map<string, string>();
  /** Per VM: a backup is freezing or merging its disk (migrations wait, see quiesce). */
  private readonly locks = new Map<string, Promise<void>>();

  constructor(
    private readonly c: Controller,
    readonly dir: string,
  ) {}

  private key(id: string): string {
    return `backups/${id}`;
  }

  async list(vm?: string): Promise<BackupRecord[]> {
    return (await this.c.store.list<BackupRecord>('backups/')).map((e) => e.value).filter((b) => !vm || b.vm === vm).sort((a, b) => a.requestedAtMs - b.requestedAtMs);
  }

  async get(id: string): Promise<BackupRecord> {
    const e = await this.c.store.get<BackupRecord>(this.key(id));
    if (!e) throw new FerryError(ErrorCode.InvalidArgument, `no backup '${id}' (see 'ferry backup list')`, { details: { backup: id } });
    return e.value;
  }

  /** The backup running for a VM, if any (migrations check this). */
  runningFor(vm: string): string | undefined {
    return this.running.get(vm);
  }

  private async save(b: BackupRecord): Promise<BackupRecord> {
    await this.c.store.put(this.key(b.id), b);
    return b;
  }

  async create(vmName: string, opts: { incremental?: boolean; scheduled?: boolean; bandwidthMiBps?: unknown } = {}): Promise<BackupRecord> {
    validateName('VM', vmName);
    const bw = opts.bandwidthMiBps;
    if (bw !== undefined && (typeof bw !== 'number' || !Number.isInteger(bw) || bw < 1 || bw > 100000)) {
      throw errors.invalid('bandwidth', `--bandwidth must be a whole number of MiB/s from 1 to 100000, got '${String(bw)}'`);
    }
    const vm = await this.c.vm(vmName);
    if (this.running.has(vmName)) throw errors.invalidState(`a backup of VM '${vmName}' is already running (${this.running.get(vmName)})`);
    const mode = opts.incremental ? 'incremental' : 'full';
    let parent: BackupRecord | undefined;
    if (mode === 'incremental') {
      parent = (await this.list(vmName)).filter((b) => b.status === 'completed').at(-1);
      if (!parent) throw errors.invalidState(`VM '${vmName}' has no completed backup to build an incremental one on: take a full backup first`);
      if (vm.state !== VmState.Running) throw errors.invalidState(`VM '${vmName}' is ${vm.state}: incremental backups need the running VM's change bitmap`);
    }
    const id = `b-${Date.now().toString(36)}-${randomUUID().slice(0, 4)}`;
    const file = path.join((await this.c.settings()).backupStore || this.dir, vmName, `${id}.qcow2`);
    const record: BackupRecord = {
      id, vm: vmName, mode, file, status: 'waiting', requestedAtMs: this.c.clock.nowMs(), sizeBytes: vm.diskGiB * 1073741824,
      ...(parent ? { parent: parent.id } : {}), ...(opts.scheduled ? { scheduled: true } : {}),
    };
    this.running.set(vmName, id);
    let frozen: FreezeResult | undefined;
    let copied = false;
    let failure: FerryError | undefined;
    try {
      await this.save(record);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      // A migration of this VM runs: wait for it, then freeze the disk wherever the VM is.
      const waitStart = this.c.clock.nowMs();
      const current = await this.whenNoMigration(vmName, async (cur) => {
        record.waitedMs = this.c.clock.nowMs() - waitStart;
        if (cur.state !== VmState.Running) return cur;
        const overlay = path.join(this.c.layout.overlays, `${vmName}-${id}.qcow2`);
        fs.mkdirSync(path.dirname(overlay), { recursive: true });
        frozen = await (await this.c.agentFor(cur.node)).freezeDisk(vmName, overlay, mode);
        // The VM's disk is the overlay on its frozen image until the merge (a stop and start keeps both).
        await this.c.updateVm(vmName, (v) => ({ ...v, diskPath: overlay }));
        return cur;
      });
      record.status = 'running';
      record.startedAtMs = this.c.clock.nowMs();
      record.node = current.node;
      await this.save(record);
      if (frozen) {
        // The copy runs outside the VM's QEMU: the VM may migrate meanwhile.
        const res = await copyFrozenImage({
          source: frozen.base, target: file, mode, sizeBytes: record.sizeBytes, ...(parent ? { parent: parent.file } : {}), ...(bw ? { bytesPerSec: (bw as number) * 1048576 } : {}),
          // A migration of the VM gets the I/O: the copy waits for it, then finishes from the shared volume.
          hold: async () => (await this.c.vm(vmName)).migrationId !== undefined,
          pidFile: path.join(this.c.layout.run, `qsd-backup-${id}.pid`),
        });
        record.bytes = res.bytes;
        if (res.pausedMs) {
          record.copyPausedMs = res.pausedMs;
          record.waitedMs = (record.waitedMs ?? 0) + res.pausedMs;
        }
      } else if (current.state === VmState.Stopped) {
        await run('qemu-img', ['convert', '-O', 'qcow2', current.diskPath, file]);
        record.bytes = fs.statSync(file).size;
      } else {
        throw errors.invalidState(`VM '${vmName}' is ${current.state}: only running or stopped VMs are backed up`);
      }
      await verifyImage(file);
      record.verified = true;
      copied = true;
    } catch (e) {
      failure = toFerryError(e);
      fs.rmSync(file, { force: true });
      record.status = 'failed';
      record.error = failure.message;
    }
    try {
      if (frozen) await this.merge(record, frozen, copied);
    } catch (e) {
      // The backup stands; the VM keeps running on overlay + image, both on the shared volume.
      record.mergeError = toFerryError(e).message;
      await this.c.event({ type: 'backup.merge-failed', vm: vmName, message: `backup ${id} of ${vmName}: merging the overlay back failed: ${record.mergeError}` });
    } finally {
      this.running.delete(vmName);
    }
    record.finishedAtMs = this.c.clock.nowMs();
    if (copied) {
      record.status = 'completed';
      await this.save(record);
      const waited = (record.waitedMs ?? 0) >= 100 ? `waited ${record.waitedMs} ms for migrations (copy paused ${record.copyPausedMs ?? 0} ms, merge on ${record.mergedOn ?? record.node} waited ${record.mergeWaitedMs ?? 0} ms)` : '';
      await this.c.event({ type: 'backup.completed', vm: vmName, message: `${mode} backup ${id} of ${vmName}: ${record.bytes} bytes copied${waited ? `, ${waited}` : ''}`, data: { backup: id } });
      return record;
    }
    await this.save(record).catch(() => {});
    await this.c.event({ type: 'backup.failed', vm: vmName, message: `backup ${id} of ${vmName} failed: ${record.error}` });
    throw failure!;
  }

  /**
   * Runs `fn` once no migration of the VM is queued or running, holding the
   * VM's block lock (a migration starting meanwhile waits for it, see
   * `quiesce`). Waits at most MAX_WAIT_MS.
   */
  private async whenNoMigration<T>(vmName: string, fn: (vm: VmRecord) => Promise<T>): Promise<T> {
    const started = this.c.clock.nowMs();
    for (;;) {
      if (this.c.clock.nowMs() - started > MAX_WAIT_MS) throw errors.timeout(`the migration of '${vmName}' to end`, MAX_WAIT_MS);
      // A replica sync in flight ends first (it reads the disk the freeze would put under an overlay).
      if (!(await this.c.vm(vmName)).migrationId && !this.locks.has(vmName) && !this.c.replicas.isSyncing(vmName)) {
        let release!: () => void;
        this.locks.set(vmName, new Promise<void>((r) => (release = r)));
        try {
          // Checked again under the lock: a migration asked for in between runs first.
          const vm = await this.c.vm(vmName);
          if (!vm.migrationId) return await fn(vm);
        } finally {
          this.locks.delete(vmName);
          release();
        }
      }
      await this.c.clock.sleep(WAIT_STEP_MS);
    }
  }

  /**
   * After a controller restart: a backup that was waiting or running then
   * failed (its copy died with the controller); a VM still on its overlay
   * is merged back where it runs (retried until its node answers).
   */
  async recover(): Promise<void> {
    for (const b of await this.list()) {
      if (b.status !== 'waiting' && b.status !== 'running') continue;
      fs.rmSync(b.file, { force: true });
      await this.save({ ...b, status: 'failed', error: 'the controller stopped during the backup', finishedAtMs: this.c.clock.nowMs() });
      const vm = await this.c.vm(b.vm).catch(() => undefined);
      const overlay = vm?.diskPath;
      if (!overlay || path.dirname(overlay) !== this.c.layout.overlays) continue;
      const info = JSON.parse((await run('qemu-img', ['info', '-U', '--output=json', overlay])).stdout) as { 'full-backing-filename'?: string; 'backing-filename'?: string };
      const base = info['full-backing-filename'] ?? info['backing-filename'];
      if (!base) continue;
      this.running.set(b.vm, b.id);
      void (async () => {
        for (let attempt = 1; ; attempt++) {
          try {
            await this.merge(b, { base, overlay }, false);
            await this.c.event({ type: 'backup.recovered', vm: b.vm, message: `backup ${b.id} of ${b.vm} failed with the controller; its overlay was merged back on ${b.mergedOn}` });
            break;
          } catch (e) {
            if (attempt >= 30) {
              await this.c.event({ type: 'backup.merge-failed', vm: b.vm, message: `backup ${b.id} of ${b.vm}: merging the overlay back failed: ${toFerryError(e).message}` });
              break;
            }
            await this.c.clock.sleep(2000);
          }
        }
        this.running.delete(b.vm);
      })();
    }
  }

  /** A migration about to move the VM waits here while a backup freezes or merges its disk. */
  async quiesce(vmName: string): Promise<void> {
    while (this.locks.has(vmName)) await this.locks.get(vmName);
  }

  /** Merges the overlay back where the VM runs now, once no migration runs (offline if it is not running). */
  private async merge(record: BackupRecord, frozen: FreezeResult, copied: boolean): Promise<void> {
    const waitStart = this.c.clock.nowMs();
    const node = await this.whenNoMigration(record.vm, async (cur) => {
      record.mergeWaitedMs = this.c.clock.nowMs() - waitStart;
      if (cur.state === VmState.Running) await (await this.c.agentFor(cur.node)).mergeOverlay(record.vm, copied);
      else await mergeOverlayOffline(frozen.overlay, frozen.base, copied);
      await this.c.updateVm(record.vm, (v) => ({ ...v, diskPath: frozen.base }));
      return cur.node;
    });
    record.mergedOn = node;
    if (node !== record.node) record.movedTo = node;
    record.waitedMs = (record.waitedMs ?? 0) + (record.mergeWaitedMs ?? 0);
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
      const source = await this.c.vm(b.vm).catch(() => undefined);
      const vm = await this.c.createVm({
        name: opts.as, memoryMiB: source?.memoryMiB ?? 256, cpus: source?.cpus ?? 1, diskGiB: Math.ceil(b.sizeBytes / 1073741824),
        workload: source?.workload ?? 'idle', ...(source?.switch ? { switch: source.switch } : {}),
      });
      try {
        await replaceImage(vm.diskPath, [b.file]);
      } catch (e) {
        await this.c.deleteVm(vm.name).catch(() => {});
        throw toFerryError(e);
      }
      await this.c.event({ type: 'backup.restored', vm: vm.name, message: `backup ${id} of ${b.vm} restored as ${vm.name}` });
      return vm;
    }
    const vm = await this.c.vm(b.vm);
    if (vm.state !== VmState.Stopped) throw errors.invalidState(`VM '${b.vm}' is ${vm.state}: stop it to restore its disk in place, or restore --as NAME`);
    if (this.running.has(b.vm)) throw errors.invalidState(`a backup of VM '${b.vm}' is running (${this.running.get(b.vm)}): restore in place after it`);
    await replaceImage(vm.diskPath, [b.file]);
    await this.c.event({ type: 'backup.restored', vm: vm.name, message: `backup ${id} restored onto ${vm.name}'s disk` });
    return vm;
  }

  /**
   * Deletes a backup. One another backup builds on is refused, unless
   * `mergeIntoChildren` (pruning): then its data is first merged into each
   * backup built on it (`qemu-img rebase` onto its own base, which copies
   * what differs), so those still restore without it.
   */
  async delete(id: string, opts: { mergeIntoChildren?: boolean } = {}): Promise<BackupRecord> {
    const b = await this.get(id);
    if (b.status === 'running' || b.status === 'waiting') throw errors.invalidState(`backup '${id}' is ${b.status}`);
    const children = (await this.list()).filter((x) => x.parent === id);
    if (children.length && !opts.mergeIntoChildren) throw errors.invalidState(`backup '${id}' is the base of ${children.map((x) => x.id).join(', ')}: delete those first`);
    const base = b.parent ? await this.get(b.parent) : undefined;
    for (const child of children) {
      await run('qemu-img', ['rebase', '-q', '-f', 'qcow2', ...(base ? ['-F', 'qcow2', '-b', base.file] : ['-b', '']), child.file]);
      await verifyImage(child.file);
      const next: BackupRecord = { ...child, mergedFrom: [...(child.mergedFrom ?? []), id] };
      if (base) next.parent = base.id;
      else delete next.parent;
      await this.save(next);
    }
    fs.rmSync(b.file, { force: true });
    await this.c.store.delete(this.key(id));
    await this.c.event({ type: 'backup.deleted', vm: b.vm, message: `backup ${id} of ${b.vm} deleted${children.length ? ` (merged into ${children.map((x) => x.id).join(', ')})` : ''}` });
    return b;
  }
}

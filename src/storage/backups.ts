/**
 * Online backups (R13) on the controller. A backup of a running VM is a
 * QEMU backup job on the VM's node (see qemu/backup-job.ts): full, or
 * incremental from the persistent change bitmap into a file backed by the
 * previous backup. Every backup is verified (qemu-img check of the file and
 * its chain) before it is recorded as complete. A stopped VM's disk is
 * copied with qemu-img.
 *
 * Backups and migrations do not run at the same time on one VM: a backup
 * asked for during a migration waits for it (the record says how long), and
 * a migration asked for during a backup is refused until the backup ends.
 *
 * Store keys: backups/<id> → BackupRecord. Files: <backup store>/<vm>/<id>.qcow2
 * (the store defaults to the shared volume's backups/ directory).
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Controller } from '../cluster/controller.js';
import { validateName } from '../cluster/validate.js';
import { ErrorCode, FerryError, errors, toFerryError } from '../errors.js';
import { type VmRecord, VmState } from '../model.js';
import { verifyImage } from '../qemu/backup-job.js';

const run = promisify(execFile);

export interface BackupRecord {
  id: string;
  vm: string;
  mode: 'full' | 'incremental';
  /** The backup this one's file is backed by (incremental). */
  parent?: string;
  file: string;
  status: 'waiting' | 'running' | 'completed' | 'failed';
  requestedAtMs: number;
  startedAtMs?: number;
  finishedAtMs?: number;
  /** Time spent waiting for a migration of the VM to end. */
  waitedMs?: number;
  /** Bytes QEMU copied. */
  bytes?: number;
  /** Taken by a backup schedule (only these are pruned). */
  scheduled?: boolean;
  /** A pruned base was merged into it: it no longer needs that base. */
  mergedFrom?: string[];
  /** The disk's virtual size. */
  sizeBytes: number;
  node?: string;
  verified?: boolean;
  error?: string;
}

const WAIT_STEP_MS = 200;
const MAX_WAIT_MS = 30 * 60_000;

export class Backups {
  /** Backups running in this process, by VM: a migration of that VM is refused meanwhile. */
  private readonly running = new Map<string, string>();

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

  async create(vmName: string, opts: { incremental?: boolean; scheduled?: boolean } = {}): Promise<BackupRecord> {
    validateName('VM', vmName);
    const vm = await this.c.vm(vmName);
    if (this.running.has(vmName)) throw errors.invalidState(`a backup of VM '${vmName}' is already running (${this.running.get(vmName)})`);
    const mode = opts.incremental ? 'incremental' : 'full';
    let parent: BackupRecord | undefined;
    if (mode === 'incremental') {
      parent = (await this.list(vmName)).filter((b) => b.status === 'completed').at(-1);
      if (!parent) throw errors.invalidState(`VM '${vmName}' has no completed backup to build an incremental one on: take a full backup first`);
      if (vm.state !== VmState.Running && vm.state !== VmState.Migrating) throw errors.invalidState(`VM '${vmName}' is ${vm.state}: incremental backups need the running VM's change bitmap`);
    }
    const id = `b-${Date.now().toString(36)}-${randomUUID().slice(0, 4)}`;
    const file = path.join(this.dir, vmName, `${id}.qcow2`);
    const record: BackupRecord = {
      id, vm: vmName, mode, file, status: 'waiting', requestedAtMs: this.c.clock.nowMs(), sizeBytes: vm.diskGiB * 1073741824,
      ...(parent ? { parent: parent.id } : {}), ...(opts.scheduled ? { scheduled: true } : {}),
    };
    this.running.set(vmName, id);
    try {
      await this.save(record);
      // A migration of this VM runs: wait for it, then back up wherever the VM is.
      const waitStart = this.c.clock.nowMs();
      let current = await this.c.vm(vmName);
      while (current.migrationId) {
        if (this.c.clock.nowMs() - waitStart > MAX_WAIT_MS) throw errors.timeout(`the migration of '${vmName}' to end`, MAX_WAIT_MS);
        await this.c.clock.sleep(WAIT_STEP_MS);
        current = await this.c.vm(vmName);
      }
      record.waitedMs = this.c.clock.nowMs() - waitStart;
      record.status = 'running';
      record.startedAtMs = this.c.clock.nowMs();
      record.node = current.node;
      await this.save(record);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      if (current.state === VmState.Running) {
        const agent = await this.c.agentFor(current.node);
        try {
          const res = await agent.backup(vmName, { target: file, mode, sizeBytes: record.sizeBytes, ...(parent ? { parent: parent.file } : {}) });
          record.bytes = res.bytes;
        } catch (e) {
          // The change bitmap now counts from a backup that did not happen: the next must be full.
          if (mode === 'full') await agent.resetBackupBitmap(vmName).catch(() => {});
          throw e;
        }
      } else if (current.state === VmState.Stopped) {
        await run('qemu-img', ['convert', '-O', 'qcow2', current.diskPath, file]);
        record.bytes = fs.statSync(file).size;
      } else {
        throw errors.invalidState(`VM '${vmName}' is ${current.state}: only running or stopped VMs are backed up`);
      }
      await verifyImage(file);
      record.verified = true;
      record.status = 'completed';
      record.finishedAtMs = this.c.clock.nowMs();
      await this.save(record);
      await this.c.event({ type: 'backup.completed', vm: vmName, message: `${mode} backup ${id} of ${vmName}: ${record.bytes} bytes copied${record.waitedMs ? `, waited ${record.waitedMs} ms for a migration` : ''}`, data: { backup: id } });
      return record;
    } catch (e) {
      const err = toFerryError(e);
      fs.rmSync(file, { force: true });
      record.status = 'failed';
      record.error = err.message;
      record.finishedAtMs = this.c.clock.nowMs();
      await this.save(record).catch(() => {});
      await this.c.event({ type: 'backup.failed', vm: vmName, message: `backup ${id} of ${vmName} failed: ${err.message}` });
      throw err;
    } finally {
      this.running.delete(vmName);
    }
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
        await run('qemu-img', ['convert', '-O', 'qcow2', b.file, vm.diskPath]);
      } catch (e) {
        await this.c.deleteVm(vm.name).catch(() => {});
        throw toFerryError(e);
      }
      await this.c.event({ type: 'backup.restored', vm: vm.name, message: `backup ${id} of ${b.vm} restored as ${vm.name}` });
      return vm;
    }
    const vm = await this.c.vm(b.vm);
    if (vm.state !== VmState.Stopped) throw errors.invalidState(`VM '${b.vm}' is ${vm.state}: stop it to restore its disk in place, or restore --as NAME`);
    const tmp = `${vm.diskPath}.restore`;
    await run('qemu-img', ['convert', '-O', 'qcow2', b.file, tmp]);
    fs.renameSync(tmp, vm.diskPath);
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

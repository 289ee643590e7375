/**
 * An online backup of a running VM's disk with QEMU's own block layer: a
 * `blockdev-backup` job (copy-before-write, so the copy is the disk as it
 * was when the job started, while the guest keeps writing) into a qcow2
 * target, and a persistent dirty bitmap on the disk that records what
 * changed since, for the next incremental backup. A full backup starts the
 * job and (re)starts the bitmap in one transaction, so both share one point
 * in time; an incremental one copies only the bitmap's blocks into a target
 * whose backing file is the previous backup.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { ErrorCode, FerryError } from '../errors.js';
import type { QmpClient } from '../qmp/client.js';
import { diskRootNode, qmpExec } from './mirror-job.js';

const run = promisify(execFile);

export const BACKUP_BITMAP = 'ferry-backup';

export interface BackupJobRequest {
  /** The backup file to write (qcow2). */
  target: string;
  mode: 'full' | 'incremental';
  /** Incremental: the previous backup, which becomes the target's backing file. */
  parent?: string;
  sizeBytes: number;
}

export interface BackupJobResult {
  /** Bytes QEMU copied (an incremental copies only changed blocks). */
  bytes: number;
  ms: number;
}

type Exec = ReturnType<typeof qmpExec>;

export async function runBackupJob(qmp: QmpClient, req: BackupJobRequest): Promise<BackupJobResult> {
  const exec: Exec = qmpExec(qmp);
  // The disk's node: disk0 from the command line, or the image a storage move switched to.
  const disk = await diskRootNode(exec);
  const started = Date.now();
  const id = `bk${started.toString(36)}`;
  const node = `${id}-target`;
  const createArgs = ['create', '-q', '-f', 'qcow2'];
  if (req.mode === 'incremental') createArgs.push('-F', 'qcow2', '-b', req.parent!);
  await run('qemu-img', [...createArgs, req.target, String(req.sizeBytes)]);
  let added = false;
  try {
    await exec('blockdev-add', { driver: 'qcow2', 'node-name': node, file: { driver: 'file', filename: req.target } });
    added = true;
    const bitmaps = await bitmapNames(exec, disk);
    if (req.mode === 'incremental') {
      if (!bitmaps.includes(BACKUP_BITMAP)) throw new FerryError(ErrorCode.InvalidState, 'the disk has no change bitmap: take a full backup first');
      await exec('blockdev-backup', { 'job-id': id, device: disk, target: node, sync: 'incremental', bitmap: BACKUP_BITMAP, 'bitmap-mode': 'on-success', 'auto-dismiss': false });
    } else {
      // The bitmap starts counting (or starts again) at the backup's point in time.
      const bitmap = bitmaps.includes(BACKUP_BITMAP)
        ? { type: 'block-dirty-bitmap-clear', data: { node: disk, name: BACKUP_BITMAP } }
        : { type: 'block-dirty-bitmap-add', data: { node: disk, name: BACKUP_BITMAP, persistent: true } };
      const actions = [bitmap, { type: 'blockdev-backup', data: { 'job-id': id, device: disk, target: node, sync: 'full', 'auto-dismiss': false } }];
      await exec('transaction', { actions });
    }
    const bytes = await waitJob(exec, id);
    return { bytes, ms: Date.now() - started };
  } catch (e) {
    fs.rmSync(req.target, { force: true });
    throw e instanceof FerryError ? e : new FerryError(ErrorCode.Internal, `backup job failed: ${(e as Error).message}`, { cause: e });
  } finally {
    if (added) await exec('blockdev-del', { 'node-name': node }).catch(() => {});
  }
}

async function bitmapNames(exec: Exec, disk: string): Promise<string[]> {
  const blocks = (await exec('query-named-block-nodes', { flat: true })) as { 'node-name': string; 'dirty-bitmaps'?: { name: string }[] }[];
  return blocks.find((b) => b['node-name'] === disk)?.['dirty-bitmaps']?.map((b) => b.name) ?? [];
}

async function waitJob(exec: Exec, id: string): Promise<number> {
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    const jobs = (await exec('query-jobs')) as { id: string; status: string; 'current-progress': number; error?: string }[];
    const job = jobs.find((j) => j.id === id);
    if (!job) throw new FerryError(ErrorCode.Internal, `backup job ${id} disappeared`);
    if (job.status === 'concluded') {
      await exec('job-dismiss', { id }).catch(() => {});
      if (job.error) throw new FerryError(ErrorCode.Internal, `QEMU's backup job failed: ${job.error}`);
      return job['current-progress'];
    }
    if (Date.now() > deadline) {
      await exec('job-cancel', { id }).catch(() => {});
      throw new FerryError(ErrorCode.Timeout, `backup job ${id} did not finish within 30 min`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Drops the change bitmap (after a failed backup, the next one must be full). */
export async function dropBitmap(qmp: QmpClient): Promise<void> {
  const exec = qmpExec(qmp);
  await exec('block-dirty-bitmap-remove', { node: await diskRootNode(exec), name: BACKUP_BITMAP }).catch(() => {});
}

/** A backup file (and its backing chain) opens and its metadata is consistent. */
export async function verifyImage(file: string): Promise<void> {
  try {
    await run('qemu-img', ['check', '-q', file]);
    await run('qemu-img', ['info', '--backing-chain', file]);
  } catch (e) {
    throw new FerryError(ErrorCode.Internal, `backup ${file} does not verify: ${((e as { stderr?: string }).stderr ?? String(e)).trim()}`);
  }
}

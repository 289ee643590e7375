/**
 * Live storage move: QEMU's `blockdev-mirror` copies the running VM's disk
 * into a new qcow2 while the guest writes (writes during the copy are
 * mirrored), and once the copy is in sync `job-complete` switches the
 * device to the new image in one step. Until that switch the VM runs on its
 * original disk, so any failure before it leaves the VM as it was.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, FerryError } from '../domain/errors.js';
import type { QmpClient } from './qmp/client.js';

const run = promisify(execFile);

type Exec = (cmd: string, args?: Record<string, unknown>) => Promise<unknown>;

/** The node the VM's disk device reads and writes now (a storage move renames it). */
export async function diskRootNode(exec: Exec, deviceId = 'disk0-dev'): Promise<string> {
  const blocks = (await exec('query-block')) as { qdev?: string; device?: string; inserted?: { 'node-name': string } }[];
  const disk = blocks.find((b) => (b.qdev ?? '').includes(deviceId) || b.device === deviceId);
  if (!disk?.inserted) throw new FerryError(ErrorCode.Internal, `QEMU reports no disk for device ${deviceId}`);
  return disk.inserted['node-name'];
}

/**
 * Creates an empty qcow2 image, and its directory if only that is missing
 * (never `recursive`: Node's recursive mkdir can spin forever on pseudo file systems).
 */
export async function createImage(file: string, sizeBytes: number): Promise<void> {
  const dir = path.dirname(file);
  if (!fs.existsSync(dir)) fs.mkdirSync(dir);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(sizeBytes)]);
}

/**
 * Replaces a (stopped) VM's disk image with a standalone qcow2 copy of
 * `source`: qemu-img convert arguments ending in the input image (a
 * backing chain is flattened). Written beside it and renamed over it, so a
 * failed copy leaves the old image.
 */
export async function replaceImage(file: string, source: string[]): Promise<void> {
  const tmp = `${file}.new`;
  try {
    await run('qemu-img', ['convert', '-O', 'qcow2', ...source, tmp]);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** A block node as query-named-block-nodes reports it (the fields Ferry reads). */
export interface NamedNode {
  'node-name': string;
  drv: string;
  file: string;
  backing_file?: string;
  'dirty-bitmaps'?: { name: string; recording?: boolean; count: number }[];
}

export async function namedNodes(exec: Exec): Promise<NamedNode[]> {
  return (await exec('query-named-block-nodes', { flat: true })) as NamedNode[];
}

/** Whether a node carries the named dirty bitmap. */
export function hasBitmap(node: NamedNode | undefined, name: string): boolean {
  return (node?.['dirty-bitmaps'] ?? []).some((b) => b.name === name);
}

export type BlockJob = { id: string; status: string; 'current-progress': number; 'total-progress'?: number; error?: string };

/**
 * Waits until a block job is `ready` (in sync) or `concluded` (dismissing it
 * then); a job that fails or ends before `ready` throws with QEMU's error.
 */
export async function waitJob(exec: Exec, id: string, until: 'ready' | 'concluded', timeoutMs = 30 * 60_000): Promise<BlockJob> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = ((await exec('query-jobs')) as BlockJob[]).find((j) => j.id === id);
    if (!job) throw new FerryError(ErrorCode.Internal, `block job ${id} disappeared`);
    if (job.status === until || job.status === 'concluded') {
      if (job.status === 'concluded') {
        await exec('job-dismiss', { id }).catch(() => {});
        if (job.error) throw new FerryError(ErrorCode.Internal, `QEMU's block job ${id} failed: ${job.error}`);
        if (until === 'ready') throw new FerryError(ErrorCode.Internal, `QEMU's block job ${id} ended before it was in sync`);
      }
      return job;
    }
    if (Date.now() > deadline) {
      await exec('job-cancel', { id }).catch(() => {});
      throw new FerryError(ErrorCode.Timeout, `block job ${id} did not finish within ${Math.round(timeoutMs / 1000)} s`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function qmpExec(qmp: QmpClient): Exec {
  return (cmd, args = {}) => qmp.execute(cmd as never, args as never, { timeoutMs: 30_000 }) as Promise<unknown>;
}

export async function runMirrorJob(qmp: QmpClient, target: string, sizeBytes: number, timeoutMs = 30 * 60_000): Promise<{ bytes: number; ms: number }> {
  const exec = qmpExec(qmp);
  const started = Date.now();
  const id = `mv${started.toString(36)}`;
  const node = `disk-${id}`;
  await createImage(target, sizeBytes);
  let added = false;
  let switched = false;
  let source: string;
  try {
    await exec('blockdev-add', { driver: 'qcow2', 'node-name': node, file: { driver: 'file', filename: target, aio: 'threads' } });
    added = true;
    source = await diskRootNode(exec);
    await exec('blockdev-mirror', { 'job-id': id, device: source, target: node, sync: 'full', 'auto-dismiss': false, 'auto-finalize': true });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = ((await exec('query-jobs')) as { id: string; status: string; 'current-progress': number; error?: string }[]).find((j) => j.id === id);
      if (!job) throw new FerryError(ErrorCode.Internal, `storage move job ${id} disappeared`);
      if (job.status === 'ready') {
        await exec('job-complete', { id });
        switched = true;
      } else if (job.status === 'concluded') {
        await exec('job-dismiss', { id }).catch(() => {});
        if (job.error) throw new FerryError(ErrorCode.Internal, `QEMU's storage move failed: ${job.error}`);
        if (!switched) throw new FerryError(ErrorCode.Internal, 'the storage move ended before the switch');
        // The device runs on the new image; close the old one (its file node goes with it when QEMU named it).
        await exec('blockdev-del', { 'node-name': source }).catch(() => {});
        await exec('blockdev-del', { 'node-name': `${source}-file` }).catch(() => {});
        return { bytes: job['current-progress'], ms: Date.now() - started };
      }
      if (Date.now() > deadline && !switched) {
        await exec('job-cancel', { id }).catch(() => {});
        throw new FerryError(ErrorCode.Timeout, `storage move did not converge within ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (e) {
    // Before the switch the VM still runs on its original disk: drop the half-made copy.
    if (!switched) {
      if (added) await exec('blockdev-del', { 'node-name': node }).catch(() => {});
      fs.rmSync(target, { force: true });
    }
    throw e;
  }
}

/**
 * Online backups with QEMU's own block layer, built so that a backup and a
 * live migration of the same VM never get in each other's way:
 *
 *   freeze  (the VM's QEMU) one transaction: the disk's change bitmap
 *           `ferry-backup` stops recording, an external snapshot overlay on
 *           the shared volume takes every guest write from now on, and a
 *           new persistent bitmap `ferry-next` on the overlay records them.
 *           The disk image itself no longer changes: it is the backup's
 *           point in time.
 *   copy    (outside the VM's QEMU, see copyFrozenImage) a
 *           qemu-storage-daemon opens the frozen image read-only and runs a
 *           backup job into the backup file: everything (full) or only the
 *           blocks `ferry-backup` marks (incremental, into a file backed by
 *           the previous backup). The VM may live-migrate meanwhile: its
 *           QEMU on either node runs on overlay + frozen image, both on the
 *           shared volume, and the persistent bitmaps travel in the files;
 *           the copy pauses while the migration runs and then finishes.
 *   merge   (whichever QEMU runs the VM then, with no migration running)
 *           `block-commit` of the overlay into the disk; once in sync the
 *           bitmaps are swapped in one transaction (after a good copy
 *           `ferry-backup` becomes exactly `ferry-next`, the writes after
 *           the point in time; after a failed one it keeps its old blocks
 *           too, so the next incremental is still complete) and the device
 *           switches back to the disk image.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, FerryError } from '../domain/errors.js';
import { QmpClient } from './qmp/client.js';
import type { FreezeResult } from '../domain/block-jobs.js';
export type { FreezeResult };
import { type BlockJob, diskRootNode, hasBitmap, type NamedNode, namedNodes, qmpExec, waitJob } from './mirror-job.js';

const run = promisify(execFile);

export const BACKUP_BITMAP = 'ferry-backup';
const NEXT_BITMAP = 'ferry-next';

type Exec = ReturnType<typeof qmpExec>;

/** The format node of an image file (the qcow2 layer, not its file node). */
async function nodeOfImage(exec: Exec, file: string): Promise<NamedNode> {
  const n = (await namedNodes(exec)).find((x) => x.drv === 'qcow2' && x.file === file);
  if (!n) throw new FerryError(ErrorCode.Internal, `QEMU has no node for image ${file}`);
  return n;
}

/** Freezes the VM's disk image under a new overlay file (see the module comment). */
export async function freezeDisk(qmp: QmpClient, overlay: string, mode: 'full' | 'incremental'): Promise<FreezeResult> {
  const exec = qmpExec(qmp);
  const root = await diskRootNode(exec);
  const disk = (await namedNodes(exec)).find((n) => n['node-name'] === root);
  if (!disk) throw new FerryError(ErrorCode.Internal, `QEMU has no node ${root}`);
  // Frozen means the disk runs on one of Ferry's overlays; a linked clone's own backing file (a library image) is not one.
  if (disk.backing_file && path.dirname(disk.file) === path.dirname(overlay))
    throw new FerryError(ErrorCode.InvalidState, 'the disk is already frozen under an overlay (another backup has not merged yet)');
  const hadBitmap = hasBitmap(disk, BACKUP_BITMAP);
  if (mode === 'incremental' && !hadBitmap) throw new FerryError(ErrorCode.BitmapMissing, 'the disk has no change bitmap: take a full backup first');
  // The overlay's size is its backing image's.
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', disk.file, overlay]);
  const node = `ferry-ov-${Date.now().toString(36)}`;
  let added = false;
  try {
    await exec('blockdev-add', { driver: 'qcow2', 'node-name': node, file: { driver: 'file', filename: overlay, aio: 'threads' }, backing: null });
    added = true;
    if (!hadBitmap) await exec('block-dirty-bitmap-add', { node: root, name: BACKUP_BITMAP, persistent: true });
    await exec('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-disable', data: { node: root, name: BACKUP_BITMAP } },
        { type: 'blockdev-snapshot', data: { node: root, overlay: node } },
        { type: 'block-dirty-bitmap-add', data: { node, name: NEXT_BITMAP, persistent: true } },
      ],
    });
    return { base: disk.file, overlay };
  } catch (e) {
    if (added) await exec('blockdev-del', { 'node-name': node }).catch(() => {});
    fs.rmSync(overlay, { force: true });
    throw e instanceof FerryError ? e : new FerryError(ErrorCode.Internal, `freezing the disk failed: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Merges the overlay back into the frozen disk image in the running QEMU
 * and switches the device back to it. `copied`: the backup succeeded, so
 * the change bitmap restarts at its point in time.
 */
export async function mergeOverlay(qmp: QmpClient, copied: boolean): Promise<{ base: string; overlay: string }> {
  const exec = qmpExec(qmp);
  const top = await diskRootNode(exec);
  const topNode = (await namedNodes(exec)).find((n) => n['node-name'] === top);
  if (!topNode?.backing_file) throw new FerryError(ErrorCode.InvalidState, 'the disk is not frozen under an overlay');
  const base = await nodeOfImage(exec, topNode.backing_file);
  const id = `merge-${Date.now().toString(36)}`;
  // Into the frozen image only: without base-node QEMU commits down to the bottom of the chain, which for a
  // linked clone is the library's image that other VMs share.
  await exec('block-commit', { 'job-id': id, device: top, 'base-node': base['node-name'], 'auto-dismiss': false });
  await waitJob(exec, id, 'ready');
  const swap = [
    ...(copied ? [{ type: 'block-dirty-bitmap-clear', data: { node: base['node-name'], name: BACKUP_BITMAP } }] : []),
    { type: 'block-dirty-bitmap-merge', data: { node: base['node-name'], target: BACKUP_BITMAP, bitmaps: [{ node: top, name: NEXT_BITMAP }] } },
    { type: 'block-dirty-bitmap-enable', data: { node: base['node-name'], name: BACKUP_BITMAP } },
  ];
  await exec('transaction', { actions: swap });
  await exec('job-complete', { id });
  await waitJob(exec, id, 'concluded');
  // The device runs on the disk image again: close the overlay's nodes (named ones from a command line too).
  await exec('blockdev-del', { 'node-name': top }).catch(() => {});
  await exec('blockdev-del', { 'node-name': `${top}-file` }).catch(() => {});
  return { base: topNode.backing_file, overlay: topNode.file };
}

/**
 * Merges an overlay into its frozen image with no QEMU running the VM
 * (it was stopped or saved during the backup): the same bitmap swap with
 * qemu-img, then `qemu-img commit`.
 */
export async function mergeOverlayOffline(overlay: string, base: string, copied: boolean): Promise<void> {
  if (copied) await run('qemu-img', ['bitmap', '-f', 'qcow2', '--clear', base, BACKUP_BITMAP]);
  await run('qemu-img', ['bitmap', '-f', 'qcow2', '--merge', NEXT_BITMAP, '-b', overlay, '-F', 'qcow2', '--enable', base, BACKUP_BITMAP]);
  await run('qemu-img', ['commit', '-q', '-f', 'qcow2', overlay]);
  fs.rmSync(overlay, { force: true });
}

/**
 * Copies a frozen disk image into a backup file outside the VM's QEMU: a
 * qemu-storage-daemon opens it read-only (sharing it with the QEMU that
 * runs the VM on top of it) and runs a backup job, full or only the blocks
 * the image's `ferry-backup` bitmap marks. `parent`: the backup the new
 * file is backed by (incremental). Resolves with the bytes QEMU copied.
 */
export async function copyFrozenImage(req: {
  source: string;
  target: string;
  mode: 'full' | 'incremental';
  parent?: string;
  sizeBytes: number;
  bytesPerSec?: number;
  /** Asked every 100 ms: true pauses the copy until it says false again. */
  hold?: () => Promise<boolean>;
  /** Where the daemon writes its pid (a restarted controller stops leftovers, see killStaleStorageDaemons). */
  pidFile?: string;
  /** Where the daemon's QMP socket lives while it runs (under the state directory, never the system's temporary one). */
  workDir: string;
  /** Stops the copy (the daemon is killed; the call fails). */
  signal?: AbortSignal;
}): Promise<{ bytes: number; ms: number; pausedMs: number }> {
  for (const p of [req.source, req.target]) if (p.includes(',')) throw new FerryError(ErrorCode.InvalidArgument, `image paths may not contain commas: ${p}`);
  const started = Date.now();
  const createArgs = ['create', '-q', '-f', 'qcow2'];
  if (req.mode === 'incremental') createArgs.push('-F', 'qcow2', '-b', req.parent!);
  await run('qemu-img', [...createArgs, req.target, String(req.sizeBytes)]);
  fs.mkdirSync(req.workDir, { recursive: true, mode: 0o700 });
  const dir = fs.mkdtempSync(path.join(req.workDir, 'qsd-copy-'));
  const socket = path.join(dir, 'qmp.sock');
  const qsd = spawn(
    'qemu-storage-daemon',
    [
      '--blockdev',
      `driver=file,node-name=src-file,filename=${req.source},read-only=on,force-share=on`,
      '--blockdev',
      'driver=qcow2,node-name=src,file=src-file,read-only=on,force-share=on',
      '--blockdev',
      `driver=qcow2,node-name=tgt,file.driver=file,file.filename=${req.target}`,
      '--chardev',
      `socket,id=qmp,path=${socket},server=on,wait=off`,
      '--monitor',
      'chardev=qmp',
      ...(req.pidFile ? ['--pidfile', req.pidFile] : []),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  qsd.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => qsd.once('exit', () => resolve()));
  const onAbort = () => qsd.kill('SIGKILL');
  req.signal?.addEventListener('abort', onAbort, { once: true });
  let qmp: QmpClient | undefined;
  try {
    const deadline = Date.now() + 10_000;
    while (!fs.existsSync(socket)) {
      if (qsd.exitCode !== null || Date.now() > deadline)
        throw new FerryError(ErrorCode.Internal, `qemu-storage-daemon did not start: ${stderr.trim() || 'no QMP socket'}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    qmp = await QmpClient.connect(socket);
    const exec = qmpExec(qmp);
    const id = 'ferry-copy';
    // A full backup of an image without a backing file copies only what is allocated in it: the rest reads
    // as zeros, which is what the fresh target holds already (sync=top). With a backing chain, all of it.
    const nodes = (await exec('query-named-block-nodes')) as { 'node-name': string; backing_file?: string }[];
    const standalone = !nodes.find((n) => n['node-name'] === 'src')?.backing_file;
    await exec('blockdev-backup', {
      'job-id': id,
      device: 'src',
      target: 'tgt',
      'auto-dismiss': false,
      ...(req.bytesPerSec ? { speed: req.bytesPerSec } : {}),
      ...(req.mode === 'incremental' ? { sync: 'bitmap', bitmap: BACKUP_BITMAP, 'bitmap-mode': 'never' } : { sync: standalone ? 'top' : 'full' }),
    });
    // While `hold` says so (a migration of the VM runs) the copy waits, leaving the I/O to the move.
    let pausedMs = 0;
    if (req.hold) {
      let pausedAt: number | undefined;
      for (;;) {
        const job = ((await exec('query-jobs')) as BlockJob[]).find((j) => j.id === id);
        if (!job || job.status === 'concluded') break;
        const hold = await req.hold();
        if (hold && pausedAt === undefined && job.status === 'running') {
          await exec('job-pause', { id });
          pausedAt = Date.now();
        } else if (!hold && pausedAt !== undefined) {
          await exec('job-resume', { id });
          pausedMs += Date.now() - pausedAt;
          pausedAt = undefined;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const job = await waitJob(exec, id, 'concluded');
    await exec('quit').catch(() => {});
    return { bytes: job['current-progress'], ms: Date.now() - started, pausedMs };
  } catch (e) {
    fs.rmSync(req.target, { force: true });
    throw e instanceof FerryError ? e : new FerryError(ErrorCode.Internal, `copying ${req.source} failed: ${(e as Error).message}`, { cause: e });
  } finally {
    req.signal?.removeEventListener('abort', onAbort);
    qmp?.close();
    if (qsd.exitCode === null) {
      const t = setTimeout(() => qsd.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(dir, { recursive: true, force: true });
    if (req.pidFile) fs.rmSync(req.pidFile, { force: true });
  }
}

/**
 * Stops qemu-storage-daemons a previous controller started and could not
 * stop (it was killed): each left its pid in `dir` as qsd-*.pid.
 */
export function killStaleStorageDaemons(dir: string): number[] {
  const killed: number[] = [];
  let files: string[];
  try {
    files = fs.readdirSync(dir).filter((f) => /^qsd-.+\.pid$/.test(f));
  } catch {
    return killed;
  }
  for (const f of files) {
    const file = path.join(dir, f);
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    let cmdline = '';
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      // gone already
    }
    if (pid > 0 && cmdline.includes('qemu-storage-daemon')) {
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    }
    fs.rmSync(file, { force: true });
  }
  // Their QMP socket directories go too.
  for (const f of fs.readdirSync(dir)) if (/^qsd-copy-/.test(f)) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
  return killed;
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

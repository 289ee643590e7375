/**
 * Shared-nothing live migration's disk copy, with QEMU's own block layer
 * (the way libvirt copies non-shared disks):
 *
 *   target: its incoming QEMU opens a new, empty image and exports it
 *           writable over NBD (`nbd-server-start`, `block-export-add`);
 *   source: `blockdev-mirror` of the running disk into that export, in
 *           write-blocking mode, so once the job is `ready` every guest
 *           write completes only when it is on both disks;
 *   switch: memory migrates with `pause-before-switchover`; with the source
 *           paused, the mirror is ended (`block-job-cancel` of a ready
 *           mirror leaves both sides identical), the export is removed, and
 *           only then is the device state sent (`migrate-continue`), so the
 *           target starts on a complete disk.
 *
 * Until the switch the source runs on its own disk; any failure cancels the
 * mirror and the VM goes on as before.
 */
import net from 'node:net';
import { ErrorCode, FerryError } from '../domain/errors.js';
import type { QmpClient } from './qmp/client.js';
import { type BlockJob, diskRootNode, namedNodes, qmpExec, waitJob } from './mirror-job.js';

export const MIRROR_JOB = 'ferry-sn-mirror';
const EXPORT_ID = 'ferry-sn-export';
const EXPORT_NAME = 'disk0';
const TARGET_NODE = 'ferry-sn-target';

import type { NbdEndpoint } from '../domain/block-jobs.js';
export type { NbdEndpoint };

/** A free TCP port on `address` (QEMU's NBD server cannot report an ephemeral one). */
export async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, address, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Opens a client node for an NBD export (the target a mirror or backup job writes into). */
export async function addNbdNode(exec: ReturnType<typeof qmpExec>, nodeName: string, to: NbdEndpoint): Promise<void> {
  await exec('blockdev-add', { driver: 'nbd', 'node-name': nodeName, server: { type: 'inet', host: to.address, port: String(to.port) }, export: to.export });
}

/** Target: export the incoming QEMU's (empty) disk writable over NBD on `address`. */
export async function startNbdExport(qmp: QmpClient, address: string): Promise<NbdEndpoint> {
  const exec = qmpExec(qmp);
  const port = await freePort(address);
  await exec('nbd-server-start', { addr: { type: 'inet', data: { host: address, port: String(port) } } });
  try {
    await exec('block-export-add', { type: 'nbd', id: EXPORT_ID, 'node-name': await diskRootNode(exec), writable: true, name: EXPORT_NAME });
  } catch (e) {
    await exec('nbd-server-stop').catch(() => {});
    throw e;
  }
  return { address, port, export: EXPORT_NAME };
}

/** Target: remove the export and stop the NBD server (waits until QEMU dropped the export). */
export async function stopNbdExport(qmp: QmpClient): Promise<void> {
  const exec = qmpExec(qmp);
  const exports = (await exec('query-block-exports')) as { id: string }[];
  if (exports.some((e) => e.id === EXPORT_ID)) {
    await exec('block-export-del', { id: EXPORT_ID });
    const deadline = Date.now() + 10_000;
    while (((await exec('query-block-exports')) as { id: string }[]).some((e) => e.id === EXPORT_ID)) {
      if (Date.now() > deadline) throw new FerryError(ErrorCode.Timeout, 'the NBD export did not go away within 10 s');
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  await exec('nbd-server-stop').catch(() => {});
}

/**
 * Source: mirror the disk into the target's export and wait until the copy
 * is in sync (`ready`). Resolves with the bytes copied.
 */
export async function startNbdMirror(qmp: QmpClient, to: NbdEndpoint, timeoutMs = 30 * 60_000): Promise<{ bytes: number; ms: number }> {
  const exec = qmpExec(qmp);
  const started = Date.now();
  await addNbdNode(exec, TARGET_NODE, to);
  try {
    await exec('blockdev-mirror', {
      'job-id': MIRROR_JOB,
      device: await diskRootNode(exec),
      target: TARGET_NODE,
      sync: 'full',
      'copy-mode': 'write-blocking',
      'auto-dismiss': false,
      'auto-finalize': true,
    });
    const job = await waitJob(exec, MIRROR_JOB, 'ready', timeoutMs);
    return { bytes: job['current-progress'], ms: Date.now() - started };
  } catch (e) {
    await endNbdMirror(qmp, false).catch(() => {});
    throw e;
  }
}

/**
 * Source: end the mirror. `complete` (the VM is paused, the copy ready):
 * the target holds every block; otherwise the copy is abandoned. Either way
 * the VM's own disk stays its disk and the NBD connection is closed.
 * Resolves with the bytes the job copied in all.
 */
export async function endNbdMirror(qmp: QmpClient, complete: boolean): Promise<{ bytes: number }> {
  const exec = qmpExec(qmp);
  let bytes = 0;
  const job = ((await exec('query-jobs')) as BlockJob[]).find((j) => j.id === MIRROR_JOB);
  if (job) {
    if (complete && job.status !== 'ready') throw new FerryError(ErrorCode.MigrationFailed, `the disk copy is ${job.status}, not in sync`);
    if (job.status !== 'concluded') await exec('block-job-cancel', { device: MIRROR_JOB, force: !complete });
    const deadline = Date.now() + 60_000;
    for (;;) {
      const j = ((await exec('query-jobs')) as BlockJob[]).find((x) => x.id === MIRROR_JOB);
      if (!j || j.status === 'concluded' || j.status === 'null') {
        bytes = j?.['current-progress'] ?? job['current-progress'];
        if (j) await exec('job-dismiss', { id: MIRROR_JOB }).catch(() => {});
        if (complete && j?.error) throw new FerryError(ErrorCode.MigrationFailed, `QEMU's disk copy failed at the end: ${j.error}`);
        break;
      }
      if (Date.now() > deadline) throw new FerryError(ErrorCode.Timeout, 'the disk copy did not end within 60 s');
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  if ((await namedNodes(exec)).some((n) => n['node-name'] === TARGET_NODE)) await exec('blockdev-del', { 'node-name': TARGET_NODE });
  return { bytes };
}

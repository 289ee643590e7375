/**
 * One replica sync (R5) in the VM's QEMU: a `blockdev-backup` job (a
 * point-in-time copy: copy-before-write keeps the blocks as they were when
 * the job started while the guest writes on) into the replica side's NBD
 * export. The first sync copies everything and starts the persistent change
 * bitmap `ferry-replica` in the same transaction; every later one copies
 * only the blocks the bitmap marks and clears them when it succeeds
 * (`bitmap-mode: on-success`), so a failed or cancelled sync leaves them
 * for the next one. A disk without the bitmap (moved, or copied along a
 * shared-nothing migration, which does not carry bitmaps) gets a full sync.
 */
import type { QmpClient } from './qmp/client.js';
import { type BlockJob, diskRootNode, hasBitmap, namedNodes, qmpExec, waitJob } from './mirror-job.js';
import { addNbdNode, type NbdEndpoint } from './nbd-mirror.js';

export const REPLICA_BITMAP = 'ferry-replica';
const JOB = 'ferry-replica-sync';
const TARGET = 'ferry-replica-target';

import type { ReplicaSyncResult } from '../domain/block-jobs.js';
export type { ReplicaSyncResult };

export async function runReplicaJob(qmp: QmpClient, to: NbdEndpoint & { mode: 'full' | 'incremental' }): Promise<ReplicaSyncResult> {
  const exec = qmpExec(qmp);
  const started = Date.now();
  const disk = await diskRootNode(exec);
  const marked = hasBitmap(
    (await namedNodes(exec)).find((n) => n['node-name'] === disk),
    REPLICA_BITMAP,
  );
  const mode = to.mode === 'incremental' && marked ? 'incremental' : 'full';
  await addNbdNode(exec, TARGET, to);
  try {
    if (mode === 'incremental') {
      await exec('blockdev-backup', {
        'job-id': JOB,
        device: disk,
        target: TARGET,
        sync: 'incremental',
        bitmap: REPLICA_BITMAP,
        'bitmap-mode': 'on-success',
        'auto-dismiss': false,
      });
    } else {
      const bitmap = marked
        ? { type: 'block-dirty-bitmap-clear', data: { node: disk, name: REPLICA_BITMAP } }
        : { type: 'block-dirty-bitmap-add', data: { node: disk, name: REPLICA_BITMAP, persistent: true } };
      await exec('transaction', {
        actions: [bitmap, { type: 'blockdev-backup', data: { 'job-id': JOB, device: disk, target: TARGET, sync: 'full', 'auto-dismiss': false } }],
      });
    }
    const job = await waitJob(exec, JOB, 'concluded');
    return { mode, bytes: job['current-progress'], ms: Date.now() - started };
  } finally {
    await exec('blockdev-del', { 'node-name': TARGET }).catch(() => {});
  }
}

/** Cancels a running replica sync (a migration is about to move the VM); its blocks stay marked. */
export async function cancelReplicaJob(qmp: QmpClient): Promise<boolean> {
  const exec = qmpExec(qmp);
  const job = ((await exec('query-jobs')) as BlockJob[]).find((j) => j.id === JOB);
  if (!job || job.status === 'concluded') return false;
  await exec('job-cancel', { id: JOB });
  return true;
}

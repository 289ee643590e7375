/** Backups (R13) and backup schedules. */
import { createRoute, z } from '@hono/zod-openapi';
import { answers, body } from '../route-helpers.js';
import { BackupCreateBody, BackupRestoreBody, BackupScheduleBody, BackupScheduleSchema, BackupSchema, VmName, VmSchema } from '../schemas.js';

const params = z.object({ id: z.string().regex(/^b-[a-z0-9-]{1,40}$/, { error: (iss) => `no backup '${String(iss.input)}' (see 'ferry backup list')` }) });
const vmParams = z.object({ vm: VmName });
const tag = ['Backups'];

export const backupRoutes = {
  list: createRoute({
    method: 'get',
    path: '/api/v1/backups',
    tags: tag,
    summary: 'Backups, of one VM with ?vm=',
    request: { query: z.object({ vm: VmName.optional() }) },
    responses: answers(z.array(BackupSchema)),
  }),
  create: createRoute({
    method: 'post',
    path: '/api/v1/backups',
    tags: tag,
    summary: 'Back up a VM now (full or incremental); answers when it is verified',
    request: body(BackupCreateBody),
    responses: answers(BackupSchema),
  }),
  restore: createRoute({
    method: 'post',
    path: '/api/v1/backups/{id}/restore',
    tags: tag,
    summary: 'Restore a backup as a new VM, or onto its stopped VM',
    request: { params, ...body(BackupRestoreBody, false) },
    responses: answers(VmSchema),
  }),
  delete: createRoute({
    method: 'delete',
    path: '/api/v1/backups/{id}',
    tags: tag,
    summary: 'Delete a backup no other backup builds on',
    request: { params },
    responses: answers(BackupSchema),
  }),
  schedules: createRoute({
    method: 'get',
    path: '/api/v1/backup-schedules',
    tags: tag,
    summary: 'Backup schedules with their last run',
    responses: answers(z.array(BackupScheduleSchema)),
  }),
  schedule: createRoute({
    method: 'put',
    path: '/api/v1/backup-schedules/{vm}',
    tags: tag,
    summary: 'Back a VM up every so often inside a window, keeping the newest N scheduled backups',
    request: { params: vmParams, ...body(BackupScheduleBody) },
    responses: answers(BackupScheduleSchema),
  }),
  unschedule: createRoute({
    method: 'delete',
    path: '/api/v1/backup-schedules/{vm}',
    tags: tag,
    summary: "Stop a VM's scheduled backups (its backups stay)",
    request: { params: vmParams },
    responses: answers(BackupScheduleSchema),
  }),
};

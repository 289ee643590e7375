/** VMs: create, list, show, change, start, stop, save, delete, move storage, ping, console, migrate. */
import { createRoute, z } from '@hono/zod-openapi';
import { errors } from '../../domain/errors.js';
import type { ApiClient } from '../client.js';
import { answers, body } from '../route-helpers.js';
import {
  ConsoleInputBody,
  Empty,
  MigrateBody,
  MigrationCheckSchema,
  MigrationPlanSchema,
  MigrationSchema,
  MoveStorageBody,
  Ok,
  PingBody,
  VmCreateBody,
  VmName,
  VmSchema,
  VmSetBody,
  VmStartBody,
  VmStopBody,
  VmViewSchema,
} from '../schemas.js';

const params = z.object({ name: VmName });
const tag = ['VMs'];

export const vmRoutes = {
  list: createRoute({
    method: 'get',
    path: '/api/v1/vms',
    tags: tag,
    summary: "VMs, with a running migration's step and progress",
    responses: answers(z.array(VmViewSchema)),
  }),
  create: createRoute({ method: 'post', path: '/api/v1/vms', tags: tag, summary: 'Create a VM', request: body(VmCreateBody), responses: answers(VmSchema) }),
  show: createRoute({
    method: 'get',
    path: '/api/v1/vms/{name}',
    tags: tag,
    summary: 'One VM, with its migration and NIC offloads',
    request: { params },
    responses: answers(VmViewSchema),
  }),
  set: createRoute({
    method: 'patch',
    path: '/api/v1/vms/{name}',
    tags: tag,
    summary: 'Change compat mode, switch (stopped VMs) or migration policy',
    request: { params, ...body(VmSetBody) },
    responses: answers(VmSchema),
  }),
  delete: createRoute({
    method: 'delete',
    path: '/api/v1/vms/{name}',
    tags: tag,
    summary: 'Delete a stopped VM and its disk',
    request: { params },
    responses: answers(z.object({ deleted: z.string() })),
  }),
  start: createRoute({
    method: 'post',
    path: '/api/v1/vms/{name}/start',
    tags: tag,
    summary: 'Start (or restore a saved) VM',
    request: { params, ...body(VmStartBody, false) },
    responses: answers(VmSchema.extend({ restoredFrom: z.string().optional() })),
  }),
  stop: createRoute({
    method: 'post',
    path: '/api/v1/vms/{name}/stop',
    tags: tag,
    summary: 'Shut a VM down (ACPI; powered off after the timeout), or power it off (force)',
    request: { params, ...body(VmStopBody, false) },
    responses: answers(VmSchema.extend({ shutdown: z.object({ by: z.enum(['guest', 'force']), ms: z.number() }).optional() })),
  }),
  resume: createRoute({
    method: 'post',
    path: '/api/v1/vms/{name}/resume',
    tags: tag,
    summary: 'Resume a running VM whose guest is paused (an I/O error once its disk has room, a pause)',
    request: { params, ...body(Empty, false) },
    responses: answers(VmViewSchema),
  }),
  claim: createRoute({
    method: 'post',
    path: '/api/v1/vms/{name}/claim',
    tags: tag,
    summary: 'Take a VM lost with its failed host (which you say is off): it becomes stopped, to start on another host',
    request: { params, ...body(Empty, false) },
    responses: answers(VmSchema),
  }),
  save: createRoute({
    method: 'post',
    path: '/api/v1/vms/{name}/save',
    tags: tag,
    summary: 'Save a running VM to the shared volume',
    request: { params, ...body(Empty, false) },
    responses: answers(VmSchema),
  }),
  moveStorage: createRoute({
    method: 'post',
    path: '/api/v1/vms/{name}/move-storage',
    tags: tag,
    summary: "Move the VM's disk to another directory while it runs",
    request: { params, ...body(MoveStorageBody) },
    responses: answers(VmSchema.extend({ movedBytes: z.number(), ms: z.number() })),
  }),
  display: createRoute({
    method: 'get',
    path: '/api/v1/vms/{name}/display',
    tags: tag,
    summary: "Where the VM's screen is; a WebSocket upgrade of this path opens it (RFB, for noVNC)",
    request: { params },
    responses: answers(z.object({ vm: z.string(), node: z.string() })),
  }),
  ping: createRoute({
    method: 'post',
    path: '/api/v1/vms/{name}/ping',
    tags: tag,
    summary: 'Ping the VM through its virtual switch',
    request: { params, ...body(PingBody, false) },
    responses: answers(z.object({ vm: z.string(), ip: z.string(), switch: z.string().nullable(), answered: z.boolean(), rttMs: z.number().nullable() })),
  }),
  consoleInput: createRoute({
    method: 'post',
    path: '/api/v1/vms/{name}/console',
    tags: tag,
    summary: 'Type into the serial console',
    request: { params, ...body(ConsoleInputBody) },
    responses: answers(Ok),
  }),
  console: createRoute({
    method: 'get',
    path: '/api/v1/vms/{name}/console',
    tags: tag,
    summary: 'Serial console log (text); ?follow=1 streams',
    request: { params, query: z.object({ follow: z.enum(['0', '1']).optional() }) },
    responses: { 200: { description: 'The console log, then (follow) what the VM prints next', content: { 'text/plain': { schema: z.string() } } } },
  }),
  migrate: createRoute({
    method: 'post',
    path: '/api/v1/vms/{name}/migrate',
    tags: tag,
    summary: 'Live or quick migration (queued), or a check/plan',
    request: { params, ...body(MigrateBody) },
    responses: answers(z.union([MigrationSchema, MigrationCheckSchema, MigrationPlanSchema])),
  }),
};

/** Asks for a migration (not a check or a plan) and hands back its record. */
export async function requestMigration(api: ApiClient, name: string, b: z.input<typeof MigrateBody>): Promise<z.output<typeof MigrationSchema>> {
  const r = await api.call(vmRoutes.migrate, { params: { name }, body: b });
  if ('check' in r || 'plan' in r) throw errors.internal('asked for a migration, got a check or a plan');
  return r;
}

/** The controller path whose WebSocket upgrade is a VM's screen. */
export const DISPLAY_PATH = /^\/api\/v1\/vms\/([^/]+)\/display$/;

/** VMs: create, list, show, change, start, stop, save, delete, move storage, ping, console, migrate. */
import { type OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { stream } from 'hono/streaming';
import { errors } from '../../domain/errors.js';
import { VmState } from '../../domain/records.js';
import { switchOf } from '../../domain/switches.js';
import type { ControllerServices } from '../../controller/services.js';
import type { ApiClient } from '../client.js';
import { answers, body } from '../http.js';
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
    summary: 'Stop a VM',
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

export function mountVms(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(vmRoutes.list, async (c) => c.json(await Promise.all((await s.vms.list()).map((vm) => s.migrations.decorate(vm))), 200));
  app.openapi(vmRoutes.create, async (c) => c.json(await s.lifecycle.create(c.req.valid('json')), 200));
  app.openapi(vmRoutes.show, async (c) => {
    const vm = await s.migrations.decorate(await s.vms.get(c.req.valid('param').name));
    const nic = vm.state === VmState.Running && vm.node ? await s.nicOf(vm.name) : undefined;
    return c.json(nic ? { ...vm, nic } : vm, 200);
  });
  app.openapi(vmRoutes.set, async (c) => {
    const b = c.req.valid('json');
    return c.json(
      await s.lifecycle.set(c.req.valid('param').name, {
        ...(b.compat !== undefined ? { compat: b.compat } : {}),
        ...(b.switch !== undefined ? { switch: b.switch } : {}),
        ...(b.policy !== undefined ? { policy: b.policy } : {}),
      }),
      200,
    );
  });
  app.openapi(vmRoutes.delete, async (c) => {
    const { name } = c.req.valid('param');
    await s.lifecycle.delete(name);
    return c.json({ deleted: name }, 200);
  });
  app.openapi(vmRoutes.start, async (c) => c.json(await s.lifecycle.start(c.req.valid('param').name, c.req.valid('json')), 200));
  app.openapi(vmRoutes.stop, async (c) => c.json(await s.lifecycle.stop(c.req.valid('param').name), 200));
  app.openapi(vmRoutes.save, async (c) => c.json(await s.lifecycle.save(c.req.valid('param').name), 200));
  app.openapi(vmRoutes.moveStorage, async (c) => c.json(await s.lifecycle.moveStorage(c.req.valid('param').name, c.req.valid('json').to), 200));
  app.openapi(vmRoutes.ping, async (c) => {
    const vm = await s.vms.get(c.req.valid('param').name);
    if (vm.state !== VmState.Running) throw errors.invalidState(`VM '${vm.name}' is ${vm.state}`);
    const timeoutMs = c.req.valid('json').timeoutMs ?? 2000;
    const ip = vm.ip.split('/')[0]!;
    const sw = switchOf(vm);
    if (!sw) return c.json({ vm: vm.name, ip, answered: false, rttMs: null, switch: null }, 200);
    return c.json({ vm: vm.name, ip, switch: sw, ...(await s.switchControl.ping(ip, vm.mac, timeoutMs, sw)) }, 200);
  });
  app.openapi(vmRoutes.consoleInput, async (c) => {
    await s.lifecycle.consoleInput(c.req.valid('param').name, c.req.valid('json').data);
    return c.json({}, 200);
  });
  app.openapi(vmRoutes.console, async (c) => {
    const file = await s.lifecycle.consoleLog(c.req.valid('param').name);
    const follow = c.req.valid('query').follow === '1';
    c.header('content-type', 'text/plain; charset=utf-8');
    c.header('cache-control', 'no-store');
    // The log is appended by whichever node runs the VM, so following the
    // file keeps the console attached across a migration.
    return stream(c, async (out) => {
      let offset = 0;
      const pump = async () => {
        const { data, size } = s.volume.readFrom(file, offset);
        if (size < offset) offset = 0;
        if (data.length) {
          offset += data.length;
          await out.write(data);
        }
      };
      await pump();
      if (!follow) return;
      const gone = new AbortController();
      out.onAbort(() => gone.abort());
      while (!gone.signal.aborted && !out.aborted) {
        await s.clock.sleep(100, gone.signal).catch(() => {});
        await pump();
      }
    }) as never;
  });
  app.openapi(vmRoutes.migrate, async (c) => c.json(await s.migrations.request(c.req.valid('param').name, c.req.valid('json')), 200));
}

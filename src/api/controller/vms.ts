/** VMs: create, list, show, change, start, stop, save, delete, move storage, ping, console, migrate. */
import { type OpenAPIHono } from '@hono/zod-openapi';
import { stream } from 'hono/streaming';
import { errors } from '../../domain/errors.js';
import { VmState } from '../../domain/records.js';
import { switchOf } from '../../domain/switches.js';
import type { ControllerServices } from '../../controller/services.js';
import { vmRoutes } from '../routes/vms.js';
export function mountVms(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(vmRoutes.list, async (c) => c.json(await Promise.all((await s.vms.list()).map((vm) => s.viewVm(vm))), 200));
  app.openapi(vmRoutes.create, async (c) => c.json(await s.lifecycle.create(c.req.valid('json')), 200));
  app.openapi(vmRoutes.show, async (c) => {
    const vm = await s.viewVm(await s.vms.get(c.req.valid('param').name));
    const running = vm.state === VmState.Running && vm.node !== '';
    const [nic, guest] = await Promise.all([running ? s.nicOf(vm.name) : undefined, running && vm.boot ? s.guestOf(vm.name) : undefined]);
    return c.json({ ...vm, ...(nic ? { nic } : {}), ...(guest ? { guest } : {}) }, 200);
  });
  app.openapi(vmRoutes.set, async (c) => {
    const b = c.req.valid('json');
    return c.json(
      await s.lifecycle.set(c.req.valid('param').name, {
        ...(b.compat !== undefined ? { compat: b.compat } : {}),
        ...(b.switch !== undefined ? { switch: b.switch } : {}),
        ...(b.policy !== undefined ? { policy: b.policy } : {}),
        ...(b.startAction !== undefined ? { startAction: b.startAction } : {}),
        ...(b.ha !== undefined ? { ha: b.ha } : {}),
        ...(b.haPriority !== undefined ? { haPriority: b.haPriority } : {}),
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
  app.openapi(vmRoutes.stop, async (c) => {
    const b = c.req.valid('json');
    const timeoutMs = b.force ? 0 : (b.timeoutS ?? (await s.settings.get()).shutdownTimeoutS) * 1000;
    return c.json(await s.lifecycle.stop(c.req.valid('param').name, { timeoutMs, force: b.force === true }), 200);
  });
  app.openapi(vmRoutes.resume, async (c) => {
    const name = c.req.valid('param').name;
    const runState = await s.lifecycle.resume(name);
    return c.json({ ...(await s.viewVm(await s.vms.get(name))), runState }, 200);
  });
  app.openapi(vmRoutes.claim, async (c) => c.json(await s.failover.claim(c.req.valid('param').name), 200));
  app.openapi(vmRoutes.save, async (c) => c.json(await s.lifecycle.save(c.req.valid('param').name), 200));
  app.openapi(vmRoutes.moveStorage, async (c) => c.json(await s.lifecycle.moveStorage(c.req.valid('param').name, c.req.valid('json').to), 200));
  app.openapi(vmRoutes.display, async (c) => c.json(await s.displayTarget(c.req.valid('param').name), 200));
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

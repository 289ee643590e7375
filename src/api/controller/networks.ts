/** Cluster networks (R6) and virtual switches with their bindings and scrub (R8). */
import { type OpenAPIHono } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { networkRoutes, switchRoutes } from '../routes/networks.js';
export function mountNetworks(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(networkRoutes.list, async (c) => c.json(await s.networks.status(), 200));
  app.openapi(networkRoutes.set, async (c) => c.json(await s.networks.set(c.req.valid('param').name, c.req.valid('json')), 200));
  app.openapi(switchRoutes.list, async (c) => c.json(await s.switches.views(), 200));
  app.openapi(switchRoutes.create, async (c) => {
    const b = c.req.valid('json');
    return c.json(await s.switches.create(b.name, b.macAgeingS !== undefined ? { macAgeingS: b.macAgeingS } : {}), 200);
  });
  app.openapi(switchRoutes.set, async (c) => c.json(await s.switches.set(c.req.valid('param').name, c.req.valid('json')), 200));
  app.openapi(switchRoutes.delete, async (c) => c.json(await s.switches.delete(c.req.valid('param').name), 200));
  app.openapi(switchRoutes.bindings, async (c) => c.json(await s.switches.bindings(c.req.valid('query').node), 200));
  app.openapi(switchRoutes.bind, async (c) => {
    const b = c.req.valid('json');
    return c.json(await s.switches.bind(b.node, b.iface, b.switch), 200);
  });
  app.openapi(switchRoutes.unbind, async (c) => {
    const p = c.req.valid('param');
    return c.json(await s.switches.unbind(p.node, p.iface), 200);
  });
  app.openapi(switchRoutes.scrub, async (c) => c.json(await s.switches.scrub(c.req.valid('json')), 200));
  app.openapi(switchRoutes.macs, async (c) => {
    const vms = await s.vms.list();
    return c.json(
      (await s.switchControl.macs()).map((m) => ({ ...m, vm: vms.find((v) => v.mac === m.mac)?.name ?? null })),
      200,
    );
  });
}

/** Replica (R5): the primary's side, and the replica side a primary cluster calls with this cluster's token. */
import { type OpenAPIHono } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { replicaRoutes } from '../routes/replicas.js';
export function mountReplicas(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(replicaRoutes.status, async (c) => c.json(await s.replicas.status(), 200));
  app.openapi(replicaRoutes.enable, async (c) => c.json(await s.replicas.enable(c.req.valid('param').vm, c.req.valid('json')), 200));
  app.openapi(replicaRoutes.disable, async (c) => c.json(await s.replicas.disable(c.req.valid('param').vm), 200));
  app.openapi(replicaRoutes.sync, async (c) => {
    const { vm } = c.req.valid('param');
    const point = await s.replicas.sync(vm);
    return c.json({ point: point ?? null, status: await s.replicas.statusOf(vm) }, 200);
  });
  app.openapi(replicaRoutes.failover, async (c) => c.json(await s.replicas.failover(c.req.valid('param').vm, c.req.valid('json')), 200));
  app.openapi(replicaRoutes.reverse, async (c) => c.json(await s.replicas.reverse(c.req.valid('param').vm), 200));
  app.openapi(replicaRoutes.target, (c) => c.json({ clusterId: s.config().id }, 200));
  app.openapi(replicaRoutes.register, async (c) => {
    const view = await s.incoming.register(c.req.valid('json'));
    await s.replicas.supersede(view.vm);
    return c.json(view, 200);
  });
  // The export listens on the address the primary reached this controller at.
  app.openapi(replicaRoutes.openSync, async (c) => c.json(await s.incoming.openSync(c.req.valid('param').vm, new URL(c.req.url).hostname), 200));
  app.openapi(replicaRoutes.closeSync, async (c) =>
    c.json({ point: (await s.incoming.closeSync(c.req.valid('param').vm, c.req.valid('json').point)) ?? null }, 200),
  );
  app.openapi(replicaRoutes.incomingFailover, async (c) => c.json(await s.incoming.failover(c.req.valid('param').vm, c.req.valid('json')), 200));
  app.openapi(replicaRoutes.remove, async (c) => {
    await s.incoming.remove(c.req.valid('param').vm);
    return c.json({}, 200);
  });
}

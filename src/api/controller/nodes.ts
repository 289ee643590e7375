/** Nodes: list, join and leave, heartbeats from agents, maintenance and resume. */
import { type OpenAPIHono } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { DrainBody } from '../schemas.js';
import { nodeRoutes } from '../routes/nodes.js';
import { errors } from '../../domain/errors.js';
import { peerIdentity } from '../tls.js';
export function mountNodes(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(nodeRoutes.list, async (c) => {
    const loads = await s.loads();
    return c.json(
      loads.map((l) => ({ ...l.node, vmCount: l.vmCount, memoryFreeMiB: (l.node.capabilities?.memoryTotalMiB ?? 0) - l.committedMiB })),
      200,
    );
  });
  app.openapi(nodeRoutes.add, async (c) => c.json(await s.membership.add(c.req.valid('json')), 200));
  app.openapi(nodeRoutes.remove, async (c) => c.json(await s.membership.remove(c.req.valid('param').name), 200));
  app.openapi(nodeRoutes.heartbeat, async (c) => {
    const b = c.req.valid('json');
    // A host's certificate speaks for that host only.
    const peer = peerIdentity(c);
    if (peer?.role === 'host' && peer.name !== b.name)
      throw errors.unauthorized(`the certificate of host '${peer.name}' cannot send heartbeats for '${b.name}'`);
    const leadership = s.leadership?.();
    return c.json({ ...(await s.failover.heartbeat(b)), controllers: await s.controllers.urls(), ...(leadership ? { leadership } : {}) }, 200);
  });
  app.openapi(nodeRoutes.maintenance, async (c) => {
    const b = DrainBody.parse(c.req.valid('json'));
    return c.json(await s.maintenance.drain(c.req.valid('param').name, b.drain, b.dryRun), 200);
  });
  app.openapi(nodeRoutes.resume, async (c) => c.json(await s.maintenance.resume(c.req.valid('param').name), 200));
}

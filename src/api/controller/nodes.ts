/** Nodes: list, join and leave, heartbeats from agents, maintenance and resume. */
import { type OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { answers, body } from '../http.js';
import { DrainBody, DrainResultSchema, Empty, HeartbeatSchema, NodeAddBody, NodeName, NodeSchema, NodeViewSchema } from '../schemas.js';

const params = z.object({ name: NodeName });
const tag = ['Nodes'];
const Member = z.object({
  name: z.string(),
  migrationAddress: z.string(),
  memoryMiB: z.number().optional(),
  cpuModel: z.string().optional(),
  nicBackend: z.enum(['stream', 'tap']).optional(),
});

export const nodeRoutes = {
  list: createRoute({
    method: 'get',
    path: '/api/v1/nodes',
    tags: tag,
    summary: 'Nodes with state, capabilities, load',
    responses: answers(z.array(NodeViewSchema)),
  }),
  add: createRoute({
    method: 'post',
    path: '/api/v1/nodes',
    tags: tag,
    summary: 'A node joins the cluster',
    request: body(NodeAddBody, false),
    responses: answers(Member),
  }),
  remove: createRoute({
    method: 'delete',
    path: '/api/v1/nodes/{name}',
    tags: tag,
    summary: 'An empty node leaves the cluster',
    request: { params },
    responses: answers(z.object({ removed: z.string(), clearedVms: z.array(z.string()) })),
  }),
  heartbeat: createRoute({
    method: 'post',
    path: '/api/v1/agents/heartbeat',
    tags: tag,
    summary: 'Node agent heartbeat',
    request: body(HeartbeatSchema),
    responses: answers(z.object({ ok: z.literal(true) })),
  }),
  maintenance: createRoute({
    method: 'post',
    path: '/api/v1/nodes/{name}/maintenance',
    tags: tag,
    summary: 'Drain a node (live or save), or plan it with dryRun',
    request: { params, ...body(DrainBody, false) },
    responses: answers(DrainResultSchema),
  }),
  resume: createRoute({
    method: 'post',
    path: '/api/v1/nodes/{name}/resume',
    tags: tag,
    summary: 'Take a node out of maintenance',
    request: { params, ...body(Empty, false) },
    responses: answers(NodeSchema),
  }),
};

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
  app.openapi(nodeRoutes.heartbeat, async (c) => c.json(await s.nodes.heartbeat(c.req.valid('json')), 200));
  app.openapi(nodeRoutes.maintenance, async (c) => {
    const b = DrainBody.parse(c.req.valid('json'));
    return c.json(await s.maintenance.drain(c.req.valid('param').name, b.drain, b.dryRun), 200);
  });
  app.openapi(nodeRoutes.resume, async (c) => c.json(await s.maintenance.resume(c.req.valid('param').name), 200));
}

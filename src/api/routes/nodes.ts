/** Nodes: list, join and leave, heartbeats from agents, maintenance and resume. */
import { createRoute, z } from '@hono/zod-openapi';
import { answers, body } from '../route-helpers.js';
import { DrainBody, DrainResultSchema, Empty, HeartbeatAnswerSchema, HeartbeatSchema, NodeAddBody, NodeName, NodeSchema, NodeViewSchema } from '../schemas.js';

const params = z.object({ name: NodeName });
const tag = ['Nodes'];
const Member = z.object({
  name: z.string(),
  migrationAddress: z.string(),
  memoryMiB: z.number().optional(),
  cpuModel: z.string().optional(),
  nicBackend: z.enum(['stream', 'tap', 'bridge']).optional(),
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
    responses: answers(HeartbeatAnswerSchema),
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

/** The switch daemon's HTTP API: its routes with their schemas (server: daemon.ts; client: client.ts). */
import { createRoute, z } from '@hono/zod-openapi';
import { answers, body } from '../api/route-helpers.js';
import { SwitchName, shown } from '../api/schemas.js';

const mac = z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, { error: (iss) => `'${shown(iss.input)}' is not a MAC address` });
const ip = z.string().regex(/^[0-9]{1,3}(\.[0-9]{1,3}){3}$/, { error: (iss) => `'${shown(iss.input)}' is not an IPv4 address` });
const probeId = z.object({ id: z.string().regex(/^[A-Za-z0-9_.-]{1,80}$/) });
const State = z.object({ name: z.string(), nodes: z.array(z.string()), ports: z.number(), ageingMs: z.number() });
const Probe = z.object({
  id: z.string(),
  ip: z.string(),
  sent: z.number(),
  received: z.number(),
  maxGapMs: z.number(),
  maxGapAtMs: z.number(),
  durationMs: z.number(),
});
const tag = ['Switch'];

export const switchDaemonRoutes = {
  health: createRoute({ method: 'get', path: '/v1/health', tags: tag, summary: 'Alive', responses: answers(z.object({ ok: z.boolean() })) }),
  list: createRoute({ method: 'get', path: '/v1/switches', tags: tag, summary: 'Switches as they run', responses: answers(z.array(State)) }),
  apply: createRoute({
    method: 'put',
    path: '/v1/switches/{name}',
    tags: tag,
    summary: 'Make a switch what the controller wants (idempotent)',
    request: {
      params: z.object({ name: SwitchName }),
      ...body(z.strictObject({ nodes: z.array(z.string().regex(/^[a-z][a-z0-9-]{0,31}$/)), ageingMs: z.number().int().min(1000).max(86_400_000) })),
    },
    responses: answers(State),
  }),
  remove: createRoute({
    method: 'delete',
    path: '/v1/switches/{name}',
    tags: tag,
    summary: 'Remove a switch',
    request: { params: z.object({ name: SwitchName }) },
    responses: answers(z.object({ deleted: z.string() })),
  }),
  macs: createRoute({
    method: 'get',
    path: '/v1/macs',
    tags: tag,
    summary: 'MAC tables',
    responses: answers(
      z.array(z.object({ mac: z.string(), port: z.string(), node: z.string(), switch: z.string(), lastSeenMs: z.number(), ageMs: z.number() })),
    ),
  }),
  moves: createRoute({
    method: 'get',
    path: '/v1/moves',
    tags: tag,
    summary: 'MAC moves since a time',
    request: { query: z.object({ mac: mac.optional(), since: z.coerce.number().int().min(0).optional() }) },
    responses: answers(z.array(z.object({ mac: z.string(), toNode: z.string(), fromNode: z.string().optional(), atMs: z.number(), etherType: z.number() }))),
  }),
  startProbe: createRoute({
    method: 'post',
    path: '/v1/probes/{id}',
    tags: tag,
    summary: 'Ping a guest every interval and record the longest gap',
    request: {
      params: probeId,
      ...body(z.strictObject({ ip, mac, intervalMs: z.number().int().min(1).max(10_000).optional(), switch: SwitchName.optional() })),
    },
    responses: answers(z.object({ id: z.string() })),
  }),
  probe: createRoute({ method: 'get', path: '/v1/probes/{id}', tags: tag, summary: 'A probe so far', request: { params: probeId }, responses: answers(Probe) }),
  stopProbe: createRoute({
    method: 'delete',
    path: '/v1/probes/{id}',
    tags: tag,
    summary: 'Stop a probe',
    request: { params: probeId },
    responses: answers(Probe),
  }),
  ping: createRoute({
    method: 'post',
    path: '/v1/ping',
    tags: tag,
    summary: 'Ping a guest once',
    request: body(z.strictObject({ ip, mac, timeoutMs: z.number().int().min(1).max(60_000).optional(), switch: SwitchName.optional() })),
    responses: answers(z.object({ ip: z.string(), answered: z.boolean(), rttMs: z.number().nullable() })),
  }),
};

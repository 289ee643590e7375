/**
 * The event log: JSON (`?since=` ms), or with `Accept: text/event-stream`
 * server-sent events: what happened since `Last-Event-ID` (or `?since=`),
 * then each new event as it is recorded.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { json } from '../route-helpers.js';
import { ClusterEventSchema, ErrorBody } from '../schemas.js';

export const eventRoutes = {
  list: createRoute({
    method: 'get',
    path: '/api/v1/events',
    tags: ['Events'],
    summary: 'The event log; with Accept: text/event-stream, live server-sent events',
    request: { query: z.object({ since: z.coerce.number().int().min(0).optional().openapi({ description: 'ms since the epoch' }) }) },
    responses: {
      200: { description: 'Events, oldest first', content: { ...json(z.array(ClusterEventSchema)), 'text/event-stream': { schema: z.string() } } },
      default: { description: 'A Ferry error', content: json(ErrorBody) },
    },
  }),
};

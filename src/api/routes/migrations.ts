/** Migrations: the queue and history, one migration with its report, cancel. */
import { createRoute, z } from '@hono/zod-openapi';
import { answers, body } from '../route-helpers.js';
import { Empty, MigrationSchema } from '../schemas.js';

const params = z.object({ id: z.string().regex(/^m-[a-z0-9-]{1,40}$/, { error: (iss) => `unknown migration '${String(iss.input)}'` }) });
const tag = ['Migrations'];

export const migrationRoutes = {
  list: createRoute({
    method: 'get',
    path: '/api/v1/migrations',
    tags: tag,
    summary: 'Migrations, queued ones with their place',
    responses: answers(z.array(MigrationSchema)),
  }),
  show: createRoute({
    method: 'get',
    path: '/api/v1/migrations/{id}',
    tags: tag,
    summary: 'One migration; its report once ended',
    request: { params },
    responses: answers(MigrationSchema),
  }),
  cancel: createRoute({
    method: 'post',
    path: '/api/v1/migrations/{id}/cancel',
    tags: tag,
    summary: 'Cancel a migration (the VM stays on its source)',
    request: { params, ...body(Empty, false) },
    responses: answers(MigrationSchema),
  }),
};

/** Migrations: the queue and history, one migration with its report, cancel. */
import { type OpenAPIHono } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { migrationRoutes } from '../routes/migrations.js';
export function mountMigrations(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(migrationRoutes.list, async (c) => c.json(await s.migrations.listWithQueue(), 200));
  app.openapi(migrationRoutes.show, async (c) => c.json(await s.migrations.get(c.req.valid('param').id), 200));
  app.openapi(migrationRoutes.cancel, async (c) => c.json(await s.migrations.cancel(c.req.valid('param').id), 200));
}

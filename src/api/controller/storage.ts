/** Backups (R13) and backup schedules. */
import { type OpenAPIHono } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { backupRoutes } from '../routes/storage.js';
export function mountStorage(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(backupRoutes.list, async (c) => c.json(await s.backups.list(c.req.valid('query').vm), 200));
  app.openapi(backupRoutes.create, async (c) => {
    const b = c.req.valid('json');
    return c.json(
      await s.backups.create(b.vm, { incremental: b.incremental === true, ...(b.bandwidthMiBps !== undefined ? { bandwidthMiBps: b.bandwidthMiBps } : {}) }),
      200,
    );
  });
  app.openapi(backupRoutes.restore, async (c) => c.json(await s.backups.restore(c.req.valid('param').id, c.req.valid('json')), 200));
  app.openapi(backupRoutes.delete, async (c) => c.json(await s.backups.delete(c.req.valid('param').id), 200));
  app.openapi(backupRoutes.schedules, async (c) => c.json(await s.schedules.list(), 200));
  app.openapi(backupRoutes.schedule, async (c) => c.json(await s.schedules.set(c.req.valid('param').vm, c.req.valid('json')), 200));
  app.openapi(backupRoutes.unschedule, async (c) => c.json(await s.schedules.remove(c.req.valid('param').vm), 200));
}

/** The image library's routes over the Images service. */
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { imageRoutes } from '../routes/images.js';

export function mountImages(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(imageRoutes.list, async (c) => c.json(await s.images.list(), 200));
  app.openapi(imageRoutes.import, async (c) => c.json(await s.images.import(c.req.valid('json')), 200));
  app.openapi(imageRoutes.build, async (c) => c.json(await s.images.build(c.req.valid('json')), 200));
  app.openapi(imageRoutes.delete, async (c) => c.json(await s.images.delete(c.req.valid('param').name), 200));
}

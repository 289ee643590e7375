/**
 * The controller's HTTP app: the REST API (every route with its schemas,
 * the OpenAPI document generated from them), server-sent events, metrics
 * and the console. Authentication runs before any body is read; bodies over
 * 1 MiB are refused.
 */
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { createApp, limitBody } from '../http.js';
import { mountCluster } from './cluster.js';
import { mountEvents } from './events.js';
import { mountMetrics } from './metrics.js';
import { mountMigrations } from './migrations.js';
import { mountNetworks } from './networks.js';
import { mountNodes } from './nodes.js';
import { mountReplicas } from './replicas.js';
import { mountStorage } from './storage.js';
import { mountVms } from './vms.js';
import { Sessions, mountWeb } from './web.js';

export const OPENAPI_PATH = '/api/v1/openapi.json';

export function controllerApp(s: ControllerServices, opts: { assetDirs: string[] }): OpenAPIHono {
  const app = createApp();
  const sessions = new Sessions(s.token, s.clock);
  const guard = sessions.guard();
  app.use('/api/*', guard);
  app.use('/metrics', guard);
  app.use('/api/*', limitBody());
  mountWeb(app, sessions, opts.assetDirs);
  mountCluster(app, s);
  mountNodes(app, s);
  mountVms(app, s);
  mountMigrations(app, s);
  mountNetworks(app, s);
  mountStorage(app, s);
  mountReplicas(app, s);
  mountEvents(app, s);
  mountMetrics(app, s);
  app.doc31(OPENAPI_PATH, {
    openapi: '3.1.0',
    info: {
      title: 'Ferry controller API',
      version: '1',
      description: "Bearer token (STATE/token) or the console's session cookie with x-csrf-token on changes.",
    },
    security: [{ bearer: [] }],
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer' });
  return app;
}

/**
 * The controller's HTTP app: the REST API (every route with its schemas,
 * the OpenAPI document generated from them), server-sent events, metrics
 * and the console. Authentication runs before any body is read; bodies over
 * 1 MiB are refused.
 */
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { createApp, errorResponse, limitBody } from '../http.js';
import { mountCluster } from './cluster.js';
import { mountEvents } from './events.js';
import { mountJoin } from './join.js';
import { mountImages } from './images.js';
import { OPEN_PATHS, joinRoutes } from '../routes/join.js';
import { nodeRoutes } from '../routes/nodes.js';
import { peerIdentity, peerRefusal } from '../tls.js';
import { errors } from '../../domain/errors.js';
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
  const clusterId = s.config().id;
  // Who may call: a joining host or a CLI logging in (their tokens are checked by the route), another controller,
  // an agent sending its heartbeat (each with a certificate from the cluster's CA), or whoever has the API token or a session.
  app.use('/api/*', async (c, next) => {
    if (c.req.path === joinRoutes.info.path && c.req.method === 'GET') return next();
    if (OPEN_PATHS.includes(c.req.path) && c.req.method === 'POST') return next();
    const refused = peerRefusal(c);
    if (refused) return errorResponse(c, errors.unauthorized(refused));
    const peer = peerIdentity(c);
    if (peer?.clusterId === clusterId) {
      if (peer.role === 'controller') return next();
      if (c.req.path === nodeRoutes.heartbeat.path && c.req.method === 'POST') return next();
      if (!c.req.header('authorization'))
        return errorResponse(c, errors.unauthorized(`host '${peer.name}''s certificate only sends heartbeats; this needs the API token`));
    }
    return guard(c, next);
  });
  app.use('/metrics', guard);
  app.use('/api/*', limitBody());
  mountWeb(app, sessions, opts.assetDirs);
  mountCluster(app, s);
  mountNodes(app, s);
  mountJoin(app, s);
  mountVms(app, s);
  mountMigrations(app, s);
  mountNetworks(app, s);
  mountStorage(app, s);
  mountImages(app, s);
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

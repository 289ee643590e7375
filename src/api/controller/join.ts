/** Joining, login and tokens: only on a cluster of real hosts (one with a CA); elsewhere they say so in one line. */
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import type { Joining } from '../../controller/joining.js';
import { errors } from '../../domain/errors.js';
import { joinRoutes } from '../routes/join.js';

function joiningOf(s: ControllerServices): Joining {
  if (!s.joining) throw errors.invalidState("this cluster runs on one machine ('ferry up'); hosts join a cluster made with 'ferry init'");
  return s.joining;
}

export function mountJoin(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(joinRoutes.info, (c) => c.json(joiningOf(s).info(), 200));
  app.openapi(joinRoutes.join, async (c) => c.json(await joiningOf(s).join(c.req.valid('json')), 200));
  app.openapi(joinRoutes.login, async (c) => c.json(await joiningOf(s).login(c.req.valid('json').token), 200));
  app.openapi(joinRoutes.issue, async (c) => {
    const b = c.req.valid('json');
    return c.json(await joiningOf(s).issue(b.kind, b.ttlMs, { controller: b.controller === true }), 200);
  });
}

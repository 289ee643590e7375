/** The cluster: status, settings, CPU baselines, the default migration policy, balancing, down. */
import { type OpenAPIHono } from '@hono/zod-openapi';
import { errors } from '../../domain/errors.js';
import { effectivePolicy } from '../../domain/policy.js';
import type { ControllerServices } from '../../controller/services.js';
import { issueMessage } from '../http.js';
import { SETTING_RULES } from '../schemas.js';
import { clusterRoutes } from '../routes/cluster.js';
export function mountCluster(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(clusterRoutes.status, async (c) => {
    const nodes = await s.nodes.list();
    const vms = await Promise.all((await s.vms.list()).map((v) => s.viewVm(v)));
    const stalled = vms
      .filter((v) => v.state === 'running' && v.runState !== undefined && v.runState !== 'running')
      .map((v) => ({ vm: v.name, runState: v.runState! }));
    const cfg = s.config();
    // The controller answering leads: a standby forwards every request to it.
    const leadership = s.leadership?.();
    const controllers =
      leadership !== undefined ? (await s.controllers.list()).map((x) => ({ name: x.name, url: x.url, leads: x.url === s.info.url() })) : undefined;
    return c.json(
      {
        cluster: { id: cfg.id, name: cfg.name, createdAtMs: cfg.createdAtMs },
        controller: { pid: s.info.pid, url: s.info.url(), consoleUrl: s.info.consoleUrl(), tokenFile: s.info.tokenFile },
        nodes: { total: nodes.length, up: nodes.filter((n) => n.state === 'up').length },
        vms: { total: vms.length, running: vms.filter((v) => v.state === 'running').length - stalled.length, stalled },
        migrations: { running: (await s.migrations.open()).length },
        store: s.info.store(),
        ...(controllers ? { controllers, leadership } : {}),
      },
      200,
    );
  });
  app.openapi(clusterRoutes.settings, async (c) => c.json(await s.settings.get(), 200));
  app.openapi(clusterRoutes.set, async (c) => {
    const { name } = c.req.valid('param');
    const parsed = SETTING_RULES[name].safeParse(c.req.valid('json').value);
    if (!parsed.success) throw errors.invalid(name, issueMessage(parsed.error.issues));
    const next = await s.settings.set(name, parsed.data as never);
    void s.migrations.schedule(); // more slots may start queued migrations now
    return c.json(next, 200);
  });
  app.openapi(clusterRoutes.baselines, async (c) => c.json(await s.baselines.list(), 200));
  app.openapi(clusterRoutes.policy, async (c) => {
    const overrides = await s.settings.policy();
    return c.json({ overrides, effective: effectivePolicy(overrides) }, 200);
  });
  app.openapi(clusterRoutes.setPolicy, async (c) => c.json(await s.settings.setPolicy(c.req.valid('json')), 200));
  app.openapi(clusterRoutes.balance, async (c) => c.json(await s.balancer.balance(c.req.valid('json').dryRun === true), 200));
  app.openapi(clusterRoutes.down, async (c) => {
    const timeoutS = c.req.valid('json').shutdownTimeoutS ?? (await s.settings.get()).shutdownTimeoutS;
    return c.json(await s.down(timeoutS * 1000), 200);
  });
  app.openapi(clusterRoutes.startActions, async (c) => c.json(await s.startActions(), 200));
}

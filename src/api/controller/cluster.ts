/** The cluster: status, settings, CPU baselines, the default migration policy, balancing, down. */
import { type OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { errors } from '../../domain/errors.js';
import { effectivePolicy } from '../../domain/policy.js';
import type { ControllerServices } from '../../controller/services.js';
import { answers, body, issueMessage } from '../http.js';
import {
  BalanceBody,
  BalanceResultSchema,
  CpuBaselineSchema,
  Empty,
  EffectivePolicySchema,
  PolicySchema,
  SETTING_RULES,
  SettingBody,
  SettingName,
  SettingsSchema,
  StatusSchema,
} from '../schemas.js';

const tag = ['Cluster'];

export const clusterRoutes = {
  status: createRoute({
    method: 'get',
    path: '/api/v1/status',
    tags: tag,
    summary: 'Cluster counts (nodes, VMs, running migrations) and where the console is',
    responses: answers(StatusSchema),
  }),
  settings: createRoute({ method: 'get', path: '/api/v1/cluster/settings', tags: tag, summary: 'Cluster settings', responses: answers(SettingsSchema) }),
  set: createRoute({
    method: 'put',
    path: '/api/v1/cluster/settings/{name}',
    tags: tag,
    summary: 'Change one cluster setting',
    request: { params: z.object({ name: SettingName }), ...body(SettingBody) },
    responses: answers(SettingsSchema),
  }),
  baselines: createRoute({
    method: 'get',
    path: '/api/v1/cluster/cpu-baselines',
    tags: tag,
    summary: "Each CPU vendor's compatibility baseline",
    responses: answers(z.array(CpuBaselineSchema)),
  }),
  policy: createRoute({
    method: 'get',
    path: '/api/v1/cluster/policy',
    tags: tag,
    summary: 'The default migration policy and where each field comes from',
    responses: answers(z.object({ overrides: PolicySchema, effective: EffectivePolicySchema })),
  }),
  setPolicy: createRoute({
    method: 'put',
    path: '/api/v1/cluster/policy',
    tags: tag,
    summary: "Replace the cluster's policy overrides",
    request: body(PolicySchema),
    responses: answers(EffectivePolicySchema),
  }),
  balance: createRoute({
    method: 'post',
    path: '/api/v1/cluster/balance',
    tags: tag,
    summary: 'Rebalance load with live migrations (or plan it)',
    request: body(BalanceBody, false),
    responses: answers(BalanceResultSchema),
  }),
  down: createRoute({
    method: 'post',
    path: '/api/v1/cluster/down',
    tags: tag,
    summary: 'Stop every VM (before the daemons stop)',
    request: body(Empty, false),
    responses: answers(z.object({ stopped: z.array(z.string()) })),
  }),
};

export function mountCluster(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(clusterRoutes.status, async (c) => {
    const nodes = await s.nodes.list();
    const vms = await s.vms.list();
    const cfg = s.config();
    return c.json(
      {
        cluster: { id: cfg.id, name: cfg.name, createdAtMs: cfg.createdAtMs },
        controller: { pid: s.info.pid, url: s.info.url(), consoleUrl: s.info.consoleUrl(), tokenFile: s.info.tokenFile },
        nodes: { total: nodes.length, up: nodes.filter((n) => n.state === 'up').length },
        vms: { total: vms.length, running: vms.filter((v) => v.state === 'running').length },
        migrations: { running: (await s.migrations.open()).length },
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
  app.openapi(clusterRoutes.down, async (c) => c.json(await s.down(), 200));
}

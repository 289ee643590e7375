/** The cluster: status, settings, CPU baselines, the default migration policy, balancing, down. */
import { createRoute, z } from '@hono/zod-openapi';
import { answers, body } from '../route-helpers.js';
import {
  BalanceBody,
  BalanceResultSchema,
  CpuBaselineSchema,
  DownBody,
  Empty,
  EffectivePolicySchema,
  PolicySchema,
  SettingBody,
  SettingName,
  SettingsSchema,
  StartActionsSchema,
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
    summary: 'Shut every VM down (before the daemons stop); their start actions apply at the next start',
    request: body(DownBody, false),
    responses: answers(z.object({ stopped: z.array(z.string()), forced: z.array(z.string()) })),
  }),
  startActions: createRoute({
    method: 'post',
    path: '/api/v1/cluster/start-actions',
    tags: tag,
    summary: 'After the cluster went down: start the VMs whose start action says so (once; later calls answer what happened)',
    request: body(Empty, false),
    responses: answers(StartActionsSchema),
  }),
};

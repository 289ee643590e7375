/** Cluster networks (R6) and virtual switches with their bindings and scrub (R8). */
import { type OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { ControllerServices } from '../../controller/services.js';
import { answers, body } from '../http.js';
import {
  BindingBody,
  BindingRowSchema,
  ClusterNetworkSchema,
  MacRowSchema,
  NetworkName,
  NetworkSetBody,
  NetworkViewSchema,
  NodeName,
  ScrubBody,
  ScrubResultSchema,
  SwitchCreateBody,
  SwitchName,
  SwitchSetBody,
  SwitchViewSchema,
  VirtualSwitchSchema,
} from '../schemas.js';

const net = ['Networks'];
const sw = ['Switches'];
const switchParams = z.object({ name: SwitchName });

export const networkRoutes = {
  list: createRoute({
    method: 'get',
    path: '/api/v1/networks',
    tags: net,
    summary: "Cluster networks with each node's address and reachability",
    responses: answers(z.array(NetworkViewSchema)),
  }),
  set: createRoute({
    method: 'put',
    path: '/api/v1/networks/{name}',
    tags: net,
    summary: "Change a network's role and metric",
    request: { params: z.object({ name: NetworkName }), ...body(NetworkSetBody) },
    responses: answers(ClusterNetworkSchema),
  }),
};

export const switchRoutes = {
  list: createRoute({
    method: 'get',
    path: '/api/v1/switches',
    tags: sw,
    summary: 'Virtual switches with bindings and attached VMs',
    responses: answers(z.array(SwitchViewSchema)),
  }),
  create: createRoute({
    method: 'post',
    path: '/api/v1/switches',
    tags: sw,
    summary: 'Create a virtual switch',
    request: body(SwitchCreateBody),
    responses: answers(VirtualSwitchSchema),
  }),
  set: createRoute({
    method: 'patch',
    path: '/api/v1/switches/{name}',
    tags: sw,
    summary: "Change a switch's settings",
    request: { params: switchParams, ...body(SwitchSetBody) },
    responses: answers(VirtualSwitchSchema),
  }),
  delete: createRoute({
    method: 'delete',
    path: '/api/v1/switches/{name}',
    tags: sw,
    summary: 'Delete a switch no VM uses',
    request: { params: switchParams },
    responses: answers(VirtualSwitchSchema),
  }),
  bindings: createRoute({
    method: 'get',
    path: '/api/v1/switch-bindings',
    tags: sw,
    summary: 'Node interfaces and the switch each carries',
    request: { query: z.object({ node: NodeName.optional() }) },
    responses: answers(z.array(BindingRowSchema)),
  }),
  bind: createRoute({
    method: 'post',
    path: '/api/v1/switch-bindings',
    tags: sw,
    summary: 'Bind a switch to a node interface',
    request: body(BindingBody),
    responses: answers(VirtualSwitchSchema),
  }),
  unbind: createRoute({
    method: 'delete',
    path: '/api/v1/switch-bindings/{node}/{iface}',
    tags: sw,
    summary: 'Unbind a node interface',
    request: { params: z.object({ node: NodeName, iface: z.string().regex(/^[a-z0-9]{1,15}$/) }) },
    responses: answers(z.object({ switch: z.string(), node: z.string(), iface: z.string() })),
  }),
  scrub: createRoute({
    method: 'post',
    path: '/api/v1/switches-scrub',
    tags: sw,
    summary: 'Remove unused switches, reset settings or remove one switch',
    request: body(ScrubBody),
    responses: answers(ScrubResultSchema),
  }),
  macs: createRoute({ method: 'get', path: '/api/v1/switch/macs', tags: sw, summary: 'MAC tables of every switch', responses: answers(z.array(MacRowSchema)) }),
};

export function mountNetworks(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(networkRoutes.list, async (c) => c.json(await s.networks.status(), 200));
  app.openapi(networkRoutes.set, async (c) => c.json(await s.networks.set(c.req.valid('param').name, c.req.valid('json')), 200));
  app.openapi(switchRoutes.list, async (c) => c.json(await s.switches.views(), 200));
  app.openapi(switchRoutes.create, async (c) => {
    const b = c.req.valid('json');
    return c.json(await s.switches.create(b.name, b.macAgeingS !== undefined ? { macAgeingS: b.macAgeingS } : {}), 200);
  });
  app.openapi(switchRoutes.set, async (c) => c.json(await s.switches.set(c.req.valid('param').name, c.req.valid('json')), 200));
  app.openapi(switchRoutes.delete, async (c) => c.json(await s.switches.delete(c.req.valid('param').name), 200));
  app.openapi(switchRoutes.bindings, async (c) => c.json(await s.switches.bindings(c.req.valid('query').node), 200));
  app.openapi(switchRoutes.bind, async (c) => {
    const b = c.req.valid('json');
    return c.json(await s.switches.bind(b.node, b.iface, b.switch), 200);
  });
  app.openapi(switchRoutes.unbind, async (c) => {
    const p = c.req.valid('param');
    return c.json(await s.switches.unbind(p.node, p.iface), 200);
  });
  app.openapi(switchRoutes.scrub, async (c) => c.json(await s.switches.scrub(c.req.valid('json')), 200));
  app.openapi(switchRoutes.macs, async (c) => {
    const vms = await s.vms.list();
    return c.json(
      (await s.switchControl.macs()).map((m) => ({ ...m, vm: vms.find((v) => v.mac === m.mac)?.name ?? null })),
      200,
    );
  });
}

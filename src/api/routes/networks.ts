/** Cluster networks (R6) and virtual switches with their bindings and scrub (R8). */
import { createRoute, z } from '@hono/zod-openapi';
import { answers, body } from '../route-helpers.js';
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

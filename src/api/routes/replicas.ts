/** Replica (R5): the primary's side, and the replica side a primary cluster calls with this cluster's token. */
import { createRoute, z } from '@hono/zod-openapi';
import { answers, body } from '../route-helpers.js';
import {
  Empty,
  IncomingFailoverBody,
  IncomingViewSchema,
  NbdEndpointSchema,
  Ok,
  RecoveryPointSchema,
  ReplicaEnableBody,
  ReplicaFailoverBody,
  ReplicaRecordSchema,
  ReplicaRegisterBody,
  ReplicaStatusSchema,
  SyncCloseBody,
  VmName,
  VmSchema,
} from '../schemas.js';

const params = z.object({ vm: VmName });
const tag = ['Replica'];
const far = ['Replica side'];

export const replicaRoutes = {
  status: createRoute({
    method: 'get',
    path: '/api/v1/replicas',
    tags: tag,
    summary: 'Replicated VMs (outgoing: last sync, lag, bytes, health) and replicas this cluster holds (incoming: recovery points)',
    responses: answers(z.object({ outgoing: z.array(ReplicaStatusSchema), incoming: z.array(IncomingViewSchema) })),
  }),
  enable: createRoute({
    method: 'put',
    path: '/api/v1/replicas/{vm}',
    tags: tag,
    summary: "Replicate a running VM's disk to another Ferry cluster; answers after the initial full copy",
    request: { params, ...body(ReplicaEnableBody) },
    responses: answers(ReplicaStatusSchema),
  }),
  disable: createRoute({
    method: 'delete',
    path: '/api/v1/replicas/{vm}',
    tags: tag,
    summary: 'Stop replicating a VM; the replica side drops its copy',
    request: { params },
    responses: answers(ReplicaRecordSchema),
  }),
  sync: createRoute({
    method: 'post',
    path: '/api/v1/replicas/{vm}/sync',
    tags: tag,
    summary: 'Sync now (changed blocks since the last recovery point)',
    request: { params, ...body(Empty, false) },
    responses: answers(z.object({ point: RecoveryPointSchema.nullable(), status: ReplicaStatusSchema })),
  }),
  failover: createRoute({
    method: 'post',
    path: '/api/v1/replicas/{vm}/failover',
    tags: tag,
    summary: 'Planned (final sync, nothing lost), unplanned (newest or chosen recovery point) or test failover',
    request: { params, ...body(ReplicaFailoverBody, false) },
    responses: answers(z.object({ vm: z.string(), cluster: z.string(), point: RecoveryPointSchema, mode: z.string() })),
  }),
  reverse: createRoute({
    method: 'post',
    path: '/api/v1/replicas/{vm}/reverse',
    tags: tag,
    summary: 'After a failover, replicate the VM back to its old primary',
    request: { params, ...body(Empty, false) },
    responses: answers(ReplicaStatusSchema),
  }),
  target: createRoute({
    method: 'get',
    path: '/api/v1/replica-target',
    tags: far,
    summary: "Replica side: this cluster's id (a primary checks it is not itself)",
    responses: answers(z.object({ clusterId: z.string() })),
  }),
  register: createRoute({
    method: 'post',
    path: '/api/v1/replica-in',
    tags: far,
    summary: 'Replica side: register a replica sent by a primary cluster',
    request: body(ReplicaRegisterBody),
    responses: answers(IncomingViewSchema),
  }),
  openSync: createRoute({
    method: 'post',
    path: '/api/v1/replica-in/{vm}/sync',
    tags: far,
    summary: 'Replica side: open one sync (an NBD export of the replica disk)',
    request: { params, ...body(Empty, false) },
    responses: answers(NbdEndpointSchema),
  }),
  closeSync: createRoute({
    method: 'post',
    path: '/api/v1/replica-in/{vm}/sync/close',
    tags: far,
    summary: 'Replica side: close a sync; with a point, keep it as a recovery point',
    request: { params, ...body(SyncCloseBody, false) },
    responses: answers(z.object({ point: RecoveryPointSchema.nullable() })),
  }),
  incomingFailover: createRoute({
    method: 'post',
    path: '/api/v1/replica-in/{vm}/failover',
    tags: far,
    summary: 'Replica side: start the VM (or a test copy on an isolated switch) from a recovery point',
    request: { params, ...body(IncomingFailoverBody, false) },
    responses: answers(z.object({ vm: VmSchema, point: RecoveryPointSchema })),
  }),
  remove: createRoute({
    method: 'delete',
    path: '/api/v1/replica-in/{vm}',
    tags: far,
    summary: 'Replica side: drop a replica and its recovery points',
    request: { params },
    responses: answers(Ok),
  }),
};

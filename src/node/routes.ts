/**
 * The node agent's HTTP API: its routes with their schemas, shared by the
 * agent's server (http.ts) and the controller's client (client.ts).
 *
 *   GET    /v1/health                    identity only (no token): whose node this is
 *   GET    /v1/capabilities
 *   GET    /v1/vms, /v1/vms/{name}       what runs here, with its run state
 *   GET    /v1/vms/{name}/config         the configuration a migration target is created from
 *   POST   /v1/vms                       start a guest for a spec (optionally as a migration target)
 *   POST   /v1/vms/{name}/stop           quit (graceful, then kill)
 *   DELETE /v1/vms/{name}[?pid=]         kill now
 *   POST   /v1/vms/{name}/pause | resume | announce
 *   POST   /v1/vms/{name}/incoming       target: listen for the state, or restore it from a file
 *   POST   /v1/vms/{name}/migration      source: send the state to a target or a file
 *   GET    /v1/vms/{name}/migration      progress of a transfer, either side
 *   POST   /v1/vms/{name}/migration/cancel | postcopy | continue
 *   POST   /v1/vms/{name}/measure        dirty rate and non-zero memory (for the prediction)
 *   GET    /v1/vms/{name}/nic            offloads the NIC offers and the guest negotiated
 *   POST   /v1/vms/{name}/backup/freeze | backup/merge
 *   POST   /v1/vms/{name}/replica-sync | replica-sync/cancel
 *   POST   /v1/vms/{name}/move-storage
 *   POST|DELETE /v1/vms/{name}/nbd-export
 *   POST   /v1/vms/{name}/disk-mirror | disk-mirror/end
 *   GET|POST /v1/vms/{name}/console      the console stream (follows) / input
 *   POST   /v1/net/probe | net/throughput
 */
import { createRoute, z } from '@hono/zod-openapi';
import { answers, body } from '../api/route-helpers.js';
import {
  ConsoleInputBody,
  Empty,
  GuestReportSchema,
  InstanceSchema,
  NbdEndpointSchema,
  NodeCapabilitiesSchema,
  Ok,
  RecoveryPointSchema,
  TransferProgressSchema,
  TuningSchema,
  VmName,
  shown,
  wholeNumber,
} from '../api/schemas.js';
import { OFFLOADS } from '../domain/nic.js';
import { FIRMWARES, LIMITS } from '../domain/records.js';

/**
 * The leadership (the etcd revision that made it leader) a controller calls an agent under. An agent refuses a
 * call under an older one than it has heard of (calls and heartbeat answers): a deposed leader's late call.
 */
export const LEADERSHIP_HEADER = 'x-ferry-leadership';

const params = z.object({ name: VmName });
const path = (s: string) =>
  z
    .string()
    .min(1)
    .max(4096)
    .startsWith('/', { error: () => `${s} must be an absolute path` })
    // QEMU's option syntax separates with commas: a path with one would add options of its own.
    .refine((p) => !p.includes(','), { error: () => `${s} must not contain a comma` });
const address = z.string().regex(/^[0-9a-fA-F:.]{2,45}$/, { error: (iss) => `'${shown(iss.input)}' is not an IP address` });
const port = z.number().int().min(1).max(65535);

export const SpecSchema = z
  .strictObject({
    name: VmName,
    memoryMiB: wholeNumber('memory (MiB)', LIMITS.memoryMiB),
    cpus: wholeNumber('CPUs', LIMITS.cpus),
    diskPath: path('diskPath'),
    mac: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/),
    ip: z.string().regex(/^[0-9.]{7,15}\/\d{1,2}$/),
    workload: z.string().max(256),
    peerIp: z
      .string()
      .regex(/^[0-9.]{7,15}$/)
      .optional(),
    cpuModel: z
      .string()
      .regex(/^[A-Za-z0-9_.,=+-]{1,4000}$/)
      .optional(),
    switch: z.string().max(64).optional(),
    switchBindings: z
      .array(
        z.strictObject({
          node: z.string().max(64),
          iface: z.string().regex(/^[A-Za-z0-9_.:-]{1,15}$/, { error: 'an interface name has 1 to 15 letters, digits or _.:-' }),
        }),
      )
      .max(64)
      .optional(),
    nicOffloads: z
      .array(z.string().refine((o) => (OFFLOADS as readonly string[]).includes(o), { error: (iss) => `unknown NIC offload '${shown(iss.input)}'` }))
      .optional(),
    consoleLogPath: path('consoleLogPath'),
    boot: z
      .strictObject({
        firmware: z.enum(FIRMWARES),
        image: z.string().max(64).optional(),
        linked: z.boolean().optional(),
        iso: z.string().max(64).optional(),
        isoFile: path('boot.isoFile').optional(),
        efiVarsPath: path('boot.efiVarsPath').optional(),
        seedPath: path('boot.seedPath').optional(),
      })
      .optional(),
  })
  .openapi('Spec');

const Measurement = z.object({
  dirtyRateBytesPerSec: z.number(),
  ramBytes: z.number(),
  nonZeroBytes: z.number(),
  samples: z.number(),
  nonZeroSamples: z.number(),
  ms: z.number(),
});
const Freeze = z.object({ base: z.string(), overlay: z.string(), quiesced: z.boolean().optional(), quiesceNote: z.string().optional() });
const Copy = z.object({ bytes: z.number(), ms: z.number() });
const NbdTarget = z.strictObject({ address, port, export: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/) });

function vm<const M extends 'get' | 'post' | 'delete', const E extends object, S extends z.ZodType>(
  method: M,
  sub: string,
  summary: string,
  extra: E,
  response: S,
) {
  return createRoute({ method, path: `/v1/vms/{name}${sub}`, tags: ['Agent'], summary, request: { params, ...extra }, responses: answers(response) });
}

export const agentRoutes = {
  health: createRoute({
    method: 'get',
    path: '/v1/health',
    tags: ['Agent'],
    summary: 'Whose node this is',
    responses: answers(z.object({ node: z.string(), clusterId: z.string(), pid: z.number() })),
  }),
  capabilities: createRoute({
    method: 'get',
    path: '/v1/capabilities',
    tags: ['Agent'],
    summary: 'What this host offers',
    responses: answers(NodeCapabilitiesSchema),
  }),
  list: createRoute({ method: 'get', path: '/v1/vms', tags: ['Agent'], summary: 'Guests on this host', responses: answers(z.array(InstanceSchema)) }),
  start: createRoute({
    method: 'post',
    path: '/v1/vms',
    tags: ['Agent'],
    summary: 'Start a guest',
    request: body(
      z.strictObject({
        spec: SpecSchema,
        incoming: z.boolean().optional(),
        createDiskBytes: z
          .number()
          .int()
          .min(1048576)
          .max(LIMITS.diskGiB.max * 1073741824)
          .optional(),
      }),
    ),
    responses: answers(InstanceSchema),
  }),
  get: vm('get', '', 'One guest', {}, InstanceSchema),
  config: vm('get', '/config', 'The configuration a guest runs with', {}, SpecSchema),
  stop: vm('post', '/stop', 'Quit a guest', body(Empty, false), z.object({ stopped: z.string() })),
  shutdown: vm(
    'post',
    '/shutdown',
    'Shut a guest down (its agent, else the ACPI power button), powering it off after timeoutMs',
    body(z.strictObject({ timeoutMs: z.number().int().min(0).max(3_600_000) })),
    z.object({ by: z.enum(['guest', 'force']), via: z.enum(['agent', 'acpi']).optional(), ms: z.number() }),
  ),
  guest: vm('get', '/guest', "What the guest's agent says of it", {}, GuestReportSchema),
  display: vm('get', '/display', 'Whether the guest has a screen here; a WebSocket upgrade of this path opens it (RFB)', {}, z.object({ vm: z.string() })),
  kill: vm('delete', '', 'Kill a guest now', { query: z.object({ pid: z.coerce.number().int().min(1).optional() }) }, z.object({ killed: z.boolean() })),
  pause: vm('post', '/pause', 'Pause', body(Empty, false), Ok),
  resume: vm('post', '/resume', 'Resume', body(Empty, false), Ok),
  announce: vm(
    'post',
    '/announce',
    "Announce the MAC again; for a VM on a host bridge, until the bridge has learnt it on the VM's port",
    body(Empty, false),
    z.object({ bridge: z.object({ name: z.string(), port: z.string(), learnt: z.boolean() }).optional() }),
  ),
  incoming: vm(
    'post',
    '/incoming',
    'Target: listen for the state on an address, or restore it from a file',
    body(z.strictObject({ tuning: TuningSchema.strict(), address: address.optional(), file: path('file').optional() })),
    z.object({ address: z.string().optional(), port: z.number().optional(), file: z.string().optional() }),
  ),
  send: vm(
    'post',
    '/migration',
    'Source: send the state to a target or a file',
    body(z.strictObject({ tuning: TuningSchema.strict(), address: address.optional(), port: port.optional(), file: path('file').optional() })),
    Ok,
  ),
  transfer: vm('get', '/migration', 'Transfer progress', {}, TransferProgressSchema),
  cancelTransfer: vm('post', '/migration/cancel', 'Cancel the transfer', body(Empty, false), Ok),
  postcopy: vm('post', '/migration/postcopy', 'Switch the transfer to post-copy', body(Empty, false), Ok),
  continueTransfer: vm('post', '/migration/continue', 'Send the device state of a transfer paused before switchover', body(Empty, false), Ok),
  measure: vm(
    'post',
    '/measure',
    "The guest's dirty rate and non-zero memory",
    body(z.strictObject({ ms: z.number().int().min(50).max(10_000).optional(), samples: z.number().int().min(16).max(65536).optional() }), false),
    Measurement,
  ),
  nic: vm('get', '/nic', 'NIC offloads offered and negotiated', {}, z.object({ offered: z.array(z.enum(OFFLOADS)), negotiated: z.array(z.enum(OFFLOADS)) })),
  freeze: vm(
    'post',
    '/backup/freeze',
    'Freeze the disk under a backup overlay',
    body(z.strictObject({ overlay: path('overlay'), mode: z.enum(['full', 'incremental']) })),
    Freeze,
  ),
  merge: vm('post', '/backup/merge', 'Merge the backup overlay back', body(z.strictObject({ copied: z.boolean() })), Freeze),
  replicaSync: vm(
    'post',
    '/replica-sync',
    'One replica sync into an NBD export',
    body(NbdTarget.extend({ mode: z.enum(['full', 'incremental']) })),
    RecoveryPointSchema.omit({ id: true, atMs: true }).extend({ ms: z.number() }),
  ),
  cancelReplicaSync: vm('post', '/replica-sync/cancel', 'Cancel a replica sync', body(Empty, false), z.object({ cancelled: z.boolean() })),
  moveStorage: vm(
    'post',
    '/move-storage',
    'Mirror the disk to a new image and switch to it',
    body(z.strictObject({ target: path('target'), sizeBytes: z.number().int().min(1) })),
    Copy,
  ),
  exportDisk: vm('post', '/nbd-export', "Export the guest's disk over NBD", body(z.strictObject({ address: address.optional() })), NbdEndpointSchema),
  unexportDisk: vm('delete', '/nbd-export', 'Stop the NBD export', {}, Ok),
  mirror: vm('post', '/disk-mirror', 'Mirror the disk into an NBD export until in sync', body(NbdTarget), Copy),
  endMirror: vm('post', '/disk-mirror/end', 'End the disk mirror', body(z.strictObject({ complete: z.boolean() })), z.object({ bytes: z.number() })),
  consoleInput: vm('post', '/console', 'Console input', body(ConsoleInputBody), Ok),
  console: createRoute({
    method: 'get',
    path: '/v1/vms/{name}/console',
    tags: ['Agent'],
    summary: 'The console stream (follows)',
    request: { params },
    responses: { 200: { description: 'raw console bytes', content: { 'application/octet-stream': { schema: z.string() } } } },
  }),
  probe: createRoute({
    method: 'post',
    path: '/v1/net/probe',
    tags: ['Agent'],
    summary: 'Can this node reach an address on a cluster network?',
    request: body(z.strictObject({ from: address.optional(), to: address, port, timeoutMs: z.number().int().min(1).max(5000).optional() })),
    responses: answers(z.object({ ok: z.boolean(), ms: z.number(), error: z.string().optional() })),
  }),
  throughput: createRoute({
    method: 'post',
    path: '/v1/net/throughput',
    tags: ['Agent'],
    summary: "How fast this node sends to another's beacon",
    request: body(z.strictObject({ from: address.optional(), to: address, port, ms: z.number().int().min(10).max(3000).optional() })),
    responses: answers(z.object({ bytesPerSec: z.number(), bytes: z.number(), ms: z.number() })),
  }),
};

/** The agent path whose WebSocket upgrade is a VM's screen. */
export const DISPLAY_PATH = /^\/v1\/vms\/([^/]+)\/display$/;

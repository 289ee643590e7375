/**
 * The controller's REST API as OpenAPI 3.1, served at /api/v1/openapi.json.
 * Request schemas are built from the same limits and patterns the server
 * validates with (LIMITS, NAME_PATTERN, the policy fields, the network
 * roles); a unit test checks that every route the router serves is here and
 * nothing else is.
 */
import { LIMITS, NAME_PATTERN } from '../domain/records.js';
import { NETWORK_ROLES, METRIC_RANGE } from '../domain/networks.js';
import { OFFLOADS } from '../domain/nic.js';
import { KEEP_RANGE } from '../controller/storage/schedules.js';
import { REPLICA_INTERVALS, REPLICA_KEEP } from '../controller/replica/replicas.js';

type Schema = Record<string, unknown>;

const name: Schema = { type: 'string', pattern: NAME_PATTERN.source };
const int = (r: { min: number; max: number }): Schema => ({ type: 'integer', minimum: r.min, maximum: r.max });
const obj = (properties: Record<string, Schema>, required: string[] = []): Schema => ({ type: 'object', additionalProperties: false, properties, ...(required.length ? { required } : {}) });

const policy: Schema = obj({
  bandwidthMiBps: { type: ['integer', 'null'], minimum: 1, maximum: 100000, description: 'null: the link is the limit' },
  downtimeMs: int({ min: 1, max: 60000 }),
  completionTimeoutSPerGiB: int({ min: 0, max: 86400 }),
  progressTimeoutS: int({ min: 0, max: 86400 }),
  escalation: { type: 'array', items: { enum: ['auto-converge', 'postcopy'] }, uniqueItems: true },
  multifdChannels: int({ min: 1, max: 16 }),
  xbzrle: { type: 'boolean' },
});
const policyOrName: Schema = { oneOf: [{ enum: ['ferry', 'qemu-defaults'] }, policy] };

export const SCHEMAS: Record<string, Schema> = {
  VmCreate: obj({
    name, memoryMiB: int(LIMITS.memoryMiB), cpus: int(LIMITS.cpus), diskGiB: int(LIMITS.diskGiB),
    workload: { type: 'string', description: 'idle | memory:<MiB/s> | tcp | tcp-client:<VM>, joined with +' },
    node: name, compat: { oneOf: [{ type: 'boolean' }, { enum: ['on', 'off'] }] }, switch: name,
    offloads: { oneOf: [{ enum: ['all', 'none'] }, { type: 'array', items: { enum: [...OFFLOADS] } }, { type: 'string', description: 'comma-separated' }] },
  }, ['name']),
  VmSet: obj({ compat: { oneOf: [{ type: 'boolean' }, { enum: ['on', 'off'] }] }, switch: name, policy: { oneOf: [policyOrName, { type: 'null' }] } }),
  Migrate: obj({
    to: { type: 'string', description: 'a node name or an agent URL' },
    mode: { enum: ['live', 'quick'] },
    priority: { enum: ['drain', 'manual', 'rebalance'] },
    check: { type: 'boolean', description: 'list every blocker, move nothing' },
    plan: { type: 'boolean', description: 'measure and predict, move nothing' },
    withStorage: { type: 'string', description: 'shared-nothing: an absolute directory on the target the disk is copied into' },
    policy: policyOrName,
    tuning: obj({
      maxBandwidthBytesPerSec: { type: 'integer', minimum: 0 }, maxDowntimeMs: int({ min: 1, max: 60000 }), multifdChannels: int({ min: 1, max: 16 }),
      autoConverge: { type: 'boolean' }, xbzrle: { type: 'boolean' }, postcopy: { type: 'boolean' },
    }),
  }, ['to']),
  Policy: policy,
  NodeAdd: obj({ name, cpuModel: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,40}$' }, memoryMiB: { type: 'integer', minimum: LIMITS.memoryMiB.min }, nicBackend: { enum: ['stream', 'tap'] } }),
  Drain: obj({ drain: { enum: ['live', 'save'] }, dryRun: { type: 'boolean' } }),
  NetworkSet: obj({ role: { enum: [...NETWORK_ROLES] }, metric: int(METRIC_RANGE) }),
  SwitchCreate: obj({ name, macAgeingS: int({ min: 1, max: 86400 }) }, ['name']),
  SwitchSet: obj({ macAgeingS: int({ min: 1, max: 86400 }) }, ['macAgeingS']),
  Binding: obj({ node: name, iface: { enum: ['eth0', 'eth1'] }, switch: name }, ['node', 'iface', 'switch']),
  Scrub: obj({ inactive: { type: 'boolean' }, settings: { type: 'boolean' }, name, force: { type: 'boolean' } }),
  Setting: obj({ value: {} }, ['value']),
  MoveStorage: obj({ to: { type: 'string', description: 'an absolute directory' } }, ['to']),
  BackupCreate: obj({ vm: name, incremental: { type: 'boolean' }, bandwidthMiBps: { type: 'integer', minimum: 1, maximum: 100000, description: 'cap on the copy' } }, ['vm']),
  BackupRestore: obj({ as: name }),
  ReplicaEnable: obj({
    to: { type: 'string', description: "the replica cluster's API URL" }, token: { type: 'string', description: "the replica cluster's API token" },
    interval: { enum: Object.keys(REPLICA_INTERVALS) }, keep: int(REPLICA_KEEP),
  }, ['to', 'token']),
  ReplicaFailover: obj({ planned: { type: 'boolean' }, test: { type: 'boolean' }, point: { type: 'string', pattern: '^p-[a-z0-9-]{1,40}$' } }),
  BackupSchedule: obj({
    every: { type: 'string', pattern: '^[0-9]{1,6}(s|m|h|d)$', description: '1s to 366d' },
    keep: int(KEEP_RANGE),
    window: { type: ['string', 'null'], pattern: '^[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]$', description: 'HH:MM-HH:MM local time, may wrap past midnight' },
  }, ['every', 'keep']),
  Balance: obj({ dryRun: { type: 'boolean' } }),
  Ping: obj({ timeoutMs: { type: 'integer', minimum: 1 } }),
  ConsoleInput: obj({ data: { type: 'string' } }),
  Start: obj({ node: name }),
  Heartbeat: { type: 'object', description: 'sent by node agents' },
  Error: obj({ error: obj({ code: { type: 'string' }, message: { type: 'string' }, retryable: { type: 'boolean' }, details: { type: 'object' } }) }),
};

interface Op {
  summary: string;
  body?: string;
  response?: string;
  query?: Record<string, string>;
}

/** Every route of the controller: "METHOD /path" → what it does. */
export const OPERATIONS: Record<string, Op> = {
  'GET /api/v1/status': { summary: 'Cluster counts: nodes, VMs, running migrations' },
  'GET /api/v1/nodes': { summary: 'Nodes with state, capabilities, load' },
  'POST /api/v1/nodes': { summary: 'A node joins the cluster', body: 'NodeAdd' },
  'DELETE /api/v1/nodes/{name}': { summary: 'An empty node leaves the cluster' },
  'POST /api/v1/agents/heartbeat': { summary: 'Node agent heartbeat', body: 'Heartbeat' },
  'POST /api/v1/nodes/{name}/maintenance': { summary: 'Drain a node (live or save), or plan it with dryRun', body: 'Drain' },
  'POST /api/v1/nodes/{name}/resume': { summary: 'Take a node out of maintenance' },
  'GET /api/v1/vms': { summary: 'VMs, with a running migration\'s step and progress' },
  'POST /api/v1/vms': { summary: 'Create a VM', body: 'VmCreate' },
  'GET /api/v1/vms/{name}': { summary: 'One VM, with its migration and NIC offloads' },
  'PATCH /api/v1/vms/{name}': { summary: 'Change compat mode, switch (stopped VMs) or migration policy', body: 'VmSet' },
  'DELETE /api/v1/vms/{name}': { summary: 'Delete a stopped VM and its disk' },
  'POST /api/v1/vms/{name}/start': { summary: 'Start (or restore a saved) VM', body: 'Start' },
  'POST /api/v1/vms/{name}/stop': { summary: 'Stop a VM' },
  'POST /api/v1/vms/{name}/save': { summary: 'Save a running VM to the shared volume' },
  'POST /api/v1/vms/{name}/move-storage': { summary: 'Move the VM\'s disk to another directory while it runs', body: 'MoveStorage' },
  'POST /api/v1/vms/{name}/ping': { summary: 'Ping the VM through its virtual switch', body: 'Ping' },
  'POST /api/v1/vms/{name}/console': { summary: 'Type into the serial console', body: 'ConsoleInput' },
  'GET /api/v1/vms/{name}/console': { summary: 'Serial console log (text); ?follow=1 streams', query: { follow: '1 to keep streaming' }, response: 'text' },
  'POST /api/v1/vms/{name}/migrate': { summary: 'Live or quick migration (queued), or a check/plan', body: 'Migrate' },
  'GET /api/v1/migrations': { summary: 'Migrations, queued ones with their place' },
  'GET /api/v1/migrations/{id}': { summary: 'One migration; its report once ended' },
  'POST /api/v1/migrations/{id}/cancel': { summary: 'Cancel a migration (the VM stays on its source)' },
  'GET /api/v1/networks': { summary: 'Cluster networks with each node\'s address and reachability' },
  'PUT /api/v1/networks/{name}': { summary: 'Change a network\'s role and metric', body: 'NetworkSet' },
  'GET /api/v1/switches': { summary: 'Virtual switches with bindings and attached VMs' },
  'POST /api/v1/switches': { summary: 'Create a virtual switch', body: 'SwitchCreate' },
  'PATCH /api/v1/switches/{name}': { summary: 'Change a switch\'s settings', body: 'SwitchSet' },
  'DELETE /api/v1/switches/{name}': { summary: 'Delete a switch no VM uses' },
  'GET /api/v1/switch-bindings': { summary: 'Node interfaces and the switch each carries', query: { node: 'one node' } },
  'POST /api/v1/switch-bindings': { summary: 'Bind a switch to a node interface', body: 'Binding' },
  'DELETE /api/v1/switch-bindings/{node}/{iface}': { summary: 'Unbind a node interface' },
  'POST /api/v1/switches-scrub': { summary: 'Remove unused switches, reset settings or remove one switch', body: 'Scrub' },
  'GET /api/v1/switch/macs': { summary: 'MAC tables of every switch' },
  'GET /api/v1/backups': { summary: 'Backups, of one VM with ?vm=', query: { vm: 'one VM' } },
  'POST /api/v1/backups': { summary: 'Back up a VM now (full or incremental); answers when it is verified', body: 'BackupCreate' },
  'POST /api/v1/backups/{id}/restore': { summary: 'Restore a backup as a new VM, or onto its stopped VM', body: 'BackupRestore' },
  'DELETE /api/v1/backups/{id}': { summary: 'Delete a backup no other backup builds on' },
  'GET /api/v1/backup-schedules': { summary: 'Backup schedules with their last run' },
  'GET /api/v1/replicas': { summary: 'Replicated VMs (outgoing: last sync, lag, bytes, health) and replicas this cluster holds (incoming: recovery points)' },
  'PUT /api/v1/replicas/{vm}': { summary: "Replicate a running VM's disk to another Ferry cluster; answers after the initial full copy", body: 'ReplicaEnable' },
  'DELETE /api/v1/replicas/{vm}': { summary: 'Stop replicating a VM; the replica side drops its copy' },
  'POST /api/v1/replicas/{vm}/sync': { summary: 'Sync now (changed blocks since the last recovery point)' },
  'POST /api/v1/replicas/{vm}/failover': { summary: 'Planned (final sync, nothing lost), unplanned (newest or chosen recovery point) or test failover', body: 'ReplicaFailover' },
  'POST /api/v1/replicas/{vm}/reverse': { summary: 'After a failover, replicate the VM back to its old primary' },
  'GET /api/v1/replica-target': { summary: "Replica side: this cluster's id (a primary checks it is not itself)" },
  'POST /api/v1/replica-in': { summary: 'Replica side: register a replica sent by a primary cluster' },
  'POST /api/v1/replica-in/{vm}/sync': { summary: "Replica side: open one sync (an NBD export of the replica disk)" },
  'POST /api/v1/replica-in/{vm}/sync/close': { summary: 'Replica side: close a sync; with a point, keep it as a recovery point' },
  'POST /api/v1/replica-in/{vm}/failover': { summary: 'Replica side: start the VM (or a test copy on an isolated switch) from a recovery point', body: 'ReplicaFailover' },
  'DELETE /api/v1/replica-in/{vm}': { summary: 'Replica side: drop a replica and its recovery points' },
  'PUT /api/v1/backup-schedules/{vm}': { summary: 'Back a VM up every so often inside a window, keeping the newest N scheduled backups', body: 'BackupSchedule' },
  'DELETE /api/v1/backup-schedules/{vm}': { summary: "Stop a VM's scheduled backups (its backups stay)" },
  'GET /api/v1/events': { summary: 'The event log; with Accept: text/event-stream, live server-sent events', query: { since: 'ms since the epoch' }, response: 'events' },
  'GET /api/v1/cluster/settings': { summary: 'Cluster settings' },
  'GET /api/v1/cluster/cpu-baselines': { summary: 'Each CPU vendor\'s compatibility baseline' },
  'GET /api/v1/cluster/policy': { summary: 'The default migration policy and where each field comes from' },
  'PUT /api/v1/cluster/policy': { summary: 'Replace the cluster\'s policy overrides', body: 'Policy' },
  'POST /api/v1/cluster/balance': { summary: 'Rebalance load with live migrations (or plan it)', body: 'Balance' },
  'PUT /api/v1/cluster/settings/{name}': { summary: 'Change one cluster setting', body: 'Setting' },
  'POST /api/v1/cluster/down': { summary: 'Stop every VM (before the daemons stop)' },
  'GET /api/v1/openapi.json': { summary: 'This description' },
  'GET /metrics': { summary: 'Prometheus metrics', response: 'text' },
};

export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [key, op] of Object.entries(OPERATIONS)) {
    const [method, p] = key.split(' ') as [string, string];
    const params = [...p.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    for (const [q, description] of Object.entries(op.query ?? {})) params.push({ name: q, in: 'query', required: false, schema: { type: 'string' }, description } as never);
    const content = op.response === 'text' ? { 'text/plain': { schema: { type: 'string' } } }
      : op.response === 'events' ? { 'application/json': { schema: { type: 'array' } }, 'text/event-stream': { schema: { type: 'string' } } }
      : { 'application/json': { schema: { type: 'object' } } };
    paths[p] ??= {};
    paths[p]![method.toLowerCase()] = {
      summary: op.summary,
      ...(params.length ? { parameters: params } : {}),
      ...(op.body ? { requestBody: { required: op.body !== 'Start', content: { 'application/json': { schema: { $ref: `#/components/schemas/${op.body}` } } } } } : {}),
      responses: {
        200: { description: 'OK', content },
        default: { description: 'A Ferry error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Ferry controller API', version: '1', description: 'Bearer token (STATE/token) or the dashboard\'s session cookie with x-csrf-token on changes.' },
    components: { schemas: SCHEMAS, securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearer: [] }],
    paths,
  };
}

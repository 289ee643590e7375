/**
 * Every request and response of Ferry's APIs as a zod schema: the API
 * validates with them, the TypeScript types of requests come from them, the
 * OpenAPI document is generated from them, and the typed client (CLI,
 * console, bench, tests) is typed by them. Limits come from the domain
 * (LIMITS, KEEP_RANGE, REPLICA_KEEP, …), never written here a second time.
 *
 * A bad value gets one line naming what was wrong, in the words Ferry has
 * always used ("memory (MiB) must be a whole number from 64 to 65536, got
 * '999999'"); an unknown field is refused ("unknown field 'pad'").
 */
import { z } from '@hono/zod-openapi';
import { KEEP_RANGE, parseDuration, parseWindow } from '../domain/backups.js';
import { isFerryError } from '../domain/errors.js';
import { NIC_BACKENDS, OFFLOADS, validateOffloads } from '../domain/nic.js';
import { METRIC_RANGE, NETWORK_ROLES } from '../domain/networks.js';
import { NAMED_POLICIES, namedPolicy } from '../domain/policy.js';
import { HA_PRIORITY } from '../domain/ha.js';
import { parseStorageRoots } from '../domain/storage-roots.js';
import { FIRMWARES, LIMITS, NAME_PATTERN, RunState, START_ACTIONS } from '../domain/records.js';

const RUN_STATES = Object.values(RunState) as [RunState, ...RunState[]];
import { REPLICA_INTERVALS, REPLICA_KEEP } from '../domain/replicas.js';
import { SETTING_NAMES } from '../domain/settings.js';
import { NODE_INTERFACES } from '../domain/switches.js';
import { parseWorkloads } from '../domain/workload.js';

export { z };

// ---- building blocks ----------------------------------------------------------

/** How a refused value is shown in a message. */
export function shown(v: unknown): string {
  const text = typeof v === 'string' ? v : v === undefined ? 'nothing' : (JSON.stringify(v) ?? String(v));
  return excerpt(text);
}

/** What an error may echo of the input: at most 64 characters, and how long the rest was. */
export function excerpt(text: string, max = 64): string {
  const flat = text.replace(/[\u0000-\u001f\u007f]/g, '?');
  return flat.length <= max ? flat : `${flat.slice(0, max)}… (${flat.length} characters)`;
}

/** A whole number in a range, refused with `${label} must be a whole number from A to B, got 'X'`. */
export function wholeNumber(label: string, r: { min: number; max: number }) {
  return z
    .number({
      error: (iss) =>
        `${label} must be a whole number from ${r.min} to ${r.max}, got '${shown(iss.input)}'${typeof iss.input === 'string' ? ' (a string)' : ''}`,
    })
    .int()
    .min(r.min)
    .max(r.max);
}

/** A name of a VM, node, switch or network: DNS-label-like, so safe in paths and argv. */
export function name(kind: 'VM' | 'node' | 'switch' | 'network') {
  return z
    .string({ error: (iss) => `${kind} name '${shown(iss.input)}' is malformed: use 1-32 lowercase letters, digits and '-', starting with a letter` })
    .regex(NAME_PATTERN)
    .openapi({ example: kind === 'VM' ? 'web' : kind === 'node' ? 'node-1' : kind === 'switch' ? 'default' : 'migration' });
}
export const VmName = name('VM');
export const NodeName = name('node');
export const SwitchName = name('switch');
export const NetworkName = name('network');

/** true/false or on/off, refused with `${field} must be on or off, got 'X'`. */
export function onOff(field: string) {
  return z
    .union([z.boolean(), z.enum(['on', 'off'])], { error: (iss) => `${field} must be on or off, got '${shown(iss.input)}'` })
    .transform((v) => v === true || v === 'on');
}

/** A string the domain parses itself (its messages are Ferry's): the parse error becomes the issue. */
function parsed<T>(parse: (v: string) => T, label: string, maxLength = 512) {
  return z
    .string({ error: (iss) => `${label} must be a string, got '${shown(iss.input)}'` })
    .max(maxLength, { error: (iss) => `${label} is too long (at most ${maxLength} characters, got ${String((iss.input as string).length)})` })
    .transform((v, ctx) => {
      try {
        return parse(v);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: isFerryError(e) ? e.message : String(e) });
        return z.NEVER;
      }
    });
}

/** A directory a user names; where it may be is judged on the server (storage roots). */
const DirectoryText = (what: string) =>
  z.string({ error: (iss) => `${what} must be a directory, got '${shown(iss.input)}'` }).max(4096, { error: `${what} is longer than 4096 characters` });

const Empty = z.strictObject({});
export const Ok = z.object({}).openapi('Ok');

// ---- errors -------------------------------------------------------------------

export const ErrorBody = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'vm-not-found' }),
      message: z.string().openapi({ example: "unknown VM 'ghost'" }),
      details: z.record(z.string(), z.unknown()).optional(),
    }),
  })
  .openapi('Error');

// ---- records ------------------------------------------------------------------

export const CpuIdentitySchema = z.object({ vendor: z.string(), model: z.string(), features: z.array(z.string()) }).openapi('CpuIdentity');

export const NodeCapabilitiesSchema = z
  .object({
    accelerator: z.enum(['kvm', 'tcg']),
    acceleratorReason: z.string(),
    cpu: CpuIdentitySchema,
    qemuVersion: z.string(),
    memoryTotalMiB: z.number(),
    memoryFreeMiB: z.number(),
    cpuCount: z.number().optional(),
    nic: z.object({ backend: z.string(), offloads: z.array(z.string()), vnetHeader: z.boolean() }).optional(),
  })
  .openapi('NodeCapabilities');

const HostLinkSchema = z.strictObject({
  iface: z.string().max(15),
  operState: z.string().max(16),
  speedMbit: z.number().int().min(1).optional(),
  mtu: z.number().int().min(0),
});
const Endpoint = z.object({ address: z.string(), port: z.number(), link: HostLinkSchema.optional() });

export const NodeSchema = z
  .object({
    name: z.string(),
    url: z.string(),
    migrationAddress: z.string(),
    state: z.enum(['up', 'maintenance', 'down']),
    capabilities: NodeCapabilitiesSchema.optional(),
    lastSeenMs: z.number().optional(),
    networks: z.record(z.string(), Endpoint).optional(),
    volume: z.object({ ok: z.boolean(), error: z.string().optional() }).optional(),
  })
  .openapi('Node');
export const NodeViewSchema = NodeSchema.extend({ vmCount: z.number(), memoryFreeMiB: z.number() }).openapi('NodeView');

const PolicyFieldsShape = {
  bandwidthMiBps: z
    .union([wholeNumber('bandwidthMiBps', { min: 1, max: 100_000 }), z.null(), z.literal('none').transform(() => null)], {
      error: (iss) => `bandwidthMiBps must be a whole number from 1 to 100000, got '${shown(iss.input)}'`,
    })
    .openapi({ description: 'MiB/s; null: the link is the limit' }),
  downtimeMs: wholeNumber('downtimeMs', { min: 1, max: 60_000 }),
  completionTimeoutSPerGiB: wholeNumber('completionTimeoutSPerGiB', { min: 0, max: 86_400 }),
  progressTimeoutS: wholeNumber('progressTimeoutS', { min: 0, max: 86_400 }),
  escalation: z
    .array(z.enum(['auto-converge', 'postcopy']), {
      error: (iss) => `escalation must list auto-converge and/or postcopy, each once, got '${shown(iss.input)}'`,
    })
    .refine((l) => new Set(l).size === l.length, {
      error: (iss) => `escalation must list auto-converge and/or postcopy, each once, got '${shown(iss.input)}'`,
    }),
  multifdChannels: wholeNumber('multifdChannels', { min: 1, max: 16 }),
  xbzrle: z.boolean({ error: (iss) => `xbzrle must be true or false, got '${shown(iss.input)}'` }),
};
const POLICY_FIELDS = Object.keys(PolicyFieldsShape);

/** A partial migration policy: fields override the cluster's, the VM's and Ferry's default. */
export const PolicySchema = z
  .strictObject(
    {
      bandwidthMiBps: PolicyFieldsShape.bandwidthMiBps.optional(),
      downtimeMs: PolicyFieldsShape.downtimeMs.optional(),
      completionTimeoutSPerGiB: PolicyFieldsShape.completionTimeoutSPerGiB.optional(),
      progressTimeoutS: PolicyFieldsShape.progressTimeoutS.optional(),
      escalation: PolicyFieldsShape.escalation.optional(),
      multifdChannels: PolicyFieldsShape.multifdChannels.optional(),
      xbzrle: PolicyFieldsShape.xbzrle.optional(),
    },
    { error: (iss) => (iss.code === 'unrecognized_keys' ? `unknown policy field '${iss.keys[0]}' (fields: ${POLICY_FIELDS.join(', ')})` : undefined) },
  )
  .openapi('Policy');

export const EffectivePolicySchema = z
  .object({
    bandwidthMiBps: z.number().nullable(),
    downtimeMs: z.number(),
    completionTimeoutSPerGiB: z.number(),
    progressTimeoutS: z.number(),
    escalation: z.array(z.enum(['auto-converge', 'postcopy'])),
    multifdChannels: z.number(),
    xbzrle: z.boolean(),
  })
  .openapi('EffectivePolicy');

/** A policy as given: a named preset (ferry, qemu-defaults) or fields. */
export const PolicyOrName = z
  .union([z.enum(Object.keys(NAMED_POLICIES) as [string, ...string[]]), PolicySchema], {
    error: (iss) => {
      if (typeof iss.input === 'string')
        return `unknown policy '${shown(iss.input)}' (named policies: ${Object.keys(NAMED_POLICIES).join(', ')}; or a JSON object)`;
      if (typeof iss.input !== 'object' || iss.input === null || Array.isArray(iss.input)) return 'a policy is a JSON object or a policy name';
      const branch = (iss as { errors?: { message: string; path: PropertyKey[] }[][] }).errors?.[1]?.[0];
      return branch?.message;
    },
  })
  .transform((p) => (typeof p === 'string' ? { ...namedPolicy(p)! } : p));

export const GuestReportSchema = z.union([
  z.object({
    agent: z.literal(true),
    os: z.string().optional(),
    kernel: z.string().optional(),
    hostname: z.string().optional(),
    interfaces: z.array(z.object({ name: z.string(), mac: z.string().optional(), addresses: z.array(z.string()) })),
    cloudInit: z.object({ state: z.enum(['done', 'error', 'not-run']), datasource: z.string().optional(), errors: z.array(z.string()).optional() }).optional(),
  }),
  z.object({ agent: z.literal(false), reason: z.string() }),
]);

export const VmSchema = z
  .object({
    name: z.string(),
    memoryMiB: z.number(),
    cpus: z.number(),
    diskGiB: z.number(),
    diskPath: z.string(),
    mac: z.string(),
    ip: z.string(),
    workload: z.string(),
    node: z.string(),
    state: z.enum(['stopped', 'starting', 'running', 'migrating', 'stopping', 'saved', 'error', 'lost']),
    createdAtMs: z.number(),
    stateSinceMs: z.number().optional(),
    error: z.string().optional(),
    migrationId: z.string().optional(),
    savedState: z.string().optional(),
    guestCpu: CpuIdentitySchema.optional(),
    compat: z.boolean().optional(),
    switch: z.string().optional(),
    nicOffloads: z.array(z.string()).optional(),
    policy: PolicySchema.optional(),
    startAction: z.enum(START_ACTIONS).optional(),
    runningAtDown: z.boolean().optional(),
    boot: z
      .object({
        firmware: z.enum(FIRMWARES),
        image: z.string().optional(),
        linked: z.boolean().optional(),
        iso: z.string().optional(),
        isoFile: z.string().optional(),
        efiVarsPath: z.string().optional(),
        seedPath: z.string().optional(),
      })
      .optional(),
    ha: z.object({ priority: z.number() }).optional().openapi({ description: 'high availability: restarted elsewhere when its host fails' }),
    lost: z.object({ node: z.string(), sinceMs: z.number() }).optional(),
    haFailures: z.number().optional(),
    haHeld: z.object({ reason: z.string(), sinceMs: z.number() }).optional(),
  })
  .openapi('Vm');

const TransferStatusSchema = z.enum(['none', 'setup', 'active', 'postcopy', 'pre-switchover', 'device', 'completed', 'failed', 'cancelling', 'cancelled']);
export const TransferProgressSchema = z
  .object({
    status: TransferStatusSchema,
    transferredBytes: z.number(),
    remainingBytes: z.number(),
    totalBytes: z.number(),
    dirtyRateBytesPerSec: z.number(),
    throughputBytesPerSec: z.number(),
    rounds: z.number(),
    downtimeMs: z.number().optional(),
    expectedDowntimeMs: z.number().optional(),
    totalTimeMs: z.number().optional(),
    setupTimeMs: z.number().optional(),
    throttlePercent: z.number(),
    error: z.string().optional(),
  })
  .openapi('TransferProgress');
const MigrationProgressSchema = TransferProgressSchema.extend({ estimatedRemainingMs: z.number().optional(), sampledAtMs: z.number() });

/** A guest process as its node's agent reports it. */
export const InstanceSchema = z
  .object({
    name: z.string(),
    pid: z.number(),
    runState: z.enum(RUN_STATES),
    incoming: z.boolean(),
    startedAtMs: z.number(),
    network: z.enum(['connected', 'disconnected']).optional(),
    ioErrorResumes: z.number().optional(),
  })
  .openapi('Instance');

export const VmViewSchema = VmSchema.extend({
  migration: z
    .object({ id: z.string(), phase: z.string(), from: z.string(), to: z.string(), progress: MigrationProgressSchema.optional() })
    .partial()
    .optional(),
  nic: z.object({ backend: z.string(), offered: z.array(z.string()), negotiated: z.array(z.string()) }).optional(),
  runState: InstanceSchema.shape.runState.optional().openapi({ description: "the process's run state as its node reports it (running, paused, io-error, …)" }),
  network: z.enum(['connected', 'disconnected']).optional().openapi({ description: 'whether the NIC is plugged into its virtual switch (stream NICs)' }),
  guest: GuestReportSchema.optional().openapi({ description: "what the guest's agent says (a running VM with its own OS)" }),
}).openapi('VmView');

export const TuningSchema = z
  .object({
    maxBandwidthBytesPerSec: z.number(),
    maxDowntimeMs: z.number(),
    autoConverge: z.boolean(),
    multifdChannels: z.number(),
    xbzrle: z.boolean(),
    postcopy: z.boolean(),
    throttleInitialPercent: z.number().optional(),
    throttleIncrementPercent: z.number().optional(),
    pauseBeforeSwitchover: z.boolean().optional(),
  })
  .openapi('Tuning');

export const MigrationNetworkSchema = z
  .object({ name: z.string(), sourceAddress: z.string(), targetAddress: z.string(), skipped: z.array(z.object({ network: z.string(), reason: z.string() })) })
  .openapi('MigrationNetwork');

export const PredictionSchema = z
  .object({
    strategy: z.enum(['pre-copy', 'pre-copy + auto-converge', 'post-copy after round 1', 'pre-copy (expected to abort)']),
    reason: z.string(),
    totalMs: z.number(),
    transferMs: z.number(),
    rounds: z.number(),
    downtimeMs: z.number(),
    bytes: z.number(),
    converges: z.boolean(),
    throttlePercent: z.number(),
    postcopyAfterRound: z.number().optional(),
    throttleInitialPercent: z.number().optional(),
    throttleIncrementPercent: z.number().optional(),
    input: z.object({ ramBytes: z.number(), nonZeroBytes: z.number(), dirtyRateBytesPerSec: z.number(), linkBytesPerSec: z.number(), measureMs: z.number() }),
  })
  .openapi('Prediction');

const UndoStepSchema = z.object({ action: z.string(), args: z.record(z.string(), z.unknown()) });
const Phased = {
  undo: z.array(UndoStepSchema).optional(),
  always: z.array(UndoStepSchema).optional(),
  committedAtMs: z.number().optional(),
  cleanupErrors: z.array(z.string()).optional(),
  warnings: z.array(z.string()).optional(),
};

const STEP_NAMES = ['connect', 'config', 'create', 'memory', 'disks', 'resume', 'network'] as const;
export const MigrationReportSchema = z
  .object({
    id: z.string(),
    vm: z.string(),
    mode: z.enum(['live', 'quick']),
    from: z.string(),
    to: z.string(),
    status: z.enum(['queued', 'running', 'completed', 'failed', 'cancelled']),
    priority: z.enum(['drain', 'manual', 'rebalance']),
    queuedMs: z.number(),
    totalMs: z.number(),
    downtimeMs: z.number().nullable(),
    guestBlackoutMs: z.number().nullable(),
    transferredBytes: z.number(),
    rounds: z.number(),
    steps: z.array(z.object({ name: z.enum(STEP_NAMES), ms: z.number() })),
    pausedMs: z.number().optional(),
    network: MigrationNetworkSchema.optional(),
    transferMs: z.number().optional(),
    predicted: z
      .object({
        strategy: z.string(),
        reason: z.string(),
        totalMs: z.number(),
        transferMs: z.number(),
        rounds: z.number(),
        downtimeMs: z.number(),
        bytes: z.number(),
      })
      .optional(),
    maxThrottlePercent: z.number().optional(),
    dirtyRateBytesPerSec: z.number().optional(),
    postcopyAfterMs: z.number().optional(),
    escalation: z.string().optional(),
    storage: z.object({ from: z.string(), to: z.string(), copiedBytes: z.number(), syncedAfterMs: z.number().nullable() }).optional(),
    policy: EffectivePolicySchema.optional(),
    error: z.string().optional(),
    warnings: z.array(z.string()).optional(),
    cleanupErrors: z.array(z.string()).optional(),
  })
  .openapi('MigrationReport');

export const MigrationSchema = z
  .object({
    id: z.string(),
    vm: z.string(),
    mode: z.enum(['live', 'quick']),
    from: z.string(),
    to: z.string(),
    phase: z.enum(['queued', 'pending', ...STEP_NAMES, 'rolling-back', 'completed', 'failed', 'cancelled']),
    status: z.enum(['queued', 'running', 'completed', 'failed', 'cancelled']),
    requestedAtMs: z.number(),
    priority: z.enum(['drain', 'manual', 'rebalance']),
    startedAtMs: z.number().optional(),
    finishedAtMs: z.number().optional(),
    steps: z.array(z.object({ name: z.enum(STEP_NAMES), startedAtMs: z.number(), endedAtMs: z.number().optional(), ms: z.number().optional() })),
    tuning: TuningSchema,
    policy: EffectivePolicySchema.optional(),
    predicted: PredictionSchema.optional(),
    postcopyStartedAtMs: z.number().optional(),
    escalation: z.string().optional(),
    maxThrottlePercent: z.number().optional(),
    transferMs: z.number().optional(),
    progress: MigrationProgressSchema.optional(),
    storage: z
      .object({
        sourceDisk: z.string(),
        targetDisk: z.string(),
        sizeBytes: z.number(),
        nbd: z.object({ address: z.string(), port: z.number(), export: z.string() }).optional(),
        copiedBytes: z.number().optional(),
        syncedAfterMs: z.number().optional(),
      })
      .optional(),
    target: Endpoint.optional(),
    network: MigrationNetworkSchema.optional(),
    stateFile: z.string().optional(),
    pausedAtMs: z.number().optional(),
    pausedMs: z.number().optional(),
    ownerMovedAtMs: z.number().optional(),
    cancelRequested: z.boolean().optional(),
    queuedMs: z.number().optional(),
    totalMs: z.number().optional(),
    downtimeMs: z.number().optional(),
    guestBlackoutMs: z.number().optional(),
    transferredBytes: z.number().optional(),
    rounds: z.number().optional(),
    error: z.string().optional(),
    ...Phased,
    queuePosition: z.number().optional(),
    report: MigrationReportSchema.optional(),
  })
  .openapi('Migration');

export const MigrationCheckSchema = z
  .object({ check: z.literal(true), vm: z.string(), to: z.string(), mode: z.enum(['live', 'quick']), ok: z.boolean(), blockers: z.array(z.string()) })
  .openapi('MigrationCheck');
export const MigrationPlanSchema = z
  .object({
    plan: z.literal(true),
    vm: z.string(),
    from: z.string().optional(),
    to: z.string(),
    mode: z.enum(['live', 'quick']),
    ok: z.boolean(),
    blockers: z.array(z.string()),
    policy: EffectivePolicySchema,
    network: MigrationNetworkSchema.optional(),
    predicted: PredictionSchema.optional(),
  })
  .openapi('MigrationPlan');

export const ClusterNetworkSchema = z
  .object({ name: z.string(), subnet: z.string(), role: z.enum(NETWORK_ROLES), metric: z.number(), addresses: z.record(z.string(), z.string()) })
  .openapi('ClusterNetwork');
export const NetworkViewSchema = ClusterNetworkSchema.extend({
  state: z.enum(['up', 'partial', 'down']),
  nodes: z.array(
    z.object({
      node: z.string(),
      address: z.string(),
      state: z.enum(['up', 'down', 'unknown']),
      error: z.string().optional(),
      link: HostLinkSchema.optional(),
    }),
  ),
}).openapi('NetworkView');

export const VirtualSwitchSchema = z
  .object({
    name: z.string(),
    settings: z.object({ macAgeingS: z.number() }),
    bindings: z.array(z.object({ node: z.string(), iface: z.string() })),
    createdAtMs: z.number(),
  })
  .openapi('VirtualSwitch');
export const SwitchViewSchema = VirtualSwitchSchema.extend({ vms: z.array(z.string()), runningVms: z.array(z.string()) }).openapi('SwitchView');
export const BindingRowSchema = z.object({ node: z.string(), iface: z.string(), switch: z.string().nullable() }).openapi('BindingRow');
export const ScrubResultSchema = z
  .object({
    removedSwitches: z.array(z.string()),
    removedBindings: z.array(z.string()),
    resetSettings: z.array(z.string()),
    disconnectedVms: z.array(z.string()),
  })
  .openapi('ScrubResult');
export const MacRowSchema = z
  .object({ mac: z.string(), port: z.string(), node: z.string(), switch: z.string(), lastSeenMs: z.number(), ageMs: z.number(), vm: z.string().nullable() })
  .openapi('MacRow');

export const BackupSchema = z
  .object({
    id: z.string(),
    vm: z.string(),
    mode: z.enum(['full', 'incremental']),
    parent: z.string().optional(),
    file: z.string(),
    status: z.enum(['waiting', 'running', 'completed', 'failed']),
    phase: z.string(),
    requestedAtMs: z.number(),
    startedAtMs: z.number().optional(),
    finishedAtMs: z.number().optional(),
    waitedMs: z.number().optional(),
    copyPausedMs: z.number().optional(),
    mergeWaitedMs: z.number().optional(),
    mergedOn: z.string().optional(),
    movedTo: z.string().optional(),
    mergeError: z.string().optional(),
    quiesced: z.boolean().optional(),
    quiesceNote: z.string().optional(),
    bytes: z.number().optional(),
    scheduled: z.boolean().optional(),
    mergedFrom: z.array(z.string()).optional(),
    sizeBytes: z.number(),
    node: z.string().optional(),
    verified: z.boolean().optional(),
    error: z.string().optional(),
    bandwidthMiBps: z.number().optional(),
    frozen: z.object({ base: z.string(), overlay: z.string() }).optional(),
    freezeStartedAtMs: z.number().optional(),
    frozenAtMs: z.number().optional(),
    ...Phased,
  })
  .openapi('Backup');

const BackupWindowSchema = z.object({ startMin: z.number(), endMin: z.number(), text: z.string() });
export const BackupScheduleSchema = z
  .object({
    vm: z.string(),
    everyMs: z.number(),
    every: z.string(),
    keep: z.number(),
    window: BackupWindowSchema.optional(),
    createdAtMs: z.number(),
    lastRunMs: z.number().optional(),
    lastBackup: z.string().optional(),
    lastError: z.string().optional(),
    skippedOutsideWindow: z.number().optional(),
  })
  .openapi('BackupSchedule');

export const RecoveryPointSchema = z
  .object({ id: z.string(), atMs: z.number(), bytes: z.number(), mode: z.enum(['full', 'incremental']) })
  .openapi('RecoveryPoint');
export const ReplicaStatusSchema = z
  .object({
    vm: z.string(),
    target: z.object({ url: z.string(), clusterId: z.string() }),
    interval: z.string(),
    intervalMs: z.number(),
    keep: z.number(),
    state: z.enum(['replicating', 'failed-over']),
    createdAtMs: z.number(),
    lastSyncAtMs: z.number().optional(),
    lastSyncMs: z.number().optional(),
    lastSyncBytes: z.number().optional(),
    lastSyncMode: z.enum(['full', 'incremental']).optional(),
    lastAttemptAtMs: z.number().optional(),
    lastError: z.string().optional(),
    unreachable: z.boolean().optional(),
    bytesSent: z.number(),
    syncs: z.number(),
    deferred: z.string().optional(),
    lagMs: z.number().nullable(),
    health: z.enum(['normal', 'warning', 'critical']),
    syncing: z.boolean(),
  })
  .openapi('ReplicaStatus');
export const ReplicaRecordSchema = ReplicaStatusSchema.omit({ lagMs: true, health: true, syncing: true }).openapi('Replica');
const ReplicaSpec = z.strictObject({
  memoryMiB: wholeNumber('memory (MiB)', LIMITS.memoryMiB),
  cpus: wholeNumber('CPUs', LIMITS.cpus),
  diskGiB: wholeNumber('disk (GiB)', LIMITS.diskGiB),
  workload: z.string(),
});
export const IncomingViewSchema = z
  .object({
    vm: z.string(),
    source: z.object({ clusterId: z.string(), url: z.string() }),
    spec: z.object({ memoryMiB: z.number(), cpus: z.number(), diskGiB: z.number(), workload: z.string() }),
    interval: z.string(),
    keep: z.number(),
    disk: z.string(),
    points: z.array(RecoveryPointSchema),
    state: z.enum(['replicating', 'failed-over', 'reversed']),
    createdAtMs: z.number(),
    failedOverAtMs: z.number().optional(),
  })
  .openapi('IncomingReplica');
export const NbdEndpointSchema = z.object({ address: z.string(), port: z.number(), export: z.string() }).openapi('NbdEndpoint');

export const ClusterEventSchema = z
  .object({
    atMs: z.number(),
    type: z.string(),
    message: z.string(),
    vm: z.string().optional(),
    node: z.string().optional(),
    migration: z.string().optional(),
    data: z.record(z.string(), z.unknown()).optional(),
  })
  .openapi('Event');

export const SettingsSchema = z
  .object({
    migrationsPerNode: z.number(),
    balanceThresholdPct: z.number(),
    balanceAuto: z.boolean(),
    balanceIntervalS: z.number(),
    backupStore: z.string(),
    shutdownTimeoutS: z.number(),
    storageRoots: z.array(z.string()),
    hostLeaseTtlS: z.number(),
  })
  .openapi('Settings');

export const CpuBaselineSchema = CpuIdentitySchema.extend({ nodes: z.array(z.string()), baseModel: z.string(), disabled: z.array(z.string()) }).openapi(
  'CpuBaseline',
);

export const DrainResultSchema = z
  .object({
    plan: z.object({
      node: z.string(),
      mode: z.enum(['live', 'save']),
      steps: z.array(z.object({ order: z.number(), vm: z.string(), memoryMiB: z.number(), to: z.string().optional(), estimatedMs: z.number() })),
      blockers: z.array(z.string()),
      estimatedMs: z.number(),
    }),
    dryRun: z.boolean(),
    migrations: z.array(z.object({ vm: z.string(), id: z.string(), to: z.string() })),
  })
  .openapi('DrainResult');

export const BalanceResultSchema = z
  .object({
    plan: z.object({
      before: z.record(z.string(), z.number()),
      after: z.record(z.string(), z.number()),
      moves: z.array(z.object({ vm: z.string(), from: z.string(), to: z.string(), memoryMiB: z.number() })),
      thresholdPct: z.number(),
    }),
    dryRun: z.boolean(),
    migrations: z.array(z.object({ vm: z.string(), id: z.string(), from: z.string(), to: z.string() })),
  })
  .openapi('BalanceResult');

export const StatusSchema = z
  .object({
    cluster: z.object({ id: z.string(), name: z.string(), createdAtMs: z.number() }),
    controller: z.object({ pid: z.number(), url: z.string(), consoleUrl: z.string(), tokenFile: z.string() }),
    nodes: z.object({ total: z.number(), up: z.number() }),
    vms: z.object({
      total: z.number(),
      running: z.number().openapi({ description: 'VMs whose guest runs' }),
      /** Running VMs whose guest does not run (an I/O error, a pause, a panic), with what it is. */
      stalled: z.array(z.object({ vm: z.string(), runState: InstanceSchema.shape.runState })),
    }),
    migrations: z.object({ running: z.number() }),
    store: z.object({
      backend: z.enum(['sqlite', 'etcd']),
      at: z.string().openapi({ description: "the SQLite file or etcd's client URLs" }),
      reachable: z.boolean(),
      error: z.string().optional(),
      sinceMs: z.number().optional(),
      revision: z.number().optional(),
    }),
    controllers: z
      .array(z.object({ name: z.string(), url: z.string(), leads: z.boolean() }))
      .optional()
      .openapi({ description: 'on etcd: every controller of the cluster, and the one that leads (it answers; the others forward to it)' }),
    leadership: z.number().optional().openapi({ description: "on etcd: the leader's leadership (the leader key's create revision)" }),
  })
  .openapi('Status');

/** What a host reads from the shared volume's marker: the cluster and the controller's mark, or why it could not. */
export const VolumeSightingSchema = z.union([
  z.strictObject({ clusterId: z.string().max(64), mark: z.string().max(64) }),
  z.strictObject({ error: z.string().max(300) }),
]);

export const HeartbeatSchema = z
  .strictObject({
    name: NodeName,
    url: z.string(),
    clusterId: z.string(),
    migrationAddress: z.string(),
    networks: z.record(z.string(), Endpoint).optional(),
    capabilities: NodeCapabilitiesSchema,
    vms: z.array(InstanceSchema),
    /** What the agent reads from the shared volume's marker: the cluster and the controller's mark, or why it could not. */
    volume: VolumeSightingSchema.optional(),
    fenced: z.array(z.string()).optional(),
  })
  .openapi('Heartbeat');
export const HeartbeatAnswerSchema = z
  .object({
    ok: z.literal(true),
    lease: z.object({
      ttlMs: z.number(),
      renew: z.object({ endpoints: z.array(z.string()).min(1), prefix: z.string().optional(), key: z.string() }).optional(),
    }),
    ha: z.array(z.string()),
    controllers: z.array(z.string()).optional(),
    leadership: z.number().int().positive().optional(),
  })
  .openapi('HeartbeatAnswer');

// ---- requests -----------------------------------------------------------------

export const WorkloadText = parsed((v) => {
  parseWorkloads(v);
  return v;
}, 'workload').openapi({ description: 'idle | memory:<MiB/s> | tcp | tcp-client:<VM> | disk:<writes/s>, joined with +', example: 'memory:32+tcp' });

export const OffloadsInput = z
  .union([z.array(z.string()), z.string()], { error: () => "offloads must be a comma-separated list, 'all' or 'none'" })
  .transform((v, ctx) => {
    try {
      return validateOffloads(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: isFerryError(e) ? e.message : String(e) });
      return z.NEVER;
    }
  })
  .openapi({ description: `a list of ${OFFLOADS.join(', ')}, or 'all' / 'none'` });

/** cloud-init as sent: the user's #cloud-config text and SSH public keys (the controller parses them: YAML is not loaded for every CLI call). */
const CloudInitInput = z
  .strictObject({
    userData: z.string().max(65536, { error: 'user data is at most 64 KiB' }).optional(),
    sshKeys: z.array(z.string().max(16384)).max(32).optional(),
  })
  .openapi({ description: "cloud-init NoCloud: the user's #cloud-config and SSH public keys for the image's default user" });

export const ImageName = z
  .string({ error: (iss) => `image name '${shown(iss.input)}' is malformed: use 1-32 lowercase letters, digits, '.', '_' and '-', starting with a letter` })
  .regex(/^[a-z][a-z0-9._-]{0,31}$/)
  .openapi({ example: 'debian-12' });

export const VmCreateBody = z
  .strictObject({
    name: VmName,
    memoryMiB: wholeNumber('memory (MiB)', LIMITS.memoryMiB).default(256),
    cpus: wholeNumber('CPUs', LIMITS.cpus).default(1),
    diskGiB: wholeNumber('disk (GiB)', LIMITS.diskGiB).optional().openapi({ description: "default 1, or the image's size" }),
    workload: WorkloadText.default('idle'),
    node: NodeName.optional(),
    compat: onOff('compat').optional(),
    switch: SwitchName.optional(),
    offloads: OffloadsInput.optional(),
    image: ImageName.optional().openapi({ description: 'boot its own OS from a linked clone of this library image' }),
    fullCopy: z.boolean().optional().openapi({ description: 'copy the image instead of a linked clone' }),
    iso: ImageName.optional().openapi({ description: 'attach this library ISO as a CD-ROM that boots first' }),
    firmware: z.enum(FIRMWARES, { error: (iss) => `--firmware must be bios or uefi, got '${shown(iss.input)}'` }).optional(),
    cloudInit: CloudInitInput.optional(),
  })
  .openapi('VmCreate');

export const VmSetBody = z
  .strictObject({
    compat: onOff('compat').optional(),
    switch: SwitchName.optional(),
    policy: z.union([PolicyOrName, z.null()]).optional(),
    startAction: z.enum(START_ACTIONS, { error: (iss) => `--start-action must be one of ${START_ACTIONS.join(', ')}, got '${shown(iss.input)}'` }).optional(),
    ha: onOff('ha').optional(),
    haPriority: wholeNumber('--ha-priority', { min: HA_PRIORITY.min, max: HA_PRIORITY.max }).optional(),
  })
  .openapi('VmSet');

export const VmStopBody = z
  .strictObject({
    force: z.boolean().optional().openapi({ description: 'power off at once instead of asking the guest to shut down' }),
    timeoutS: wholeNumber('--timeout (s)', { min: 0, max: 3600 })
      .optional()
      .openapi({ description: 'how long the guest may take (default: the cluster setting shutdownTimeoutS)' }),
  })
  .openapi('VmStop');
export const DownBody = z.strictObject({ shutdownTimeoutS: wholeNumber('--shutdown-timeout (s)', { min: 0, max: 3600 }).optional() }).openapi('Down');
export const StartActionsSchema = z
  .object({ started: z.array(z.string()), failed: z.array(z.object({ vm: z.string(), error: z.string() })) })
  .openapi('StartActions');

export const VmStartBody = z.strictObject({ node: NodeName.optional() }).openapi('VmStart');
export const MoveStorageBody = z
  .strictObject({ to: DirectoryText('--to').openapi({ description: 'a directory inside a storage root (resolved on the server)' }) })
  .openapi('MoveStorage');
export const PingBody = z.strictObject({ timeoutMs: wholeNumber('timeoutMs', { min: 1, max: 60_000 }).optional() }).openapi('Ping');
export const ConsoleInputBody = z.strictObject({ data: z.string().max(65536) }).openapi('ConsoleInput');

export const TuningOverrides = z
  .strictObject({
    maxBandwidthBytesPerSec: z.number().int().min(0).optional(),
    maxDowntimeMs: wholeNumber('maxDowntimeMs', { min: 1, max: 60_000 }).optional(),
    multifdChannels: wholeNumber('multifdChannels', { min: 1, max: 16 }).optional(),
    autoConverge: z.boolean().optional(),
    xbzrle: z.boolean().optional(),
    postcopy: z.boolean().optional(),
  })
  .openapi('TuningOverrides');

export const MigrateBody = z
  .strictObject({
    to: z
      .string({ error: () => 'a migration needs a target node (--to NODE)' })
      .min(1)
      .max(2048)
      .openapi({ description: 'a node name or an agent URL' }),
    mode: z.enum(['live', 'quick'], { error: (iss) => `mode must be live or quick, got '${shown(iss.input)}'` }).optional(),
    priority: z.enum(['drain', 'manual', 'rebalance'], { error: (iss) => `priority must be drain, manual or rebalance, got '${shown(iss.input)}'` }).optional(),
    check: z.boolean().optional().openapi({ description: 'list every blocker, move nothing' }),
    plan: z.boolean().optional().openapi({ description: 'measure and predict, move nothing' }),
    withStorage: DirectoryText('--with-storage').optional().openapi({ description: 'shared-nothing: a directory inside a storage root on the target' }),
    policy: PolicyOrName.optional(),
    tuning: TuningOverrides.optional(),
  })
  .openapi('Migrate');

export const NodeAddBody = z
  .strictObject({
    name: NodeName.optional(),
    cpuModel: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,40}$/, { error: (iss) => `CPU model '${shown(iss.input)}' is malformed` })
      .optional(),
    memoryMiB: wholeNumber('node memory (MiB)', { min: LIMITS.memoryMiB.min, max: 16 * 1048576 }).optional(),
    nicBackend: z
      .enum(NIC_BACKENDS as ['stream', 'tap', 'bridge'], { error: (iss) => `NIC backend must be stream, tap or bridge, got '${shown(iss.input)}'` })
      .optional(),
  })
  .openapi('NodeAdd');

export const DrainBody = z
  .strictObject({
    drain: z.enum(['live', 'save'], { error: (iss) => `--drain must be live or save, got '${shown(iss.input)}'` }).default('live'),
    dryRun: z.boolean().default(false),
  })
  .openapi('Drain');

export const NetworkSetBody = z
  .strictObject({
    role: z.enum(NETWORK_ROLES, { error: (iss) => `network role must be one of ${NETWORK_ROLES.join(', ')}, got '${shown(iss.input)}'` }).optional(),
    metric: z
      .number({ error: (iss) => `network metric must be a whole number from ${METRIC_RANGE.min} to ${METRIC_RANGE.max}, got '${shown(iss.input)}'` })
      .int()
      .min(METRIC_RANGE.min)
      .max(METRIC_RANGE.max)
      .optional(),
  })
  .openapi('NetworkSet');

const MacAgeing = z
  .number({ error: (iss) => `MAC ageing must be a whole number of seconds from 1 to 86400, got '${shown(iss.input)}'` })
  .int()
  .min(1)
  .max(86_400);
export const SwitchCreateBody = z.strictObject({ name: SwitchName, macAgeingS: MacAgeing.optional() }).openapi('SwitchCreate');
export const SwitchSetBody = z.strictObject({ macAgeingS: MacAgeing }).openapi('SwitchSet');
export const Iface = z.enum(NODE_INTERFACES, { error: (iss) => `unknown interface '${shown(iss.input)}' (known: ${NODE_INTERFACES.join(', ')})` });
export const BindingBody = z
  .strictObject({ node: NodeName, iface: z.string({ error: () => 'a binding needs node, iface and switch' }), switch: SwitchName })
  .openapi('Binding');
export const ScrubBody = z
  .strictObject({ inactive: z.boolean().optional(), settings: z.boolean().optional(), name: SwitchName.optional(), force: z.boolean().optional() })
  .openapi('Scrub');

/** Each setting's rule; the setting's name picks it. */
export const SETTING_RULES = {
  migrationsPerNode: wholeNumber('migrationsPerNode', { min: 1, max: 16 }),
  balanceThresholdPct: wholeNumber('balanceThresholdPct', { min: 1, max: 100 }),
  balanceIntervalS: wholeNumber('balanceIntervalS', { min: 5, max: 86_400 }),
  balanceAuto: z
    .union([z.boolean(), z.enum(['on', 'off', 'true', 'false'])], { error: (iss) => `balanceAuto must be true or false, got '${shown(iss.input)}'` })
    .transform((v) => v === true || v === 'on' || v === 'true'),
  backupStore: z
    .string({ error: (iss) => `backupStore must be an absolute directory outside /proc, /sys and /dev (or 'default'), got '${shown(iss.input)}'` })
    .refine((raw) => raw === '' || raw === 'default' || (raw.startsWith('/') && !/(^|\/)\.\.(\/|$)/.test(raw) && !/^\/(proc|sys|dev)(\/|$)/.test(raw)), {
      error: (iss) => `backupStore must be an absolute directory outside /proc, /sys and /dev (or 'default'), got '${shown(iss.input)}'`,
    })
    .transform((raw) => (raw === 'default' || raw === '' ? '' : raw.replace(/\/+$/, '') || '/')),
  storageRoots: parsed(parseStorageRoots, 'storageRoots', 4096),
  shutdownTimeoutS: wholeNumber('shutdownTimeoutS', { min: 0, max: 3600 }),
  hostLeaseTtlS: wholeNumber('hostLeaseTtlS', { min: 6, max: 10 }),
} as const;
void (SETTING_NAMES satisfies (keyof typeof SETTING_RULES)[]);
export const SettingName = z.enum(SETTING_NAMES as [keyof typeof SETTING_RULES, ...(keyof typeof SETTING_RULES)[]], {
  error: (iss) => `unknown cluster setting '${shown(iss.input)}' (known: ${SETTING_NAMES.join(', ')})`,
});
export const SettingBody = z.strictObject({ value: z.unknown() }).openapi('Setting');

export const BackupCreateBody = z
  .strictObject({
    vm: VmName,
    incremental: z.boolean().optional(),
    bandwidthMiBps: wholeNumber('--bandwidth (MiB/s)', { min: 1, max: 100_000 }).optional().openapi({ description: 'cap on the copy' }),
  })
  .openapi('BackupCreate');
export const BackupRestoreBody = z.strictObject({ as: VmName.optional() }).openapi('BackupRestore');
export const BackupScheduleBody = z
  .strictObject({
    every: z.string({ error: (iss) => `--every must be a duration like 30s, 15m, 6h or 1d (1s to 366d), got '${shown(iss.input)}'` }),
    keep: z
      .number({ error: (iss) => `--keep must be a whole number from ${KEEP_RANGE.min} to ${KEEP_RANGE.max}, got '${shown(iss.input)}'` })
      .int()
      .min(KEEP_RANGE.min)
      .max(KEEP_RANGE.max),
    window: z.string().nullable().optional(),
  })
  .transform((b, ctx) => {
    try {
      return {
        every: b.every,
        everyMs: parseDuration(b.every),
        keep: b.keep,
        window: b.window === undefined || b.window === null ? null : parseWindow(b.window),
      };
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: isFerryError(e) ? e.message : String(e) });
      return z.NEVER;
    }
  })
  .openapi('BackupScheduleSet');

export const ReplicaEnableBody = z
  .strictObject({
    to: z.string().refine((v) => /^https?:\/\/[^/]+/.test(v), {
      error: (iss) => `--to must be the replica cluster's API URL (http://HOST:PORT), got '${shown(iss.input)}'`,
    }),
    token: z
      .string({ error: () => "a replica needs the replica cluster's API token (--token-file FILE)" })
      .min(1, { error: () => "a replica needs the replica cluster's API token (--token-file FILE)" }),
    interval: z
      .enum(Object.keys(REPLICA_INTERVALS) as [string, ...string[]], {
        error: (iss) => `--interval must be one of ${Object.keys(REPLICA_INTERVALS).join(', ')}, got '${shown(iss.input)}'`,
      })
      .default('5m'),
    keep: z
      .number({ error: (iss) => `--keep must be a whole number from ${REPLICA_KEEP.min} to ${REPLICA_KEEP.max}, got '${shown(iss.input)}'` })
      .int()
      .min(REPLICA_KEEP.min)
      .max(REPLICA_KEEP.max)
      .default(3),
  })
  .openapi('ReplicaEnable');
const PointId = z.string().regex(/^p-[a-z0-9-]{1,40}$/, { error: (iss) => `a recovery point id is p-…, got '${shown(iss.input)}'` });
export const ReplicaFailoverBody = z
  .strictObject({ planned: z.boolean().optional(), test: z.boolean().optional(), point: PointId.optional() })
  .openapi('ReplicaFailover');
export const ReplicaRegisterBody = z
  .strictObject({
    vm: VmName,
    interval: z.enum(Object.keys(REPLICA_INTERVALS) as [string, ...string[]]),
    keep: z.number().int().min(REPLICA_KEEP.min).max(REPLICA_KEEP.max),
    spec: ReplicaSpec,
    source: z.strictObject(
      { clusterId: z.string().min(1), url: z.string().min(1), token: z.string().min(1) },
      { error: () => 'a replica needs its source cluster id, API URL and token' },
    ),
  })
  .openapi('ReplicaRegister');
export const SyncCloseBody = z.strictObject({ point: RecoveryPointSchema.extend({ id: PointId }).optional() }).openapi('SyncClose');
export const IncomingFailoverBody = z.strictObject({ point: PointId.optional(), test: z.boolean().optional() }).openapi('IncomingFailover');
export const BalanceBody = z.strictObject({ dryRun: z.boolean().default(false) }).openapi('Balance');

export { Empty };

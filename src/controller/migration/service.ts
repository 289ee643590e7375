/**
 * Live migration orchestration on the controller (R1, R3, R4).
 *
 * `request()` runs every refusal check synchronously, saves a record and
 * starts `run()` in the background; the caller follows the record. `run()`
 * walks R3's seven steps, saving each phase change before acting on it.
 * Any failure before the handover rolls back (cancel the transfer, make sure
 * the source runs, kill the target); `finish()` always runs last and records
 * cleanup trouble beside the cause, never instead of it.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ErrorCode, FerryError, errors, toFerryError } from '../../domain/errors.js';
import { type NodeRecord, type VmRecord, VmState } from '../../domain/records.js';
import type { MigrationNetwork } from '../../domain/migration.js';
import { cpuBlockers } from '../../domain/compat.js';
import { type AgentClient, type GuestMeasurement, waitTransferCompleted } from '../../node/client.js';
import type { Controller } from '../controller.js';
import { validateName } from '../../domain/validate.js';
import { switchBlocker } from '../../domain/placement.js';
import { switchOf } from '../network/switches.js';
import { update } from '../../ports/store.js';
import {
  type MigrationMode,
  type MigrationPhase,
  type MigrationPriority,
  type MigrationRecord,
  type MigrationStatus,
  PRIORITY_RANK,
  type StepName,
  isFinal,
  queueOrder,
  startable,
  toReport,
} from '../../domain/migration.js';
import { type TransferProgress, type TransferTuning, isTransferFinal } from '../../domain/transfer.js';
import { type MigrationPolicy, effectivePolicy, escalate, tuningFor, validatePolicy } from '../../domain/policy.js';
import { type Prediction, predict } from '../../domain/predict.js';

export interface MigrateRequest {
  to?: string;
  mode?: MigrationMode;
  /** Per-migration overrides of the transfer tuning. */
  tuning?: Partial<TransferTuning>;
  /** Queue priority; users get 'manual'. */
  priority?: MigrationPriority;
  /** Only run the pre-flight checks and report every blocker; move nothing. */
  check?: boolean;
  /** A policy name (ferry, qemu-defaults) or fields overriding the cluster's and the VM's. */
  policy?: unknown;
  /** Run the pre-flight checks, measure and predict; move nothing. */
  plan?: boolean;
  /**
   * Shared-nothing: an absolute directory on the target node the VM's disk
   * is copied into during the live migration (for a disk that is not on
   * the shared volume).
   */
  withStorage?: string;
}

/** Checks per-migration tuning overrides; unknown or out-of-range fields are refused. */
export function validateTuning(base: TransferTuning, overrides: Partial<TransferTuning> | undefined): TransferTuning {
  if (overrides === undefined) return base;
  if (typeof overrides !== 'object' || overrides === null) throw errors.invalid('tuning', 'tuning must be an object');
  const out: TransferTuning = { ...base };
  for (const [k, v] of Object.entries(overrides)) {
    switch (k) {
      case 'maxBandwidthBytesPerSec':
      case 'maxDowntimeMs':
      case 'multifdChannels':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || (k === 'multifdChannels' && (v < 1 || v > 16)) || (k === 'maxDowntimeMs' && (v < 1 || v > 60_000))) {
          throw errors.invalid(k, `tuning ${k} out of range: ${String(v)}`);
        }
        out[k] = v;
        break;
      case 'autoConverge':
      case 'xbzrle':
      case 'postcopy':
        if (typeof v !== 'boolean') throw errors.invalid(k, `tuning ${k} must be true or false`);
        out[k] = v;
        break;
      default:
        throw errors.invalid('tuning', `unknown tuning field '${k}'`);
    }
  }
  return out;
}

const POLL_MS = 100;
/** How long the pre-flight measures the guest's dirty rate, then the link. */
const MEASURE_MS = 400;
/** Remaining bytes must fall below this share of their lowest so far to count as progress. */
const PROGRESS_FRACTION = 0.9;
/** A link measured this recently is not measured again (a drain's moves share it). */
const LINK_RATE_TTL_MS = 60_000;
/** A guest measured while queued is used if its migration starts within this time. */
const EARLY_TTL_MS = 30_000;
const SAVE_PROGRESS_EVERY_MS = 250;
/** How long the network step waits for the switch to see the MAC on the target. */
const MAC_MOVE_TIMEOUT_MS = 3_000;

class MigrationAborted extends Error {}

export class MigrationService {
  private readonly running = new Map<string, AbortController>();

  constructor(private readonly c: Controller) {
    c.cancelMigrationOf = async (vm) => {
      const m = (await this.list()).find((r) => r.vm === vm && !isFinal(r.status));
      if (m) await this.cancelAndWait(m.id);
    };
  }

  private key(id: string): string {
    return `migrations/${id}`;
  }

  async list(): Promise<MigrationRecord[]> {
    return (await this.c.store.list<MigrationRecord>('migrations/'))
      .map((e) => e.value)
      .sort((a, b) => a.requestedAtMs - b.requestedAtMs);
  }

  async get(id: string): Promise<MigrationRecord & { report?: ReturnType<typeof toReport> }> {
    const e = await this.c.store.get<MigrationRecord>(this.key(id));
    if (!e) throw errors.migrationNotFound(id);
    return isFinal(e.value.status) ? { ...e.value, report: toReport(e.value) } : e.value;
  }

  /** The VM record plus its running migration's step and progress, for `vm show`. */
  async decorate(vm: VmRecord): Promise<VmRecord & { migration?: Partial<MigrationRecord> }> {
    if (!vm.migrationId) return vm;
    const m = await this.c.store.get<MigrationRecord>(this.key(vm.migrationId));
    if (!m) return vm;
    const { id, phase, to, from, progress } = m.value;
    return { ...vm, migration: { id, phase, from, to, ...(progress ? { progress } : {}) } };
  }

  /** `decorate` plus what the VM's NIC offers and its guest negotiated (one VM: asks its node). */
  async decorateOne(vm: VmRecord): Promise<VmRecord & { migration?: Partial<MigrationRecord>; nic?: unknown }> {
    const out = await this.decorate(vm);
    if (vm.state !== VmState.Running || !vm.node) return out;
    try {
      const node = await this.c.node(vm.node);
      const nic = await this.c.agent(node).nic(vm.name);
      return { ...out, nic: { backend: node.capabilities?.nic?.backend ?? 'stream', ...nic } };
    } catch {
      return out;
    }
  }

  private async save(id: string, change: (r: MigrationRecord) => MigrationRecord): Promise<MigrationRecord> {
    return update<MigrationRecord>(this.c.store, this.key(id), (cur) => {
      if (!cur) throw errors.migrationNotFound(id);
      return change(cur);
    });
  }

  /** Resolves the target node; a node of another cluster is named and refused (R4). */
  private async resolveTarget(to: string): Promise<NodeRecord> {
    if (/^https?:\/\//.test(to)) {
      let health: { node: string; clusterId: string };
      try {
        const res = await fetch(new URL('/v1/health', to), { signal: AbortSignal.timeout(3000) });
        health = (await res.json()) as { node: string; clusterId: string };
      } catch {
        throw errors.invalid('to', `no Ferry node answers at ${to}`);
      }
      if (health.clusterId !== this.c.config.id || !this.c.isMember(health.node)) {
        throw new FerryError(
          ErrorCode.NotClusterMember,
          `node '${health.node}' at ${to} is not a member of this cluster (it belongs to cluster ${health.clusterId}): live migration only moves VMs between hosts of the same cluster`,
          { details: { node: health.node, clusterId: health.clusterId } },
        );
      }
      to = health.node;
    }
    validateName('node', to);
    if (!this.c.isMember(to)) {
      const known = await this.c.store.get<NodeRecord>(`nodes/${to}`);
      if (known) throw errors.notClusterMember(to);
      throw errors.nodeNotFound(to);
    }
    return this.c.node(to);
  }

  /**
   * Every reason this VM cannot move to this node now, all at once: state,
   * target, memory, a migration already running, and CPU compatibility (R9).
   */
  async preflight(vm: VmRecord, target: NodeRecord, mode: MigrationMode, withStorage?: string): Promise<FerryError[]> {
    const out: FerryError[] = [];
    if (withStorage === undefined && !this.c.onSharedVolume(vm.diskPath)) {
      out.push(errors.invalidState(
        `VM '${vm.name}''s disk ${vm.diskPath} is not on the shared volume: migrate it with --with-storage DIR to copy the disk along`,
        { vm: vm.name, disk: vm.diskPath },
      ));
    }
    if (vm.migrationId) {
      const m = await this.c.store.get<MigrationRecord>(this.key(vm.migrationId));
      if (m && !isFinal(m.value.status)) {
        out.push(errors.invalidState(`a migration of VM '${vm.name}' is already running (${m.value.id})`, { vm: vm.name, migration: m.value.id }));
      }
    }
    if (vm.state !== VmState.Running) {
      out.push(errors.invalidState(`VM '${vm.name}' is ${vm.state}: only a running VM can be ${mode}-migrated`, { vm: vm.name, state: vm.state }));
    }
    if (this.c.storageMoves.has(vm.name)) out.push(errors.invalidState(`VM '${vm.name}''s disk is being moved; migrate it when the move ends`, { vm: vm.name }));
    // A backup runs on overlay + frozen image on the shared volume and merges after a move; a disk copy along would take neither.
    const backup = this.c.backups.runningFor(vm.name);
    if (backup && withStorage !== undefined) out.push(errors.invalidState(`a backup of VM '${vm.name}' is running (${backup}); migrate it with --with-storage when the backup ends`, { vm: vm.name, backup }));
    if (target.name === vm.node) {
      out.push(errors.invalid('to', `VM '${vm.name}' already runs on node '${target.name}'`));
      return out;
    }
    if (target.state !== 'up') out.push(errors.invalidState(`node '${target.name}' is ${target.state}`, { node: target.name }));
    const source = vm.node ? await this.c.node(vm.node).catch(() => undefined) : undefined;
    if (source?.state === 'down') out.push(errors.invalidState(`node '${source.name}' (the VM's node) is down`, { node: source.name }));
    const load = (await this.c.loads()).find((l) => l.node.name === target.name)!;
    const free = (target.capabilities?.memoryTotalMiB ?? 0) - load.committedMiB;
    if (free < vm.memoryMiB) {
      out.push(errors.insufficientResources(
        `node '${target.name}' has ${free} MiB free, VM '${vm.name}' needs ${vm.memoryMiB} MiB`,
        { node: target.name, freeMiB: free, neededMiB: vm.memoryMiB },
      ));
    }
    if (vm.guestCpu && target.capabilities) {
      for (const b of cpuBlockers(vm.guestCpu, target.capabilities.cpu, target.name)) out.push(errors.invalidState(b, { node: target.name }));
    }
    const nicBlocker = await this.nicBlocker(vm, source, target);
    if (nicBlocker) out.push(nicBlocker);
    const noSwitch = switchBlocker(switchOf(vm), load);
    if (noSwitch) out.push(errors.invalidState(`${noSwitch}: VM '${vm.name}' would lose its network there`, { node: target.name }));
    // A live migration needs a network both nodes reach each other on (R6).
    if (mode === 'live' && source?.state !== 'down' && source && target.state !== 'down') {
      await this.c.networks.choose(source, target).catch((e: unknown) => out.push(toFerryError(e)));
    }
    return out;
  }

  /**
   * NIC offloads (R10): the target's backend must offer every offload the
   * guest negotiated, and a device running with the virtio-net header (a tap)
   * only loads where there is one (QEMU: "saved image requires vnet_hdr=on").
   */
  private async nicBlocker(vm: VmRecord, source: NodeRecord | undefined, target: NodeRecord): Promise<FerryError | undefined> {
    const to = target.capabilities?.nic;
    if (!to || !source || source.state === 'down' || vm.state !== VmState.Running) return undefined;
    const used = await this.c.agent(source).nic(vm.name).then((n) => n.negotiated, () => [] as string[]);
    const missing = used.filter((o) => !to.offloads.includes(o));
    const headerLost = source.capabilities?.nic?.vnetHeader === true && !to.vnetHeader;
    if (!missing.length && !headerLost) return undefined;
    const reasons = [
      ...(missing.length ? [`cannot offer NIC offloads the VM uses: ${missing.join(', ')}`] : []),
      ...(headerLost ? [`has no virtio-net header, which the VM's NIC runs with on '${source.name}' (${source.capabilities!.nic!.backend})`] : []),
    ];
    return errors.invalidState(`node '${target.name}' (NIC backend ${to.backend}) ${reasons.join(' and ')}`, { node: target.name, offloads: missing });
  }

  async request(vmName: string, req: MigrateRequest | undefined): Promise<MigrationRecord> {
    validateName('VM', vmName);
    if (!req?.to) throw errors.invalid('to', 'a migration needs a target node (--to NODE)');
    const asked = req.policy === undefined ? undefined : validatePolicy(req.policy);
    const mode = req.mode ?? 'live';
    if (mode !== 'live' && mode !== 'quick') throw errors.invalid('mode', `mode must be live or quick, got '${String(mode)}'`);
    const priority = req.priority ?? 'manual';
    if (!(priority in PRIORITY_RANK)) throw errors.invalid('priority', `priority must be drain, manual or rebalance, got '${String(priority)}'`);
    const vm = await this.c.vm(vmName);
    const policy = effectivePolicy(await this.c.defaultPolicy(), vm.policy, asked);
    // Explicit tuning fields (the API's older knobs) win over the policy's.
    const tuning = validateTuning(tuningFor(policy), req.tuning);
    const target = await this.resolveTarget(req.to);
    const storage = req.withStorage === undefined ? undefined : this.storageCopy(vm, mode, tuning, req.withStorage);
    const blockers = await this.preflight(vm, target, mode, req.withStorage);
    if (req.check) {
      return { check: true, vm: vmName, to: target.name, mode, ok: blockers.length === 0, blockers: blockers.map((b) => b.message) } as never;
    }
    if (req.plan) {
      if (blockers.length) return { plan: true, vm: vmName, to: target.name, mode, ok: false, blockers: blockers.map((b) => b.message), policy } as never;
      const source = await this.c.node(vm.node);
      const network = mode === 'live' ? await this.c.networks.choose(source, target) : undefined;
      const predicted = network ? await this.measureAndPredict(vm.name, source, target, network, policy) : undefined;
      return { plan: true, vm: vmName, from: vm.node, to: target.name, mode, ok: true, blockers: [], policy, network, predicted } as never;
    }
    if (blockers.length === 1) throw blockers[0]!;
    if (blockers.length > 1) {
      throw new FerryError(ErrorCode.InvalidState, blockers.map((b) => b.message).join('; '), { details: { blockers: blockers.map((b) => b.message) } });
    }
    const now = this.c.clock.nowMs();
    const record: MigrationRecord = {
      id: `m-${now.toString(36)}-${randomUUID().slice(0, 6)}`,
      vm: vmName, mode, from: vm.node, to: target.name,
      phase: 'queued', status: 'queued', requestedAtMs: now, priority, steps: [], tuning, policy,
      ...(storage ? { storage } : {}),
    };
    // Claim the VM with compare-and-set: two requests at once cannot both win.
    await this.c.updateVm(vmName, (cur) => {
      if (cur.migrationId && cur.migrationId !== record.id) {
        throw errors.invalidState(`a migration of VM '${vmName}' is already running (${cur.migrationId})`, { vm: vmName });
      }
      if (cur.state !== VmState.Running) throw errors.invalidState(`VM '${vmName}' is ${cur.state}`, { vm: vmName });
      return { ...cur, migrationId: record.id };
    });
    await this.c.store.put(this.key(record.id), record, { expectRevision: 0 });
    await this.c.event({ type: 'migration.queued', vm: vmName, migration: record.id, message: `${mode} migration of ${vmName} from ${vm.node} to ${target.name} queued (${priority})`, data: { priority } });
    this.measureWhileQueued(record);
    await this.schedule();
    return this.get(record.id);
  }

  /** Checks a shared-nothing request: where the disk goes, and that nothing else stands in the way. */
  private storageCopy(vm: VmRecord, mode: MigrationMode, tuning: TransferTuning, dir: unknown): NonNullable<MigrationRecord['storage']> {
    if (typeof dir !== 'string' || !path.isAbsolute(dir)) throw errors.invalid('withStorage', `--with-storage must be an absolute directory on the target node, got '${String(dir)}'`);
    if (mode !== 'live') throw errors.invalid('withStorage', '--with-storage copies the disk during a live migration; a quick migration needs the disk on the shared volume');
    if (tuning.postcopy) throw errors.invalid('withStorage', '--with-storage cannot be combined with post-copy: the disk copy must end before the target runs the VM');
    const targetDisk = path.join(path.resolve(dir), `${vm.name}.qcow2`);
    if (targetDisk === vm.diskPath) throw errors.invalid('withStorage', `VM '${vm.name}''s disk is already ${targetDisk}`);
    if (fs.existsSync(targetDisk)) throw errors.alreadyExists('disk image', targetDisk);
    return { sourceDisk: vm.diskPath, targetDisk, sizeBytes: vm.diskGiB * 1073741824 };
  }

  private scheduling: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;

  /** Starts queued migrations whose nodes have free slots (serialised: one decision at a time). */
  schedule(): Promise<void> {
    this.scheduling = this.scheduling
      .then(() => this.scheduleNow())
      .catch((e: unknown) => this.c.log(`schedule: ${String(e)}`));
    return this.scheduling;
  }

  /** Periodic scheduling, for slots freed by a settings change or another process. */
  startScheduler(everyMs = 1000): void {
    this.timer ??= setInterval(() => void this.schedule(), everyMs);
  }

  stopScheduler(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async scheduleNow(): Promise<void> {
    const { migrationsPerNode } = await this.c.settings();
    for (const m of startable(await this.list(), migrationsPerNode)) {
      const now = this.c.clock.nowMs();
      const started = await this.save(m.id, (cur) =>
        cur.status === 'queued' && !cur.cancelRequested ? { ...cur, status: 'running', phase: 'pending', startedAtMs: now } : cur,
      );
      if (started.status !== 'running') continue;
      await this.c.event({
        type: 'migration.started', vm: m.vm, migration: m.id, node: m.from,
        message: `${m.mode} migration of ${m.vm} ${m.from} → ${m.to} started after ${now - m.requestedAtMs} ms in the queue`,
        data: { from: m.from, to: m.to, queuedMs: now - m.requestedAtMs },
      });
      this.launch(m.id);
    }
  }

  private launch(id: string): void {
    const ac = new AbortController();
    this.running.set(id, ac);
    void this.run(id, ac.signal).finally(() => {
      this.running.delete(id);
      void this.schedule();
    });
  }

  /** Queued migrations with their place in the queue (1 = next). */
  async listWithQueue(): Promise<(MigrationRecord & { queuePosition?: number })[]> {
    const all = await this.list();
    const order = queueOrder(all).map((m) => m.id);
    return all.map((m) => (m.status === 'queued' ? { ...m, queuePosition: order.indexOf(m.id) + 1 } : m));
  }

  async cancel(id: string): Promise<MigrationRecord> {
    const r = await this.get(id);
    if (isFinal(r.status)) throw errors.invalidState(`migration ${id} already ended (${r.status})`, { migration: id });
    const saved = await this.save(id, (cur) => ({ ...cur, cancelRequested: true }));
    if (saved.status === 'queued') {
      // Nothing ran yet: leave the queue; the VM was never touched.
      await this.finish(id, 'cancelled', { error: 'cancelled by user while queued' });
      return this.get(id);
    }
    this.running.get(id)?.abort();
    return saved;
  }

  async cancelAndWait(id: string, timeoutMs = 30_000): Promise<MigrationRecord> {
    await this.cancel(id).catch(() => {});
    const deadline = this.c.clock.nowMs() + timeoutMs;
    for (;;) {
      const r = await this.get(id);
      if (isFinal(r.status) || this.c.clock.nowMs() > deadline) return r;
      await this.c.clock.sleep(POLL_MS);
    }
  }

  async cancelAll(): Promise<void> {
    // Queued ones first, so none starts while the running ones wind down.
    const open = (await this.list()).filter((m) => !isFinal(m.status));
    for (const m of open.filter((x) => x.status === 'queued')) await this.cancel(m.id).catch(() => {});
    for (const m of open.filter((x) => x.status !== 'queued')) await this.cancelAndWait(m.id);
  }

  // ---- the state machine ----------------------------------------------------

  private async enterStep(id: string, step: StepName): Promise<void> {
    const now = this.c.clock.nowMs();
    await this.save(id, (r) => {
      const steps = r.steps.map((s) => (s.endedAtMs === undefined ? { ...s, endedAtMs: now, ms: now - s.startedAtMs } : s));
      steps.push({ name: step, startedAtMs: now });
      return { ...r, phase: step, steps };
    });
    await this.c.event({ type: 'migration.step', migration: id, message: `migration ${id}: ${step}`, data: { step } });
  }

  private async run(id: string, signal: AbortSignal): Promise<void> {
    let r = await this.get(id);
    const vm = await this.c.vm(r.vm);
    let source: AgentClient | undefined;
    let target: AgentClient | undefined;
    let probeId: string | undefined;
    let targetCreated = false;
    let stateFile: string | undefined;
    const check = async () => {
      if (signal.aborted || (await this.get(id)).cancelRequested) throw new MigrationAborted();
    };
    try {
      // 1. connect: both agents answer and the VM runs on the source.
      await this.enterStep(id, 'connect');
      source = await this.c.agentFor(r.from);
      target = await this.c.agentFor(r.to);
      await Promise.all([source.health({ signal }), target.health({ signal })]);
      // A backup freezing or merging the disk right now finishes that first (a moment).
      await this.c.backups.quiesce(vm.name);
      // A replica sync in flight is cancelled; its changed blocks go with the next one, from the new node.
      await this.c.replicas.pauseFor(vm.name);
      const onSource = await source.get(vm.name, { signal });
      if (onSource.runState !== 'running') throw errors.invalidState(`VM '${vm.name}' is ${onSource.runState} on ${r.from}`);
      await check();

      // 2. config: the source's running configuration is what the target gets.
      await this.enterStep(id, 'config');
      const spec = await source.config(vm.name, { signal });
      // The NIC plugs into the VM's switch as the cluster knows it now (a scrub may have disconnected it).
      spec.switch = switchOf(vm);
      await check();

      // 3. create: an empty VM on the target, waiting for the stream.
      await this.enterStep(id, 'create');
      targetCreated = true;
      if (r.storage) spec.diskPath = r.storage.targetDisk;
      await target.start(spec, true, { signal, ...(r.storage ? { createDiskBytes: r.storage.sizeBytes } : {}) });
      if (r.mode === 'live') {
        // The best network both nodes reach each other on right now (R6).
        const network = await this.c.networks.choose(await this.c.node(r.from), await this.c.node(r.to), signal);
        r = await this.save(id, (cur) => ({ ...cur, network }));
        await this.c.event({
          type: 'migration.network', vm: vm.name, migration: id,
          message: `migration ${id} crosses network ${network.name} (${network.sourceAddress} → ${network.targetAddress})${network.skipped.length ? `; skipped ${network.skipped.map((s) => `${s.network}: ${s.reason}`).join('; ')}` : ''}`,
          data: { network },
        });
        const listen = await target.listenIncoming(vm.name, r.tuning, network.targetAddress, { signal });
        r = await this.save(id, (cur) => ({ ...cur, target: listen }));
        if (r.storage) {
          // Shared-nothing: the target's new disk is written over NBD on the same network.
          const nbd = await target.exportDisk(vm.name, network.targetAddress, { signal });
          r = await this.save(id, (cur) => ({ ...cur, storage: { ...cur.storage!, nbd } }));
        }
      } else {
        fs.mkdirSync(this.c.layout.states, { recursive: true });
        stateFile = path.join(this.c.layout.states, `${vm.name}-${id}.state`);
        r = await this.save(id, (cur) => ({ ...cur, stateFile }));
      }
      await check();

      // 4. memory: live: QEMU to QEMU over the target's migration address.
      // quick (R7): pause, save the state to the shared volume, restore it on the target.
      await this.enterStep(id, 'memory');
      const sw = switchOf(vm);
      probeId = sw ? `mig-${id}` : undefined;
      if (probeId) await this.c.switch.startProbe(probeId, vm.ip.split('/')[0]!, vm.mac, 1, sw).catch(() => (probeId = undefined));
      if (r.mode === 'live' && r.network) {
        // Pre-flight prediction: measure, predict, pick the strategy. A failed measurement does not stop the move.
        try {
          const early = this.early.get(id);
          this.early.delete(id);
          const predicted = await this.measureAndPredict(vm.name, await this.c.node(r.from), await this.c.node(r.to), r.network, r.policy ?? effectivePolicy(), early);
          r = await this.save(id, (cur) => ({ ...cur, predicted }));
          await this.c.event({
            type: 'migration.predicted', vm: vm.name, migration: id,
            message: `migration ${id}: ${predicted.strategy}, predicted ${predicted.totalMs} ms total, ${predicted.rounds} rounds, ${predicted.downtimeMs} ms downtime (${predicted.reason})`,
            data: { predicted },
          });
        } catch (e) {
          r = await this.save(id, (cur) => ({ ...cur, warnings: [...(cur.warnings ?? []), `no prediction: ${toFerryError(e).message}`] }));
        }
        await check();
      }
      if (r.storage?.nbd) {
        // The disk first: mirrored until in sync; from then on every guest write lands on both disks.
        const copy = await source.mirrorDisk(vm.name, r.storage.nbd, { signal });
        r = await this.save(id, (cur) => ({ ...cur, storage: { ...cur.storage!, syncedAfterMs: copy.ms, copiedBytes: copy.bytes } }));
        await this.c.event({ type: 'migration.disk-synced', vm: vm.name, migration: id, message: `migration ${id}: disk copied to ${r.to} (${copy.bytes} bytes in ${copy.ms} ms), now mirrored`, data: { bytes: copy.bytes } });
        await check();
      }
      if (r.mode === 'quick') {
        await source.pause(vm.name);
        const pausedAt = this.c.clock.nowMs();
        r = await this.save(id, (cur) => ({ ...cur, pausedAtMs: pausedAt }));
        await source.startMigration(vm.name, { file: stateFile! }, r.tuning, { signal });
      } else {
        // The prediction picks auto-converge's starting throttle (when the policy has auto-converge at all).
        const p = r.predicted;
        const throttled = p?.throttleInitialPercent && r.tuning.autoConverge
          ? { ...r.tuning, throttleInitialPercent: p.throttleInitialPercent, throttleIncrementPercent: p.throttleIncrementPercent }
          : r.tuning;
        // Shared-nothing: the source stops before the device state so the disk copy can end first.
        const tuning = r.storage ? { ...throttled, pauseBeforeSwitchover: true } : throttled;
        await source.startMigration(vm.name, r.target!, tuning, { signal });
      }
      const final = await this.followTransfer(id, vm.name, source, target, signal, r.storage ? () => this.endDiskCopy(id, vm.name, source!, target!) : undefined);
      if (final.status !== 'completed') {
        throw new FerryError(ErrorCode.MigrationFailed, `QEMU reported the transfer ${final.status}${final.error ? `: ${final.error}` : ''}`);
      }
      if (r.mode === 'quick') await target.restoreFrom(vm.name, stateFile!, r.tuning, { signal });
      r = await this.save(id, (cur) => ({
        ...cur,
        downtimeMs: final.downtimeMs ?? 0,
        transferredBytes: final.transferredBytes,
        rounds: final.rounds,
        ...(final.totalTimeMs !== undefined ? { transferMs: final.totalTimeMs } : {}),
      }));

      // 5. disks: the target took over the images at switchover (QEMU
      // inactivates them on the source and activates them on the target once
      // the device state is in); wait until the target says it got everything.
      await this.enterStep(id, 'disks');
      await waitTransferCompleted(target, vm.name, this.c.clock, { label: "the target's incoming migration", timeoutMs: 30_000, stepMs: 20, signal });

      // 6. resume: the target runs the guest.
      await this.enterStep(id, 'resume');
      await this.waitTargetRunning(target, vm.name, signal);
      // Handover: the VM now lives on the target.
      const moved = this.c.clock.nowMs();
      if (r.pausedAtMs !== undefined) r = await this.save(id, (cur) => ({ ...cur, pausedMs: moved - cur.pausedAtMs! }));
      const disk = r.storage ? { diskPath: r.storage.targetDisk } : {};
      await this.c.updateVm(vm.name, (cur) => ({ ...cur, ...disk, node: r.to, state: VmState.Running, stateSinceMs: moved }));
      r = await this.save(id, (cur) => ({ ...cur, ownerMovedAtMs: moved }));
      await source.kill(vm.name).catch((e: unknown) => this.addCleanupError(id, `source QEMU: ${toFerryError(e).message}`));
      // Shared-nothing: the VM runs on its copy; the source's disk goes.
      if (r.storage) fs.rmSync(r.storage.sourceDisk, { force: true });

      // 7. network: the switch learnt the MAC on the target's port.
      await this.enterStep(id, 'network');
      if (!sw) {
        await this.save(id, (cur) => ({ ...cur, warnings: [...(cur.warnings ?? []), 'the VM is disconnected from every virtual switch: no MAC to move'] }));
      } else if (!(await this.waitMacOn(vm.mac, r.to, r.requestedAtMs, MAC_MOVE_TIMEOUT_MS))) {
        await target.announce(vm.name).catch(() => {});
        if (!(await this.waitMacOn(vm.mac, r.to, r.requestedAtMs, MAC_MOVE_TIMEOUT_MS))) {
          await this.save(id, (cur) => ({ ...cur, warnings: [...(cur.warnings ?? []), `the switch did not see ${vm.mac} on ${r.to} after the announce`] }));
        }
      }
      const blackout = probeId ? await this.c.switch.stopProbe(probeId).catch(() => undefined) : undefined;
      probeId = undefined;
      await this.finish(id, 'completed', { guestBlackoutMs: blackout?.maxGapMs });
    } catch (e) {
      const cancelled = e instanceof MigrationAborted || signal.aborted || (await this.get(id)).cancelRequested === true;
      const err = cancelled ? undefined : toFerryError(e);
      const after = await this.get(id);
      if (after.ownerMovedAtMs !== undefined) {
        // Past the handover nothing rolls back: the VM runs on the target.
        await this.finish(id, 'completed', { warnings: [`after handover: ${err?.message ?? 'cancel came too late'}`] });
      } else {
        await this.save(id, (cur) => ({ ...cur, phase: 'rolling-back' }));
        // Ends a disk mirror if one runs (nothing to do before it started or after it ended).
        if (after.storage?.nbd && source) await source.endDiskMirror(vm.name, false).catch((e: unknown) => this.addCleanupError(id, `disk copy on source: ${toFerryError(e).message}`));
        await this.rollback(id, vm.name, source, target, targetCreated);
        // The half-made copy goes; the VM runs on its own disk.
        if (after.storage && targetCreated) fs.rmSync(after.storage.targetDisk, { force: true });
        await this.finish(id, cancelled ? 'cancelled' : 'failed', cancelled ? { error: 'cancelled by user' } : { error: err!.message });
      }
    } finally {
      if (probeId) await this.c.switch.stopProbe(probeId).catch(() => {});
      if (stateFile) fs.rmSync(stateFile, { force: true });
    }
  }

  /**
   * Measures what the prediction needs: the guest's dirty rate and non-zero
   * memory (its QEMU) and the link's throughput (the source sending to the
   * target's beacon on the chosen network), at the same time.
   */
  private async measureAndPredict(vm: string, source: NodeRecord, target: NodeRecord, network: MigrationNetwork, policy: MigrationPolicy, early?: Promise<GuestMeasurement>): Promise<Prediction> {
    const port = target.networks?.[network.name]?.port;
    if (!port) throw errors.invalidState(`node '${target.name}' does not answer on network ${network.name}`);
    const agent = this.c.agent(source);
    const started = this.c.clock.nowMs();
    const linkKey = `${network.name}|${source.name}`;
    const known = this.linkRates.get(linkKey);
    const fresh = known && started - known.atMs < LINK_RATE_TTL_MS ? known.bytesPerSec : undefined;
    // The guest and the link at the same time, over the same window: the guest is measured
    // while a stream loads the host the way the migration will. A guest measured while its
    // migration waited in the queue, and a link measured in the last minute, are not measured again.
    const [guest, linkBytesPerSec] = await Promise.all([
      early ?? agent.measure(vm, MEASURE_MS),
      fresh ?? agent.throughput(network.sourceAddress, network.targetAddress, port, MEASURE_MS).then((l) => l.bytesPerSec),
    ]);
    if (fresh === undefined) this.linkRates.set(linkKey, { bytesPerSec: linkBytesPerSec, atMs: this.c.clock.nowMs() });
    return predict({
      ramBytes: guest.ramBytes, nonZeroBytes: guest.nonZeroBytes, dirtyRateBytesPerSec: guest.dirtyRateBytesPerSec,
      linkBytesPerSec, measureMs: this.c.clock.nowMs() - started,
    }, policy);
  }

  /** Link rates measured recently, per network and source node. */
  private readonly linkRates = new Map<string, { bytesPerSec: number; atMs: number }>();
  /** Guest measurements started while a live migration waited in the queue, by migration id. */
  private readonly early = new Map<string, Promise<GuestMeasurement>>();

  /** Measures the guest of a queued live migration while it waits for its slots. */
  private measureWhileQueued(record: MigrationRecord): void {
    if (record.mode !== 'live') return;
    const p = this.c.node(record.from).then((n) => this.c.agent(n).measure(record.vm, MEASURE_MS));
    p.catch(() => {});
    this.early.set(record.id, p);
    setTimeout(() => this.early.delete(record.id), EARLY_TTL_MS).unref();
  }

  /** Polls the source's transfer until it ends; cancels it on abort or when the target goes away. */
  /**
   * Shared-nothing switchover, with the source paused before the device
   * state: end the mirror (the target's disk now holds every block), drop
   * the target's export, and let QEMU send the device state.
   */
  private async endDiskCopy(id: string, vm: string, source: AgentClient, target: AgentClient): Promise<void> {
    const { bytes } = await source.endDiskMirror(vm, true);
    await target.unexportDisk(vm);
    await this.save(id, (cur) => ({ ...cur, storage: { ...cur.storage!, copiedBytes: bytes } }));
    await source.continueMigration(vm);
  }

  private async followTransfer(id: string, vm: string, source: AgentClient, target: AgentClient, signal: AbortSignal, atSwitchover?: () => Promise<void>): Promise<TransferProgress> {
    let lastSave = 0;
    let targetFailures = 0;
    const startedAt = this.c.clock.nowMs();
    const rec = await this.get(id);
    const policy = rec.policy ?? effectivePolicy();
    const ramBytes = (await this.c.vm(vm)).memoryMiB * 1048576;
    let lowest = Infinity;
    let lowestAt = 0;
    let maxThrottle = 0;
    let postcopy = false;
    for (;;) {
      const p = await source.migration(vm);
      const now = this.c.clock.nowMs();
      if (p.throttlePercent > maxThrottle) {
        maxThrottle = p.throttlePercent;
        await this.save(id, (cur) => ({ ...cur, maxThrottlePercent: maxThrottle }));
      }
      if (isTransferFinal(p.status)) {
        await this.saveProgress(id, p, now, now - startedAt);
        return p;
      }
      if (now - lastSave >= SAVE_PROGRESS_EVERY_MS) {
        await this.saveProgress(id, p, now, now - startedAt);
        lastSave = now;
      }
      if (p.status === 'pre-switchover') {
        if (!atSwitchover) throw new FerryError(ErrorCode.MigrationFailed, 'QEMU paused before switchover, which this migration did not ask for');
        await atSwitchover();
        atSwitchover = undefined;
        await this.c.clock.sleep(POLL_MS);
        continue;
      }
      if (p.status === 'postcopy') postcopy = true;
      // Policy: is pre-copy getting anywhere? Only rounds after the first count (round 1
      // always shrinks), and only a drop of a tenth counts as progress, not noise around a plateau.
      if (p.rounds >= 2 && p.remainingBytes < lowest * PROGRESS_FRACTION) {
        lowest = p.remainingBytes;
        lowestAt = now - startedAt;
      } else if (p.rounds < 2) {
        lowestAt = now - startedAt;
      }
      const decision = escalate(policy, {
        elapsedMs: now - startedAt, guestRamBytes: ramBytes, remainingBytes: p.remainingBytes, lowestRemaining: lowest, lowestAtMs: lowestAt,
        rounds: p.rounds, postcopyStarted: postcopy, ...(rec.predicted?.postcopyAfterRound ? { postcopyAfterRound: rec.predicted.postcopyAfterRound } : {}),
      });
      if (decision.action === 'postcopy' && p.status === 'active') {
        await source.startPostcopy(vm);
        postcopy = true;
        await this.save(id, (cur) => ({ ...cur, postcopyStartedAtMs: now, escalation: decision.reason }));
        await this.c.event({ type: 'migration.postcopy', vm, migration: id, message: `migration ${id}: post-copy started: ${decision.reason}`, data: { afterMs: now - startedAt } });
      } else if (decision.action === 'abort') {
        await source.cancelMigration(vm).catch(() => {});
        await this.save(id, (cur) => ({ ...cur, escalation: decision.reason }));
        throw new FerryError(ErrorCode.MigrationFailed, `${decision.reason}; aborted, the VM keeps running on ${rec.from}`);
      }
      // In post-copy the guest already runs on the target: nothing can be cancelled any more.
      const cancelRequested = !postcopy && (signal.aborted || (await this.get(id)).cancelRequested === true);
      // The target's agent must stay reachable: if it is gone, nobody could
      // confirm the target runs, so stop the transfer while the source still can.
      const targetAlive = await target.health().then(() => true, () => false);
      targetFailures = targetAlive ? 0 : targetFailures + 1;
      if (cancelRequested || (targetFailures >= 2 && !postcopy)) {
        await source.cancelMigration(vm).catch(() => {});
        if (cancelRequested) throw new MigrationAborted();
        throw errors.agentUnreachable(target.node);
      }
      await this.c.clock.sleep(POLL_MS);
    }
  }

  private async saveProgress(id: string, p: TransferProgress, now: number, elapsedMs: number): Promise<void> {
    const progress = { ...p, sampledAtMs: now } as MigrationRecord['progress'] & object;
    // QEMU's throughput figure is per iteration and reads 0 until the first
    // one ends; until then the average so far is the better estimate.
    const rate = p.throughputBytesPerSec > 0 ? p.throughputBytesPerSec : elapsedMs > 0 ? (p.transferredBytes * 1000) / elapsedMs : 0;
    if (rate > 0) progress.estimatedRemainingMs = Math.round((p.remainingBytes / rate) * 1000);
    await this.save(id, (cur) => ({ ...cur, progress }));
  }

  private async waitTargetRunning(target: AgentClient, vm: string, signal: AbortSignal, timeoutMs = 10_000): Promise<void> {
    const deadline = this.c.clock.nowMs() + timeoutMs;
    for (;;) {
      const i = await target.get(vm, { signal });
      if (i.runState === 'running') return;
      if (i.runState === 'paused' || i.runState === 'postmigrate') {
        await target.resume(vm, { signal });
        continue;
      }
      if (this.c.clock.nowMs() > deadline) throw errors.timeout('waiting for the target to run the VM', timeoutMs);
      await this.c.clock.sleep(20);
    }
  }

  private async waitMacOn(mac: string, node: string, sinceMs: number, timeoutMs: number): Promise<boolean> {
    const deadline = this.c.clock.nowMs() + timeoutMs;
    for (;;) {
      const moves = await this.c.switch.moves(mac, sinceMs).catch(() => []);
      if (moves.some((m) => m.toNode === node)) return true;
      const table = await this.c.switch.macs().catch(() => []);
      const moved = table.find((e) => e.mac === mac);
      if (moved?.node === node && moved.lastSeenMs >= sinceMs) return true;
      if (this.c.clock.nowMs() > deadline) return false;
      await this.c.clock.sleep(20);
    }
  }

  /** Leaves the VM running on the source and nothing on the target. */
  private async rollback(id: string, vm: string, source: AgentClient | undefined, target: AgentClient | undefined, targetCreated: boolean): Promise<void> {
    if (source) {
      try {
        const p = await source.migration(vm);
        if (!isTransferFinal(p.status) && p.status !== 'none') {
          await source.cancelMigration(vm);
          await this.waitSourceSettled(source, vm);
        }
      } catch (e) {
        await this.addCleanupError(id, `cancel on source: ${toFerryError(e).message}`);
      }
      try {
        const i = await source.get(vm);
        if (i.runState !== 'running') await source.resume(vm);
      } catch (e) {
        await this.addCleanupError(id, `resume on source: ${toFerryError(e).message}`);
      }
    }
    if (target && targetCreated) {
      try {
        await target.kill(vm);
      } catch (e) {
        const err = toFerryError(e);
        // A target QEMU whose incoming stream broke exits by itself; an
        // unreachable agent's leftover is removed when the agent is back (reconcile).
        await this.addCleanupError(id, `remove target VM: ${err.message}`);
      }
    }
  }

  private async waitSourceSettled(source: AgentClient, vm: string): Promise<void> {
    const deadline = this.c.clock.nowMs() + 10_000;
    while (this.c.clock.nowMs() < deadline) {
      const p = await source.migration(vm);
      if (isTransferFinal(p.status) || p.status === 'none') return;
      await this.c.clock.sleep(50);
    }
  }

  private async addCleanupError(id: string, message: string): Promise<void> {
    await this.save(id, (cur) => ({ ...cur, cleanupErrors: [...(cur.cleanupErrors ?? []), message] }));
  }

  private async finish(id: string, status: Exclude<MigrationStatus, 'running' | 'queued'>, extra: Partial<MigrationRecord> = {}): Promise<void> {
    const now = this.c.clock.nowMs();
    const rec = await this.save(id, (cur) => {
      const steps = cur.steps.map((s) => (s.endedAtMs === undefined ? { ...s, endedAtMs: now, ms: now - s.startedAtMs } : s));
      // totalMs is the move itself; time spent waiting for a slot is queuedMs.
      const startedAt = cur.startedAtMs ?? now;
      const next: MigrationRecord = {
        ...cur, ...extra, steps, status, phase: status as MigrationPhase, finishedAtMs: now,
        totalMs: now - startedAt, queuedMs: startedAt - cur.requestedAtMs,
      };
      if (extra.warnings) next.warnings = [...(cur.warnings ?? []), ...extra.warnings];
      return next;
    });
    await this.c.updateVm(rec.vm, (vm) => {
      const next = { ...vm };
      if (next.migrationId === id) delete next.migrationId;
      return next;
    }).catch(() => {});
    await this.c.event({
      type: `migration.${status}`, vm: rec.vm, migration: id,
      message: `${rec.mode} migration of ${rec.vm} ${rec.from} → ${rec.to} ${status}${rec.error ? `: ${rec.error}` : ''}`,
      data: { report: toReport(rec) },
    });
  }

  // ---- restart recovery -----------------------------------------------------

  /**
   * After a controller restart: every migration still marked running is
   * either completed (the target runs the VM and the source finished) or
   * rolled back. Call once agents have had time to report.
   */
  async recover(): Promise<void> {
    for (const r of await this.list()) {
      if (isFinal(r.status) || r.status === 'queued' || this.running.has(r.id)) continue;
      this.c.log(`recovering migration ${r.id} (${r.vm}, phase ${r.phase})`);
      let source: AgentClient | undefined;
      let target: AgentClient | undefined;
      try {
        source = await this.c.agentFor(r.from);
      } catch { /* node unknown or down */ }
      try {
        target = await this.c.agentFor(r.to);
      } catch { /* node unknown or down */ }
      const onTarget = await target?.get(r.vm).catch(() => undefined);
      const sourceDone = await source?.migration(r.vm).then((p) => p.status === 'completed', () => false);
      const targetDone = await target?.migration(r.vm).then((p) => p.status === 'completed', () => false);
      if (r.ownerMovedAtMs !== undefined || (onTarget?.runState === 'running' && targetDone && (sourceDone || !source))) {
        const moved = this.c.clock.nowMs();
        await this.c.updateVm(r.vm, (cur) => ({ ...cur, node: r.to, state: VmState.Running, stateSinceMs: moved }));
        await source?.kill(r.vm).catch(() => {});
        await this.finish(r.id, 'completed', { ownerMovedAtMs: moved, warnings: ['completed by a restarted controller'] });
      } else {
        await this.rollback(r.id, r.vm, source, target, true);
        await this.finish(r.id, 'failed', { error: 'the controller restarted during the migration; rolled back to the source' });
      }
    }
    await this.schedule();
  }
}

/**
 * The phase tables of a live and a quick migration (R3's seven steps), run
 * by the phase runner (controller/core/phase-runner.ts):
 *
 *   connect ─► config ─► create ─► memory ─► disks ─► resume ─► network
 *                          │undo:     │undo:                │commit
 *                          │kill the  │cancel the transfer, │(handover: the VM
 *                          │target    │resume the source,   │ lives on the target)
 *                          │          │end the disk mirror  │
 *
 * Live: QEMU to QEMU over the chosen cluster network (the target listens on
 * its address there). Quick (R7): pause, save the state to the shared
 * volume, restore it on the target. Before the handover any failure undoes
 * in reverse and the VM runs on its source as before; after it, nothing is
 * undone: the VM lives on the target and trouble is a warning.
 */
import path from 'node:path';
import type { Clock } from '../../domain/clock.js';
import { ErrorCode, FerryError, errors, toFerryError } from '../../domain/errors.js';
import type { StateLayout } from '../../domain/layout.js';
import type { MigrationNetwork, MigrationRecord, StepName } from '../../domain/migration.js';
import { effectivePolicy, escalate } from '../../domain/policy.js';
import { RunState, VmState } from '../../domain/records.js';
import { switchOf } from '../../domain/switches.js';
import { type TransferProgress, isTransferFinal } from '../../domain/transfer.js';
import type { EventSink } from '../../ports/events.js';
import type { NodeDirectory } from '../../ports/node-directory.js';
import type { NodeAgent } from '../../ports/node-agent.js';
import type { SwitchControl } from '../../ports/switch-control.js';
import type { VmRepository } from '../../ports/vm-repository.js';
import type { Volume } from '../../ports/volume.js';
import type { NodeRecord } from '../../domain/records.js';
import type { Phase, PhaseContext, UndoTable } from '../core/phase-runner.js';
import { waitTransferCompleted } from '../core/transfers.js';
import type { Measurements } from './measure.js';

const POLL_MS = 100;
/** Remaining bytes must fall below this share of their lowest so far to count as progress. */
const PROGRESS_FRACTION = 0.9;
const SAVE_PROGRESS_EVERY_MS = 250;
/** How long the network step waits for the switch to see the MAC on the target. */
const MAC_MOVE_TIMEOUT_MS = 3_000;

export interface MigrationRunDeps {
  vms: VmRepository;
  nodes: NodeDirectory;
  events: EventSink;
  clock: Clock;
  switch: SwitchControl;
  volume: Volume;
  layout: StateLayout;
  networks: { choose(source: NodeRecord, target: NodeRecord, signal?: AbortSignal): Promise<MigrationNetwork> };
  measurements: Measurements;
  load(id: string): Promise<MigrationRecord>;
  save(id: string, change: (r: MigrationRecord) => MigrationRecord): Promise<MigrationRecord>;
}

/** What a failed or cancelled migration's steps undo, by name (saved on the record with their arguments). */
export function migrationUndo(d: MigrationRunDeps): UndoTable {
  const agent = (node: string) => d.nodes.agent(node);
  return {
    /** Leaves the VM running on the source: cancel a transfer in flight, resume a paused guest. */
    'settle-source': async ({ node, vm }: { node: string; vm: string }) => {
      const source = await agent(node);
      const p = await source.transfer(vm);
      if (!isTransferFinal(p.status) && p.status !== 'none') {
        await source.cancelTransfer(vm);
        const deadline = d.clock.nowMs() + 10_000;
        while (d.clock.nowMs() < deadline) {
          const s = await source.transfer(vm);
          if (isTransferFinal(s.status) || s.status === 'none') break;
          await d.clock.sleep(50);
        }
      }
      const i = await source.get(vm);
      if (i.runState !== RunState.Running) await source.resume(vm);
    },
    'kill-target': async ({ node, vm }: { node: string; vm: string }) => {
      // A target QEMU whose incoming stream broke exits by itself; an
      // unreachable agent's leftover is removed when the agent is back (reconcile).
      await (await agent(node)).kill(vm);
    },
    'end-mirror': async ({ node, vm }: { node: string; vm: string }) => {
      await (await agent(node)).endMirror(vm, false);
    },
    'remove-file': async ({ file }: { file: string }) => {
      d.volume.remove(file);
    },
    'stop-probe': async ({ id }: { id: string }) => {
      await d.switch.stopProbe(id);
    },
  };
}

/** The phases of one migration, over its record `id`. */
export function migrationPhases(d: MigrationRunDeps, id: string, mode: 'live' | 'quick'): Phase[] {
  const rec = () => d.load(id);
  const save = (change: (r: MigrationRecord) => MigrationRecord) => d.save(id, change);
  const agents = async (r: MigrationRecord) => ({ source: await d.nodes.agent(r.from), target: await d.nodes.agent(r.to) });
  const warn = (w: string) => save((cur) => ({ ...cur, warnings: [...(cur.warnings ?? []), w] }));
  const cancelled = async (ctx: PhaseContext) => {
    if (ctx.signal.aborted || (await rec()).cancelRequested) throw errors.aborted(`migration ${id}`);
  };

  const phase = (name: StepName, run: (ctx: PhaseContext) => Promise<void>, onRestart?: Phase['onRestart'], afterCommit?: Phase['afterCommit']): Phase => ({
    name,
    run,
    ...(onRestart ? { onRestart } : {}),
    ...(afterCommit ? { afterCommit } : {}),
  });

  return [
    // 1. connect: both agents answer and the VM runs on the source.
    phase('connect', async (ctx) => {
      const r = await rec();
      const { source, target } = await agents(r);
      await Promise.all([source.health({ signal: ctx.signal }), target.health({ signal: ctx.signal })]);
      const onSource = await source.get(r.vm, { signal: ctx.signal });
      if (onSource.runState !== RunState.Running) throw errors.invalidState(`VM '${r.vm}' is ${onSource.runState} on ${r.from}`);
      await cancelled(ctx);
    }),

    // 2. config: the source's running configuration is what the target gets.
    phase('config', async (ctx) => {
      const r = await rec();
      const { source } = await agents(r);
      await source.config(r.vm, { signal: ctx.signal });
      await cancelled(ctx);
    }),

    // 3. create: an empty VM on the target, waiting for the state.
    phase('create', async (ctx) => {
      let r = await rec();
      const vm = await d.vms.get(r.vm);
      const { source, target } = await agents(r);
      const spec = await source.config(r.vm, { signal: ctx.signal });
      // The NIC plugs into the VM's switch as the cluster knows it now (a scrub may have disconnected it).
      spec.switch = switchOf(vm);
      if (r.storage) {
        spec.diskPath = r.storage.targetDisk;
        // The half-made copy goes if the move does not complete.
        await ctx.onUndo({ action: 'remove-file', args: { file: r.storage.targetDisk } });
      }
      await ctx.onUndo({ action: 'kill-target', args: { node: r.to, vm: r.vm } });
      await target.start(spec, { incoming: true, signal: ctx.signal, ...(r.storage ? { createDiskBytes: r.storage.sizeBytes } : {}) });
      if (mode === 'live') {
        // The best network both nodes reach each other on right now (R6).
        const network = await d.networks.choose(await d.nodes.get(r.from), await d.nodes.get(r.to), ctx.signal);
        r = await save((cur) => ({ ...cur, network }));
        await d.events.emit({
          type: 'migration.network',
          vm: r.vm,
          migration: id,
          message: `migration ${id} crosses network ${network.name} (${network.sourceAddress} → ${network.targetAddress})${
            network.skipped.length ? `; skipped ${network.skipped.map((s) => `${s.network}: ${s.reason}`).join('; ')}` : ''
          }`,
          data: { network },
        });
        const listen = await target.listenIncoming(r.vm, r.tuning, network.targetAddress, { signal: ctx.signal });
        r = await save((cur) => ({ ...cur, target: listen }));
        if (r.storage) {
          // Shared-nothing: the target's new disk is written over NBD on the same network.
          const nbd = await target.exportDisk(r.vm, network.targetAddress, { signal: ctx.signal });
          await save((cur) => ({ ...cur, storage: { ...cur.storage!, nbd } }));
        }
      } else {
        const stateFile = path.join(d.layout.states, `${r.vm}-${id}.state`);
        d.volume.ensureWritableDir(d.layout.states, { recursive: true });
        await ctx.always({ action: 'remove-file', args: { file: stateFile } });
        await save((cur) => ({ ...cur, stateFile }));
      }
      await cancelled(ctx);
    }),

    // 4. memory: live: QEMU to QEMU over the target's migration address;
    // quick (R7): pause, save the state to the shared volume, restore it on the target.
    phase(
      'memory',
      async (ctx) => {
        let r = await rec();
        const vm = await d.vms.get(r.vm);
        const { source, target } = await agents(r);
        await ctx.onUndo({ action: 'settle-source', args: { node: r.from, vm: r.vm } });
        const sw = switchOf(vm);
        // A VM on a host bridge is not on the userspace switch: its probe would only measure silence.
        if (sw && !(await onHostBridge(d, r.from))) {
          const probeId = `mig-${id}`;
          const started = await d.switch.startProbe(probeId, vm.ip.split('/')[0]!, vm.mac, 1, sw).then(
            () => true,
            () => false,
          );
          if (started) await ctx.always({ action: 'stop-probe', args: { id: probeId } });
        }
        if (mode === 'live' && r.network) {
          // Pre-flight prediction: measure, predict, pick the strategy. A failed measurement does not stop the move.
          try {
            const predicted = await d.measurements.predictFor(r, await d.nodes.get(r.from), await d.nodes.get(r.to), r.network, r.policy ?? effectivePolicy());
            r = await save((cur) => ({ ...cur, predicted }));
            await d.events.emit({
              type: 'migration.predicted',
              vm: r.vm,
              migration: id,
              message: `migration ${id}: ${predicted.strategy}, predicted ${predicted.totalMs} ms total, ${predicted.rounds} rounds, ${predicted.downtimeMs} ms downtime (${predicted.reason})`,
              data: { predicted },
            });
          } catch (e) {
            r = await save((cur) => ({ ...cur, warnings: [...(cur.warnings ?? []), `no prediction: ${toFerryError(e).message}`] }));
          }
          await cancelled(ctx);
        }
        if (r.storage?.nbd) {
          // The disk first: mirrored until in sync; from then on every guest write lands on both disks.
          await ctx.onUndo({ action: 'end-mirror', args: { node: r.from, vm: r.vm } });
          const copy = await source.mirrorDisk(r.vm, r.storage.nbd, { signal: ctx.signal });
          r = await save((cur) => ({ ...cur, storage: { ...cur.storage!, syncedAfterMs: copy.ms, copiedBytes: copy.bytes } }));
          await d.events.emit({
            type: 'migration.disk-synced',
            vm: r.vm,
            migration: id,
            message: `migration ${id}: disk copied to ${r.to} (${copy.bytes} bytes in ${copy.ms} ms), now mirrored`,
            data: { bytes: copy.bytes },
          });
          await cancelled(ctx);
        }
        if (mode === 'quick') {
          await source.pause(r.vm);
          const pausedAt = d.clock.nowMs();
          r = await save((cur) => ({ ...cur, pausedAtMs: pausedAt }));
          await source.sendState(r.vm, { file: r.stateFile! }, r.tuning, { signal: ctx.signal });
        } else {
          // The prediction picks auto-converge's starting throttle (when the policy has auto-converge at all).
          const p = r.predicted;
          const throttled =
            p?.throttleInitialPercent && r.tuning.autoConverge
              ? { ...r.tuning, throttleInitialPercent: p.throttleInitialPercent, throttleIncrementPercent: p.throttleIncrementPercent }
              : r.tuning;
          // Shared-nothing: the source stops before the device state so the disk copy can end first.
          const tuning = r.storage ? { ...throttled, pauseBeforeSwitchover: true } : throttled;
          await source.sendState(r.vm, r.target!, tuning, { signal: ctx.signal });
        }
        const final = await followTransfer(d, id, source, target, ctx.signal, r.storage ? () => endDiskCopy(d, id, r.vm, source, target) : undefined);
        if (final.status !== 'completed') {
          throw new FerryError(ErrorCode.MigrationFailed, `QEMU reported the transfer ${final.status}${final.error ? `: ${final.error}` : ''}`);
        }
        if (mode === 'quick') await target.restoreFrom(r.vm, r.stateFile!, r.tuning, { signal: ctx.signal });
        await save((cur) => ({
          ...cur,
          downtimeMs: final.downtimeMs ?? 0,
          transferredBytes: final.transferredBytes,
          rounds: final.rounds,
          ...(final.totalTimeMs !== undefined ? { transferMs: final.totalTimeMs } : {}),
        }));
      },
      async () => {
        // The transfer may have completed while no controller watched: then go on with the disks.
        // (A source's status is its last transfer's, so the target must have the state too.)
        const r = await rec();
        if (mode !== 'live') return 'undo';
        const { source, target } = await agents(r);
        const [sent, got, onTarget] = await Promise.all([source.transfer(r.vm), target.transfer(r.vm), target.get(r.vm)]);
        return sent.status === 'completed' && got.status === 'completed' && onTarget.runState !== RunState.Incoming ? 'next' : 'undo';
      },
    ),

    // 5. disks: the target took over the images at switchover (QEMU
    // inactivates them on the source and activates them on the target once
    // the device state is in); wait until the target says it got everything.
    phase(
      'disks',
      async (ctx) => {
        const r = await rec();
        const { target } = await agents(r);
        await waitTransferCompleted(target, r.vm, d.clock, { label: "the target's incoming migration", timeoutMs: 30_000, stepMs: 20, signal: ctx.signal });
      },
      'rerun',
    ),

    // 6. resume: the target runs the guest, then the handover: the VM lives on the target.
    phase(
      'resume',
      async (ctx) => {
        let r = await rec();
        const { source, target } = await agents(r);
        if (r.committedAtMs === undefined) {
          await waitTargetRunning(d, target, r.vm, ctx.signal);
          const moved = d.clock.nowMs();
          if (r.pausedAtMs !== undefined) r = await save((cur) => ({ ...cur, pausedMs: moved - cur.pausedAtMs! }));
          const disk = r.storage ? { diskPath: r.storage.targetDisk } : {};
          // The handover itself: waits out a store that does not answer rather than undo a transfer that completed.
          await d.vms.update(r.vm, (cur) => ({ ...cur, ...disk, node: r.to, state: VmState.Running, stateSinceMs: moved }), { waitForStore: true });
          r = await save((cur) => ({ ...cur, ownerMovedAtMs: moved }));
          await ctx.commit();
        }
        await source
          .kill(r.vm)
          .catch((e: unknown) => save((cur) => ({ ...cur, cleanupErrors: [...(cur.cleanupErrors ?? []), `source QEMU: ${toFerryError(e).message}`] })));
        // Shared-nothing: the VM runs on its copy; the source's disk goes.
        if (r.storage) d.volume.remove(r.storage.sourceDisk);
      },
      'rerun',
    ),

    // 7. network: the switch learnt the MAC on the target's port. The VM has moved by now; if its
    //    network did not follow, the migration fails here (the VM runs on the target, cut off).
    phase(
      'network',
      async () => {
        const r = await rec();
        const vm = await d.vms.get(r.vm);
        const sw = switchOf(vm);
        let lost: string | undefined;
        if (!sw) {
          await warn('the VM is disconnected from every virtual switch: no MAC to move');
        } else if (await onHostBridge(d, r.to)) {
          // The target's bridge must learn the MAC on the VM's port from the announce, which then leaves by the uplink.
          const seen = (await (await d.nodes.agent(r.to)).announce(r.vm)).bridge;
          if (!seen?.learnt)
            lost = `the bridge ${seen?.name ?? '(none)'} on ${r.to} did not learn ${vm.mac} on ${seen?.port ?? "the VM's port"} after the announce; the VM runs on ${r.to} without network`;
        } else if (!(await waitMacOn(d, vm.mac, r.to, r.requestedAtMs, MAC_MOVE_TIMEOUT_MS))) {
          await (await d.nodes.agent(r.to)).announce(r.vm).catch(() => {});
          if (!(await waitMacOn(d, vm.mac, r.to, r.requestedAtMs, MAC_MOVE_TIMEOUT_MS)))
            lost = `the switch did not see ${vm.mac} on ${r.to} after the announce; the VM runs on ${r.to} without network`;
        }
        const blackout = sw ? await d.switch.stopProbe(`mig-${id}`).catch(() => undefined) : undefined;
        if (blackout)
          await save((cur) => ({ ...cur, guestBlackoutMs: blackout.maxGapMs, always: (cur.always ?? []).filter((s) => s.action !== 'stop-probe') }));
        if (lost) throw errors.migrationFailed(lost, { vm: r.vm, node: r.to });
      },
      'rerun',
      'fail',
    ),
  ];
}

/**
 * Shared-nothing switchover, with the source paused before the device
 * state: end the mirror (the target's disk now holds every block), drop
 * the target's export, and let QEMU send the device state.
 */
async function endDiskCopy(d: MigrationRunDeps, id: string, vm: string, source: NodeAgent, target: NodeAgent): Promise<void> {
  const { bytes } = await source.endMirror(vm, true);
  await target.unexportDisk(vm);
  await d.save(id, (cur) => ({ ...cur, storage: { ...cur.storage!, copiedBytes: bytes }, undo: (cur.undo ?? []).filter((s) => s.action !== 'end-mirror') }));
  await source.continueTransfer(vm);
}

/**
 * Follows the source's transfer until it ends, saving progress; applies the
 * policy (post-copy or abort when pre-copy gets nowhere); cancels it on a
 * cancel request or when the target's agent goes away.
 */
async function followTransfer(
  d: MigrationRunDeps,
  id: string,
  source: NodeAgent,
  target: NodeAgent,
  signal: AbortSignal,
  atSwitchover?: () => Promise<void>,
): Promise<TransferProgress> {
  let lastSave = 0;
  let targetFailures = 0;
  const startedAt = d.clock.nowMs();
  const rec = await d.load(id);
  const policy = rec.policy ?? effectivePolicy();
  const ramBytes = (await d.vms.get(rec.vm)).memoryMiB * 1048576;
  let lowest = Infinity;
  let lowestAt = 0;
  let maxThrottle = 0;
  let postcopy = false;
  for (;;) {
    const p = await source.transfer(rec.vm);
    const now = d.clock.nowMs();
    if (p.throttlePercent > maxThrottle) {
      maxThrottle = p.throttlePercent;
      await d.save(id, (cur) => ({ ...cur, maxThrottlePercent: maxThrottle }));
    }
    if (isTransferFinal(p.status)) {
      await saveProgress(d, id, p, now, now - startedAt);
      return p;
    }
    if (now - lastSave >= SAVE_PROGRESS_EVERY_MS) {
      await saveProgress(d, id, p, now, now - startedAt);
      lastSave = now;
    }
    if (p.status === 'pre-switchover') {
      if (!atSwitchover) throw new FerryError(ErrorCode.MigrationFailed, 'QEMU paused before switchover, which this migration did not ask for');
      await atSwitchover();
      atSwitchover = undefined;
      await d.clock.sleep(POLL_MS);
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
      elapsedMs: now - startedAt,
      guestRamBytes: ramBytes,
      remainingBytes: p.remainingBytes,
      lowestRemaining: lowest,
      lowestAtMs: lowestAt,
      rounds: p.rounds,
      postcopyStarted: postcopy,
      ...(rec.predicted?.postcopyAfterRound ? { postcopyAfterRound: rec.predicted.postcopyAfterRound } : {}),
    });
    if (decision.action === 'postcopy' && p.status === 'active') {
      await source.startPostcopy(rec.vm);
      postcopy = true;
      await d.save(id, (cur) => ({ ...cur, postcopyStartedAtMs: now, escalation: decision.reason }));
      await d.events.emit({
        type: 'migration.postcopy',
        vm: rec.vm,
        migration: id,
        message: `migration ${id}: post-copy started: ${decision.reason}`,
        data: { afterMs: now - startedAt },
      });
    } else if (decision.action === 'abort') {
      await source.cancelTransfer(rec.vm).catch(() => {});
      await d.save(id, (cur) => ({ ...cur, escalation: decision.reason }));
      throw new FerryError(ErrorCode.MigrationFailed, `${decision.reason}; aborted, the VM keeps running on ${rec.from}`);
    }
    // In post-copy the guest already runs on the target: nothing can be cancelled any more.
    const cancelRequested = !postcopy && (signal.aborted || (await d.load(id)).cancelRequested === true);
    // The target's agent must stay reachable: if it is gone, nobody could
    // confirm the target runs, so stop the transfer while the source still can.
    const targetAlive = await target.health().then(
      () => true,
      () => false,
    );
    targetFailures = targetAlive ? 0 : targetFailures + 1;
    if (cancelRequested || (targetFailures >= 2 && !postcopy)) {
      await source.cancelTransfer(rec.vm).catch(() => {});
      if (cancelRequested) throw errors.aborted(`migration ${id}`);
      throw errors.agentUnreachable(target.node);
    }
    await d.clock.sleep(POLL_MS);
  }
}

async function saveProgress(d: MigrationRunDeps, id: string, p: TransferProgress, now: number, elapsedMs: number): Promise<void> {
  const progress = { ...p, sampledAtMs: now } as MigrationRecord['progress'] & object;
  // QEMU's throughput figure is per iteration and reads 0 until the first
  // one ends; until then the average so far is the better estimate.
  const rate = p.throughputBytesPerSec > 0 ? p.throughputBytesPerSec : elapsedMs > 0 ? (p.transferredBytes * 1000) / elapsedMs : 0;
  if (rate > 0) progress.estimatedRemainingMs = Math.round((p.remainingBytes / rate) * 1000);
  await d.save(id, (cur) => ({ ...cur, progress }));
}

async function waitTargetRunning(d: MigrationRunDeps, target: NodeAgent, vm: string, signal: AbortSignal, timeoutMs = 10_000): Promise<void> {
  const deadline = d.clock.nowMs() + timeoutMs;
  for (;;) {
    const i = await target.get(vm, { signal });
    if (i.runState === RunState.Running) return;
    if (i.runState === RunState.Paused || i.runState === RunState.Migrated) {
      await target.resume(vm, { signal });
      continue;
    }
    if (d.clock.nowMs() > deadline) throw errors.timeout('waiting for the target to run the VM', timeoutMs);
    await d.clock.sleep(20);
  }
}

/** Whether a node's VM NICs are taps on its host bridges (real hosts, the lab) rather than ports of the userspace switch. */
async function onHostBridge(d: MigrationRunDeps, node: string): Promise<boolean> {
  return (await d.nodes.get(node).catch(() => undefined))?.capabilities?.nic?.backend === 'bridge';
}

async function waitMacOn(d: MigrationRunDeps, mac: string, node: string, sinceMs: number, timeoutMs: number): Promise<boolean> {
  const deadline = d.clock.nowMs() + timeoutMs;
  for (;;) {
    const moves = await d.switch.moves(mac, sinceMs).catch(() => []);
    if (moves.some((m) => m.toNode === node)) return true;
    const table = await d.switch.macs().catch(() => []);
    const moved = table.find((e) => e.mac === mac);
    if (moved?.node === node && moved.lastSeenMs >= sinceMs) return true;
    if (d.clock.nowMs() > deadline) return false;
    await d.clock.sleep(20);
  }
}

/**
 * Failover: host leases, HA restarts and lost VMs (see domain/ha.ts for the
 * timing that keeps a VM from running twice).
 *
 * - Each host holds a lease (`liveness/NODE`, attached to a store lease of
 *   `hostLeaseTtlS`). On etcd the agent renews it there itself, and its key
 *   names the HA VMs the agent fences (node/host-lease.ts): no controller
 *   stands between a host and its lease. On the SQLite store each answered
 *   heartbeat renews it here. Either way the heartbeat's answer tells the
 *   agent which of its VMs are HA: those it must fence (kill) when the
 *   lease lapses before it can renew again.
 * - A host whose lease key is gone has failed. RESTART_MARGIN_MS later its
 *   HA VMs that its agent knew to fence start on other hosts, highest
 *   priority first; one that fails to start HA_MAX_FAILURES times in a row
 *   is held with the reason. Its other VMs are `lost`: nobody knows whether
 *   they still run there.
 * - A failed host that comes back rejoins: a lost VM it still runs is
 *   running again, one it no longer runs is stopped. A copy of an HA VM that
 *   escaped fencing is the reconciler's stray (the record names the new host).
 * - An HA VM whose QEMU died on a healthy host starts again in place, with
 *   backoff, under the same limit.
 *
 * On SQLite the controller judges no host until one lease period after it
 * started: agents renew through it, so after its own restart every lease
 * looks lapsed. On etcd the leases are there to read at once.
 */
import type { Clock } from '../domain/clock.js';
import { errors, toFerryError } from '../domain/errors.js';
import { VmOperation } from '../domain/vm-locks.js';
import { HA_MAX_FAILURES, LIVENESS_PREFIX, type LivenessRecord, QEMU_EXITED, RESTART_MARGIN_MS, restartBackoffMs, restartOrder } from '../domain/ha.js';
import { type Heartbeat, type HeartbeatAnswer, isActive, type LeaseRenewal, type VmRecord, VmState } from '../domain/records.js';
import type { EventSink } from '../ports/events.js';
import type { VmLocks } from '../ports/locks.js';
import type { Logger } from '../ports/logger.js';
import type { Settings } from '../ports/settings.js';
import type { ClusterStore, Entry } from '../ports/store.js';
import type { VmRepository } from '../ports/vm-repository.js';
import type { StoreNodes } from './core/nodes.js';

export interface FailoverDeps {
  store: ClusterStore;
  nodes: StoreNodes;
  vms: VmRepository;
  locks: VmLocks;
  events: EventSink;
  settings: Settings;
  clock: Clock;
  log: Logger;
  start: (vm: string) => Promise<VmRecord>;
  /**
   * On etcd: where agents renew their hosts' leases themselves, and a read of the lease keys from etcd
   * (not a mirror that follows it: a lapsed lease must be seen when it lapses).
   */
  agentLeases?: { at: Omit<LeaseRenewal, 'key'>; read: () => Promise<Entry<LivenessRecord>[]> };
}

interface HostLease {
  id: string;
  ttlMs: number;
  renewedMs: number;
  /** The HA VMs the agent was last told to fence. */
  armed: Set<string>;
}

/** A host's lease as this controller knows it (see hostLeases). */
interface HostLeaseView {
  holds: boolean;
  renewedMs: number;
  /** The HA VMs its agent fences. */
  armed: Set<string>;
  /** Its key was gone before this controller started: what it named is unknown. */
  unseen?: true;
}

interface Failure {
  detectedMs: number;
  /** From the last renewal to the detection (at most the TTL plus one tick). */
  detectionMs: number;
}

export class Failover {
  private readonly leases = new Map<string, HostLease>();
  /** Agent-renewed leases: when each key was last seen, and the HA VMs it named. */
  private readonly seen = new Map<string, { atMs: number; ha: Set<string> }>();
  private readonly failed = new Map<string, Failure>();
  /** The next moment an HA VM may be tried again. */
  private readonly retryAt = new Map<string, number>();
  private readonly startedMs: number;
  /** Fencings already told as events (`host/vm`), until that VM runs on that host again. */
  private readonly fencingsNoted = new Set<string>();

  constructor(private readonly d: FailoverDeps) {
    this.startedMs = d.clock.nowMs();
  }

  /** A heartbeat: the node directory hears it, the host's lease is renewed, and the answer names its HA VMs. */
  async heartbeat(hb: Heartbeat): Promise<HeartbeatAnswer> {
    await this.d.nodes.heartbeat(hb);
    const ttlMs = (await this.d.settings.get()).hostLeaseTtlS * 1000;
    if (this.d.agentLeases) {
      await this.noteFenced(hb);
      return { ok: true, lease: { ttlMs, renew: { ...this.d.agentLeases.at, key: LIVENESS_PREFIX + hb.name } }, ha: await this.haOn(hb.name) };
    }
    const now = this.d.clock.nowMs();
    const held = this.leases.get(hb.name);
    let renewed = false;
    if (held && held.ttlMs === ttlMs) {
      renewed = await this.d.store.keepAlive(held.id).then(
        () => true,
        () => false,
      );
    }
    if (!renewed) {
      const id = await this.d.store.grantLease(ttlMs);
      await this.d.store.put<LivenessRecord>(LIVENESS_PREFIX + hb.name, { node: hb.name, sinceMs: now }, { lease: id });
      this.leases.set(hb.name, { id, ttlMs, renewedMs: now, armed: held?.armed ?? new Set() });
    } else held!.renewedMs = now;
    const ha = await this.haOn(hb.name);
    this.leases.get(hb.name)!.armed = new Set(ha);
    await this.noteFenced(hb);
    return { ok: true, lease: { ttlMs }, ha };
  }

  /** The HA VMs a host runs: those its agent must fence when its lease lapses. */
  private async haOn(node: string): Promise<string[]> {
    return (await this.d.vms.list()).filter((v) => v.ha && v.node === node && isActive(v.state)).map((v) => v.name);
  }

  /**
   * One `vm.fenced` per fencing. An agent names what it fenced until a heartbeat carrying it is answered, so a
   * heartbeat that reached the controller but timed out at the agent names the same fencing again: a name
   * already noted for this host is a repeat until the host reports that VM running again (launched anew).
   */
  private async noteFenced(hb: Heartbeat): Promise<void> {
    for (const v of hb.vms) this.fencingsNoted.delete(`${hb.name}/${v.name}`);
    for (const vm of hb.fenced ?? []) {
      const key = `${hb.name}/${vm}`;
      if (this.fencingsNoted.has(key)) continue;
      this.fencingsNoted.add(key);
      await this.d.events.emit({ type: 'vm.fenced', vm, node: hb.name, message: `${hb.name} fenced HA VM ${vm}: its lease had run out` });
    }
  }

  /**
   * Each member's lease as this controller knows it: whether it holds, when it was last renewed (or, renewed by
   * the agent, at most how long ago), and the HA VMs its agent fences. Undefined: never heard of since start.
   */
  private async hostLeases(now: number, ttlMs: number, vms: VmRecord[]): Promise<Map<string, HostLeaseView>> {
    const out = new Map<string, HostLeaseView>();
    if (this.d.agentLeases) {
      const held = new Set<string>();
      for (const e of await this.d.agentLeases.read()) {
        held.add(e.value.node);
        this.seen.set(e.value.node, { atMs: now, ha: new Set(e.value.ha ?? []) });
      }
      for (const [node, s] of this.seen) {
        // Gone since it was last seen: its last renewal was at least a TTL before it went, at most a TTL before then.
        out.set(node, { holds: held.has(node), renewedMs: held.has(node) ? now : s.atMs - ttlMs, armed: s.ha });
      }
      // A host whose key was gone before this controller started (it lost power while no controller led): a live
      // agent renews its key whether or not a controller answers, so none for a lease period and the margin means
      // it failed. What its key last named is unknown, so it was told to fence nothing: its VMs are lost, none restarts.
      if (now - this.startedMs >= ttlMs + RESTART_MARGIN_MS)
        for (const node of this.d.nodes.members())
          if (!this.seen.has(node) && vms.some((v) => v.node === node && isActive(v.state)))
            out.set(node, { holds: false, renewedMs: this.startedMs - ttlMs, armed: new Set(), unseen: true });
      return out;
    }
    const alive = new Set((await this.d.store.list<LivenessRecord>(LIVENESS_PREFIX)).map((e) => e.value.node));
    for (const [node, l] of this.leases) {
      // This controller renews the leases itself, so it knows when one lapses without waiting for the store to say
      // so (a watch on a member that went down with the host would say it seconds late). The key gone counts too.
      out.set(node, { holds: alive.has(node) && now - l.renewedMs <= ttlMs, renewedMs: l.renewedMs, armed: l.armed });
    }
    return out;
  }

  async tick(): Promise<void> {
    const now = this.d.clock.nowMs();
    const ttlMs = (await this.d.settings.get()).hostLeaseTtlS * 1000;
    if (!this.d.agentLeases && now - this.startedMs < ttlMs + RESTART_MARGIN_MS) return;
    const vms = await this.d.vms.list();
    const leases = await this.hostLeases(now, ttlMs, vms);
    for (const node of this.d.nodes.members()) {
      const lease = leases.get(node);
      // A host never heard from since this controller started has nothing it knows of to recover.
      if (!lease) continue;
      if (lease.holds) {
        const was = this.failed.get(node);
        // Back: judged on what it reports now. Its lease may be back (renewed by the agent) before its first heartbeat.
        if (was && (this.d.nodes.reported(node)?.atMs ?? 0) > was.detectedMs) {
          this.failed.delete(node);
          await this.rejoined(node, vms);
        }
        continue;
      }
      let failure = this.failed.get(node);
      if (!failure) {
        failure = { detectedMs: now, detectionMs: now - lease.renewedMs };
        this.failed.set(node, failure);
        const on = vms.filter((v) => v.node === node && isActive(v.state)).map((v) => v.name);
        await this.d.events.emit({
          type: 'node.failed',
          node,
          message: lease.unseen
            ? `node ${node} failed: its lease was gone before this controller led, and not renewed since${on.length ? ` (it ran ${on.join(', ')})` : ''}`
            : `node ${node} failed: its lease was not renewed for ${(failure.detectionMs / 1000).toFixed(1)} s${on.length ? ` (it ran ${on.join(', ')})` : ''}`,
          data: { detectionMs: failure.detectionMs, vms: on, ...(lease.unseen ? { unseen: true } : {}) },
        });
      }
      if (now < failure.detectedMs + RESTART_MARGIN_MS) continue;
      await this.recover(node, failure, lease, vms);
    }
    await this.restartPending(vms);
  }

  /** The VMs a failed host ran: HA ones its agent fences are marked for a restart elsewhere, the rest are lost. */
  private async recover(node: string, failure: Failure, lease: HostLeaseView, vms: VmRecord[]): Promise<void> {
    const armed = lease.armed;
    for (const vm of vms.filter((v) => v.node === node && isActive(v.state))) {
      if (this.d.locks.isHeld(vm.name)) continue; // its operation ends first (a migration fails and leaves it here)
      const restart = vm.ha && !vm.haHeld && armed.has(vm.name);
      const lost = { node, sinceMs: failure.detectedMs };
      const changed = await this.d.vms
        .update(vm.name, (cur) =>
          cur.node === node && isActive(cur.state) && !this.d.locks.isHeld(vm.name)
            ? restart
              ? { ...cur, state: VmState.Stopped, stateSinceMs: this.d.clock.nowMs(), node: '', lost, error: `host ${node} failed` }
              : { ...cur, state: VmState.Lost, stateSinceMs: this.d.clock.nowMs(), lost, error: `host ${node} failed` }
            : cur,
        )
        .catch(() => undefined);
      if (!changed?.lost || changed.lost.sinceMs !== failure.detectedMs) continue;
      if (!restart) {
        await this.d.events.emit({
          type: 'vm.lost',
          vm: vm.name,
          node,
          message: `VM ${vm.name} is lost with ${node}${
            vm.ha
              ? vm.haHeld
                ? ' (HA held)'
                : lease.unseen
                  ? ' (this controller never saw which VMs its agent fences)'
                  : ' (its agent had not been told to fence it)'
              : ' (not HA)'
          }`,
        });
      }
    }
  }

  /** HA VMs waiting to start: those of failed hosts, and those whose QEMU died on a healthy host. */
  private async restartPending(vms: VmRecord[]): Promise<void> {
    const now = this.d.clock.nowMs();
    const pending = restartOrder(
      vms.filter(
        (v) =>
          v.ha && !v.haHeld && v.state === VmState.Stopped && (v.lost || v.error === QEMU_EXITED || (v.haFailures ?? 0) > 0) && !this.d.locks.isHeld(v.name),
      ),
    );
    for (const vm of pending) {
      if ((this.retryAt.get(vm.name) ?? 0) > now) continue;
      const from = vm.lost?.node ?? vm.node;
      const failure = vm.lost ? this.failed.get(vm.lost.node) : undefined;
      const began = this.d.clock.nowMs();
      try {
        const after = await this.d.start(vm.name);
        this.retryAt.delete(vm.name);
        const restartMs = this.d.clock.nowMs() - began;
        const data: Record<string, unknown> = { from, to: after.node, restartMs, priority: vm.ha!.priority };
        if (vm.lost) data.sinceDetectionMs = this.d.clock.nowMs() - vm.lost.sinceMs;
        if (failure) data.detectionMs = failure.detectionMs;
        await this.d.events.emit({
          type: vm.lost ? 'vm.failover' : 'vm.restarted',
          vm: vm.name,
          node: after.node,
          message: vm.lost
            ? `HA VM ${vm.name} restarted on ${after.node} after ${from} failed (detected after ${((failure?.detectionMs ?? 0) / 1000).toFixed(1)} s, started in ${(restartMs / 1000).toFixed(1)} s)`
            : `HA VM ${vm.name} restarted on ${after.node} after its QEMU exited`,
          data,
        });
      } catch (e) {
        const reason = toFerryError(e).message;
        const failures = (vm.haFailures ?? 0) + 1;
        this.retryAt.set(vm.name, now + restartBackoffMs(failures));
        const held = failures >= HA_MAX_FAILURES;
        await this.d.vms
          .update(vm.name, (cur) => ({ ...cur, haFailures: failures, ...(held ? { haHeld: { reason, sinceMs: now } } : {}) }))
          .catch(() => undefined);
        this.d.log.warn({ vm: vm.name, failures, err: reason }, 'HA restart failed');
        if (held) {
          await this.d.events.emit({
            type: 'vm.ha-held',
            vm: vm.name,
            message: `HA VM ${vm.name} is held after ${failures} failed restarts: ${reason} (ferry vm start ${vm.name} tries again)`,
            data: { failures, reason },
          });
        }
      }
    }
  }

  /**
   * An operator's claim on a VM lost with its failed host: they say that host is off (powered down, or cut off for
   * good), so the VM may start elsewhere. It becomes stopped, on no host; `vm start` places it. Refused while the
   * host is back (its rejoin settles the VM). QEMU's lock on the shared disk stays the backstop: a start fails
   * while a QEMU the host still runs holds the disk, and once the host reports again that copy is removed.
   */
  async claim(name: string): Promise<VmRecord> {
    return this.d.locks.with(name, VmOperation.Configure, async () => {
      const vm = await this.d.vms.get(name);
      const lost = vm.lost;
      if (vm.state !== VmState.Lost || !lost)
        throw errors.invalidState(
          `VM '${name}' is not lost (it is ${vm.state}${vm.node ? ` on ${vm.node}` : ''}): only a VM lost with a failed host can be claimed`,
          {
            vm: name,
            state: vm.state,
          },
        );
      if ((this.d.nodes.reported(lost.node)?.atMs ?? 0) > lost.sinceMs)
        throw errors.invalidState(`host ${lost.node} is back: it rejoins and settles VM '${name}' itself`, { vm: name, node: lost.node });
      const since = new Date(lost.sinceMs).toISOString();
      const claimed = await this.d.vms.update(name, (cur) => {
        if (cur.state !== VmState.Lost) throw errors.invalidState(`VM '${name}' is no longer lost (it is ${cur.state})`, { vm: name, state: cur.state });
        const next: VmRecord = {
          ...cur,
          state: VmState.Stopped,
          stateSinceMs: this.d.clock.nowMs(),
          node: '',
          error: `claimed from host ${lost.node}, failed since ${since}`,
        };
        delete next.lost;
        return next;
      });
      await this.d.events.emit({
        type: 'vm.claimed',
        vm: name,
        node: lost.node,
        message: `VM ${name} claimed from ${lost.node} (failed since ${since}): it is stopped and may start on another host`,
        data: { from: lost.node, lostSinceMs: lost.sinceMs },
      });
      return claimed;
    });
  }

  /** A failed host is back: its lost VMs run there again or are stopped. */
  private async rejoined(node: string, vms: VmRecord[]): Promise<void> {
    const reported = this.d.nodes.reported(node)?.vms ?? [];
    await this.d.events.emit({ type: 'node.rejoined', node, message: `node ${node} is back after a failure; it starts nothing that runs elsewhere` });
    for (const vm of vms.filter((v) => v.state === VmState.Lost && v.lost?.node === node)) {
      const runs = reported.some((i) => i.name === vm.name);
      await this.d.vms.update(vm.name, (cur) => {
        if (cur.state !== VmState.Lost) return cur;
        const next: VmRecord = { ...cur, state: runs ? VmState.Running : VmState.Stopped, stateSinceMs: this.d.clock.nowMs() };
        delete next.lost;
        if (runs) delete next.error;
        else next.error = `lost with host ${node}, which came back without it`;
        return next;
      });
      await this.d.events.emit({
        type: runs ? 'vm.found' : 'vm.exited',
        vm: vm.name,
        node,
        message: runs ? `VM ${vm.name} still runs on ${node}` : `VM ${vm.name} did not survive ${node}'s failure; it is stopped`,
      });
    }
  }
}

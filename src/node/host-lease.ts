/**
 * This host's lease, renewed by the agent itself in the cluster's store (on
 * etcd). The controller only reads it: a host whose lease key is gone has
 * failed, whether or not a controller was there to hear its heartbeats, so
 * a controller that is down or changing hands fences nothing.
 *
 * The key (`liveness/NODE`, on the lease) holds the HA VMs this agent fences
 * when it cannot renew: the controller restarts elsewhere only what the host
 * itself had promised to kill. The agent counts its deadline from the moment
 * it *sent* the renewal that succeeded (domain/ha.ts), so it runs out before
 * the lease can expire in etcd.
 */
import path from 'node:path';
import type { Clock } from '../domain/clock.js';
import { LEADER_KEY, fenceDeadline, type LivenessRecord } from '../domain/ha.js';
import type { LeaseRenewal } from '../domain/records.js';
import type { ClusterStore } from '../ports/store.js';
import { readJsonFile, writeFileAtomic } from '../system/json-file.js';

export type LeaseStore = Pick<ClusterStore, 'grantLease' | 'keepAlive' | 'put' | 'get' | 'close'>;

/** Where and how this host renews its lease, and the HA VMs its key names: kept so a restarted agent renews at once. */
export interface LeaseTarget {
  at: LeaseRenewal;
  ttlMs: number;
  ha: string[];
}

/** The lease target in the agent's run directory (`lease-target.json`), written atomically. */
export class LeaseTargetFile {
  constructor(private readonly runDir: string) {}

  private get file(): string {
    return path.join(this.runDir, 'lease-target.json');
  }

  read(): LeaseTarget | undefined {
    return readJsonFile<LeaseTarget>(this.file);
  }

  write(t: LeaseTarget): void {
    writeFileAtomic(this.file, JSON.stringify(t));
  }
}

export class HostLease {
  private lease: { id: string; ttlMs: number } | undefined;
  /** The HA VMs the key says this host fences, as last written. */
  private written: string | undefined;

  constructor(
    private readonly store: LeaseStore,
    private readonly at: LeaseRenewal,
    private readonly node: string,
    private readonly clock: Clock,
  ) {}

  /** Whether this keeper renews at `at` (the controller may name another store later). */
  renewsAt(at: LeaseRenewal): boolean {
    return JSON.stringify(at) === JSON.stringify(this.at);
  }

  /**
   * Renews the lease (a new one when it expired or the TTL changed) and writes the HA VMs into its key when
   * they changed. Returns until when HA VMs may run; throws when the store did not renew it.
   */
  async renew(ttlMs: number, ha: string[]): Promise<number> {
    const sentMs = this.clock.nowMs();
    const names = JSON.stringify([...ha].sort());
    let renewed = false;
    if (this.lease?.ttlMs === ttlMs) {
      // Expired (or not renewed for another reason): a new lease, whose grant fails too while etcd is away.
      renewed = await this.store.keepAlive(this.lease.id).then(
        () => true,
        () => false,
      );
    }
    if (!renewed) {
      const id = await this.store.grantLease(ttlMs);
      this.lease = { id, ttlMs };
      this.written = undefined;
    }
    if (this.written !== names) {
      const record: LivenessRecord = { node: this.node, sinceMs: sentMs, ha: JSON.parse(names) as string[] };
      await this.store.put(this.at.key, record, { lease: this.lease!.id });
      this.written = names;
    }
    return fenceDeadline(sentMs, ttlMs);
  }

  /** The controllers' leadership as the store has it now (the leader key's create revision); undefined: nobody leads. */
  async leadership(): Promise<number | undefined> {
    return (await this.store.get(LEADER_KEY))?.createRevision;
  }

  async close(): Promise<void> {
    // The lease is left to run out, never revoked: HA VMs may still run here until the watchdog fences them.
    await this.store.close();
  }
}

/**
 * Which controller leads: one key in the store, `controller/leader`,
 * attached to a short lease that only its holder renews. A controller
 * stands for leader by creating the key; whoever created it leads, and its
 * leadership is the key's create revision. The others wait (standby) and
 * try again as soon as the key is gone: the leader stopped renewing (it
 * died, hangs, or lost etcd) and its lease ran out.
 *
 * A leader that cannot renew within its lease steps down at once (the
 * daemon exits and is restarted as a standby), and every write it makes is
 * fenced by its leadership (EtcdStore.fenceWith): a write arriving after
 * another controller took over fails and changes nothing.
 */
import type { Clock } from '../../domain/clock.js';
import { LEADER_KEY } from '../../domain/ha.js';
import type { ClusterStore } from '../../ports/store.js';

/** What the leader key says. */
export interface LeaderRecord {
  /** The controller's name (its host). */
  name: string;
  /** Where its API answers, once it does. */
  url?: string;
  pid: number;
  sinceMs: number;
}

export interface Lead {
  /** The leadership: the leader key's create revision. */
  revision: number;
  lease: string;
}

export class Leadership {
  constructor(
    private readonly store: ClusterStore,
    private readonly clock: Clock,
    private readonly me: { name: string; pid: number },
    /** How long a leader that stopped renewing keeps the key (the longest a takeover waits). */
    private readonly ttlMs = 3000,
  ) {}

  get name(): string {
    return this.me.name;
  }

  /** Who leads now, if anyone. */
  async leader(): Promise<LeaderRecord | undefined> {
    return (await this.store.get<LeaderRecord>(LEADER_KEY))?.value;
  }

  /** Stands for leader until this controller leads (or `signal` aborts). */
  async campaign(signal?: AbortSignal, onWait?: (leader: LeaderRecord) => void): Promise<Lead> {
    let told: string | undefined;
    for (;;) {
      signal?.throwIfAborted();
      const held = await this.store.get<LeaderRecord>(LEADER_KEY).catch(() => undefined);
      if (!held) {
        const lead = await this.tryLead().catch(() => undefined);
        if (lead) return lead;
      } else if (told !== `${held.value.name}/${held.createRevision}`) {
        told = `${held.value.name}/${held.createRevision}`;
        onWait?.(held.value);
      }
      await this.clock.sleep(Math.max(50, this.ttlMs / 10), signal);
    }
  }

  private async tryLead(): Promise<Lead | undefined> {
    const lease = await this.store.grantLease(this.ttlMs);
    const record: LeaderRecord = { name: this.me.name, pid: this.me.pid, sinceMs: this.clock.nowMs() };
    try {
      const revision = await this.store.put(LEADER_KEY, record, { expectRevision: 0, lease });
      return { revision, lease };
    } catch {
      await this.store.revokeLease(lease).catch(() => {});
      return undefined;
    }
  }

  /**
   * Keeps the lead: renews its lease six times per TTL. `onLost` is called
   * once (and renewing stops) when no renewal succeeded for two thirds of the
   * TTL while `othersStandBy` says another controller could take over
   * (before the lease can have run out for it), or when the lease is gone. `stop` stops renewing (the lead then runs out by itself);
   * `release` also lets the key go at once.
   */
  hold(lead: Lead, onLost: (why: string) => void, o: { othersStandBy?: () => boolean } = {}): { stop(): void; release(): Promise<void> } {
    let stopped = false;
    let renewedMs = this.clock.nowMs();
    // Step down with a third of the TTL to spare: a standby takes over only once the whole TTL passed.
    const marginMs = this.ttlMs / 3;
    const lost = (why: string) => {
      if (stopped) return;
      stopped = true;
      onLost(why);
    };
    // Renewing: a call etcd does not answer may take its whole deadline, so the clock is watched beside it.
    void (async () => {
      while (!stopped) {
        try {
          await this.store.keepAlive(lead.lease);
          renewedMs = this.clock.nowMs();
        } catch (e) {
          if ((e as { code?: string }).code === 'invalid-argument') return lost(`the leader lease ran out (${(e as Error).message})`);
        }
        await this.clock.sleep(this.ttlMs / 6);
      }
    })();
    void (async () => {
      while (!stopped) {
        const since = this.clock.nowMs() - renewedMs;
        // Only a controller that could be replaced steps down on silence: alone, it holds on (its writes stay
        // fenced) until etcd answers again and says whether its lease is still there.
        if (since > this.ttlMs - marginMs && (o.othersStandBy?.() ?? true)) return lost(`no renewal of the leader lease for ${since} ms`);
        await this.clock.sleep(50);
      }
    })();
    return {
      stop: () => {
        stopped = true;
      },
      release: async () => {
        stopped = true;
        await this.store.revokeLease(lead.lease).catch(() => {});
      },
    };
  }

  /** Says where the leader's API answers (a fenced write: only the leader can make it). */
  async announce(url: string): Promise<void> {
    const held = await this.store.get<LeaderRecord>(LEADER_KEY);
    if (!held) return;
    await this.store.put(LEADER_KEY, { ...held.value, url }, { lease: held.lease, expectRevision: held.modRevision });
  }
}

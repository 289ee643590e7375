/**
 * A store that keeps a copy of everything it has seen: reads are answered
 * from the copy, writes go through to the backend. The controller on etcd
 * sits on one, so:
 *
 * - it follows the cluster by one watch stream, not by asking etcd on every
 *   read (the reconciler, the API and the console read locally);
 * - when etcd does not answer, reads still answer with what was last seen,
 *   and writes fail with the backend's one-line `store-unavailable` error;
 * - when etcd is back, the watch resumes from the last revision seen and the
 *   copy catches up.
 *
 * Its own writes are applied to the copy as soon as etcd confirms them
 * (read-your-writes); a change arriving later by the watch is applied only
 * if it is newer than what the copy holds. A compare-and-set that loses
 * re-reads that key from the backend, so a retry sees the winner's value.
 */
import type { Change, ClusterStore, Entry, PutOptions, StoreHealth } from '../ports/store.js';

/** A key deleted here whose delete the watch has not brought yet: older puts must not bring it back. */
const PENDING = Number.POSITIVE_INFINITY;

export class MirroredStore implements ClusterStore {
  private readonly copy = new Map<string, Entry<unknown>>();
  private readonly tombstones = new Map<string, number>();
  private seen = 0;
  private stopWatch: (() => void) | undefined;
  private loaded = false;
  private probe: NodeJS.Timeout | undefined;
  private trouble: { error: string; sinceMs: number } | undefined;
  /** The newest revision the watch brought (own writes raise `seen`, not this). */
  private watched = 0;
  /** The backend's revision at the last probe, when the watch had not brought it yet. */
  private behind: number | undefined;
  /** A watch started again waits this long before the next start (doubled while it does not help, see probeOnce). */
  private rewatchGapMs: number;
  private quietUntilMs = 0;
  /** How often the watch went quiet and was started again. */
  rewatches = 0;

  /** `describe` names the backend for health reports; `probeMs` is how often a quiet store is asked whether it answers. */
  constructor(
    private readonly backend: ClusterStore,
    private readonly describe: { backend: StoreHealth['backend']; at: string } = { backend: 'etcd', at: '' },
    private readonly probeMs = 2000,
  ) {
    this.rewatchGapMs = probeMs;
  }

  /** Whether the backend answered its last call, and the revision seen. */
  health(): StoreHealth {
    return {
      ...this.describe,
      reachable: !this.trouble,
      ...(this.trouble ? { error: this.trouble.error, sinceMs: this.trouble.sinceMs } : {}),
      revision: this.seen,
    };
  }

  /** Runs a backend call, noting whether the backend answered. */
  private async through<T>(fn: () => Promise<T>): Promise<T> {
    try {
      const v = await fn();
      this.trouble = undefined;
      return v;
    } catch (e) {
      if ((e as { code?: string }).code === 'store-unavailable') this.trouble ??= { error: (e as Error).message, sinceMs: Date.now() };
      else this.trouble = undefined;
      throw e;
    }
  }

  /** Reads everything once and follows changes from then on. Throws if the backend does not answer. */
  async start(): Promise<void> {
    this.stopWatch?.();
    const revision = await this.through(() => this.backend.revision());
    const all = await this.through(() => this.backend.list<unknown>(''));
    this.copy.clear();
    for (const e of all) this.copy.set(e.key, e);
    this.seen = Math.max(revision, ...all.map((e) => e.modRevision));
    this.watched = this.seen;
    this.behind = undefined;
    this.loaded = true;
    this.follow();
    if (!this.probe) {
      this.probe = setInterval(() => void this.probeOnce().catch(() => {}), this.probeMs);
      this.probe.unref();
    }
  }

  /** Follows every change after the newest revision the watch brought. */
  private follow(): void {
    this.stopWatch?.();
    this.stopWatch = this.backend.watch(
      '',
      this.watched,
      (c) => {
        this.watched = Math.max(this.watched, c.revision);
        this.apply(c);
      },
      // Fell behind a compaction: read everything again (retrying while the backend is away).
      () => void this.reload(),
    );
  }

  /**
   * Asks whether the backend answers, and whether the watch keeps up: a
   * revision the backend had at one probe must have come by the watch at
   * the next. A watch that went quiet (its member stopped answering without
   * closing the connection, or a stream the client thinks is open) is
   * started again from what it last brought; the copy catches up. Revisions
   * outside the prefix (another user of the same etcd) look the same, so
   * while starting again does not help, it waits twice as long each time.
   */
  private async probeOnce(): Promise<void> {
    const revision = await this.through(() => this.backend.revision());
    const now = Date.now();
    if (this.behind !== undefined && this.watched < this.behind) {
      if (now >= this.quietUntilMs) {
        this.rewatches++;
        this.follow();
        this.quietUntilMs = now + this.rewatchGapMs;
        this.rewatchGapMs = Math.min(this.rewatchGapMs * 2, 60_000);
      }
    } else this.rewatchGapMs = this.probeMs;
    this.behind = revision > this.watched ? revision : undefined;
  }

  private async reload(): Promise<void> {
    for (;;) {
      try {
        return await this.start();
      } catch {
        await new Promise((r) => setTimeout(r, 1000).unref());
      }
    }
  }

  /** The last revision this copy has seen. */
  get revisionSeen(): number {
    return this.seen;
  }

  private apply(c: Change): void {
    this.seen = Math.max(this.seen, c.revision);
    const held = this.copy.get(c.key);
    if (held && held.modRevision >= c.revision) return;
    const tomb = this.tombstones.get(c.key);
    if (c.type === 'delete') {
      this.tombstones.delete(c.key);
      this.copy.delete(c.key);
      return;
    }
    if (tomb !== undefined && tomb >= c.revision) return;
    this.tombstones.delete(c.key);
    this.copy.set(c.key, {
      key: c.key,
      value: c.value,
      modRevision: c.revision,
      createRevision: held?.createRevision ?? c.revision,
      ...(c.lease ? { lease: c.lease } : {}),
    });
  }

  async get<T>(key: string): Promise<Entry<T> | undefined> {
    if (!this.loaded) return this.backend.get<T>(key);
    return this.copy.get(key) as Entry<T> | undefined;
  }

  async list<T>(prefix: string): Promise<Entry<T>[]> {
    if (!this.loaded) return this.backend.list<T>(prefix);
    const out: Entry<T>[] = [];
    for (const [k, e] of this.copy) if (k.startsWith(prefix)) out.push(e as Entry<T>);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async put<T>(key: string, value: T, options: PutOptions = {}): Promise<number> {
    let revision: number;
    try {
      revision = await this.through(() => this.backend.put(key, value, options));
    } catch (e) {
      if ((e as { code?: string }).code === 'conflict') await this.refresh(key);
      throw e;
    }
    const held = this.copy.get(key);
    if (!held || held.modRevision < revision) {
      this.copy.set(key, {
        key,
        value,
        modRevision: revision,
        createRevision: held?.createRevision ?? revision,
        ...(options.lease ? { lease: options.lease } : {}),
      });
    }
    this.tombstones.delete(key);
    this.seen = Math.max(this.seen, revision);
    return revision;
  }

  async delete(key: string, options: { expectRevision?: number } = {}): Promise<boolean> {
    let deleted: boolean;
    try {
      deleted = await this.through(() => this.backend.delete(key, options));
    } catch (e) {
      if ((e as { code?: string }).code === 'conflict') await this.refresh(key);
      throw e;
    }
    if (deleted) {
      this.copy.delete(key);
      this.tombstones.set(key, PENDING);
    }
    return deleted;
  }

  /** Takes a key's current value from the backend (after losing a compare-and-set on it). */
  private async refresh(key: string): Promise<void> {
    const e = await this.backend.get<unknown>(key).catch(() => undefined);
    if (e) {
      const held = this.copy.get(key);
      if (!held || held.modRevision < e.modRevision) this.copy.set(key, e);
      this.tombstones.delete(key);
    } else this.copy.delete(key);
  }

  async revision(): Promise<number> {
    return this.loaded ? this.seen : this.backend.revision();
  }

  grantLease(ttlMs: number): Promise<string> {
    return this.through(() => this.backend.grantLease(ttlMs));
  }

  keepAlive(lease: string): Promise<void> {
    return this.through(() => this.backend.keepAlive(lease));
  }

  async revokeLease(lease: string): Promise<void> {
    await this.through(() => this.backend.revokeLease(lease));
    // Its keys are gone in the backend now; the watch's deletes follow.
    for (const [k, e] of this.copy) {
      if (e.lease === lease) {
        this.copy.delete(k);
        this.tombstones.set(k, PENDING);
      }
    }
  }

  watch(prefix: string, afterRevision: number, onChange: (change: Change) => void, onError?: (e: Error) => void): () => void {
    return this.backend.watch(prefix, afterRevision, onChange, onError);
  }

  async close(): Promise<void> {
    clearInterval(this.probe);
    this.stopWatch?.();
    await this.backend.close();
  }
}

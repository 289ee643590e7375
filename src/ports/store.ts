/**
 * The cluster store: one interface, shaped like etcd's v3 API so an etcd
 * backend can sit behind it (a SQLite file is the embedded default).
 *
 * - Every write bumps one cluster-wide revision; each key remembers the
 *   revision of its last change (`modRevision`).
 * - Compare-and-set: `put(k, v, { expectRevision })` succeeds only if the
 *   key's modRevision is still `expectRevision` (0 = the key must not exist).
 * - Leases: keys attached to a lease vanish when it expires unrenewed.
 * - Watch: every change after a revision, in order, for a key prefix.
 */
import type { Clock } from '../domain/clock.js';

export interface Entry<T> {
  key: string;
  value: T;
  modRevision: number;
  createRevision: number;
  lease?: string;
}

export interface Change<T = unknown> {
  type: 'put' | 'delete';
  key: string;
  value?: T;
  revision: number;
  /** The lease a put attached the key to, where the backend says. */
  lease?: string;
}

export interface PutOptions {
  /** modRevision the key must have now; 0 means it must not exist. */
  expectRevision?: number;
  lease?: string;
}

export interface ClusterStore {
  get<T>(key: string): Promise<Entry<T> | undefined>;
  list<T>(prefix: string): Promise<Entry<T>[]>;
  /** Returns the new revision; throws a `conflict` FerryError when the compare fails. */
  put<T>(key: string, value: T, options?: PutOptions): Promise<number>;
  /** Returns whether a key was deleted; throws `conflict` when the compare fails. */
  delete(key: string, options?: { expectRevision?: number }): Promise<boolean>;
  revision(): Promise<number>;
  grantLease(ttlMs: number): Promise<string>;
  keepAlive(lease: string): Promise<void>;
  revokeLease(lease: string): Promise<void>;
  /**
   * Calls `onChange` for every change under `prefix` after `afterRevision`. `onError` hears of a
   * watch that ended for good (its revision was compacted away): the caller must read again.
   */
  watch(prefix: string, afterRevision: number, onChange: (change: Change) => void, onError?: (e: Error) => void): () => void;
  close(): Promise<void>;
}

/** Reads, changes and writes back a key with compare-and-set, retrying on conflict. */
export async function update<T>(store: ClusterStore, key: string, change: (current: T | undefined) => T | Promise<T>, attempts = 10): Promise<T> {
  for (let i = 0; ; i++) {
    const entry = await store.get<T>(key);
    const next = await change(entry?.value);
    try {
      await store.put(key, next, { expectRevision: entry?.modRevision ?? 0 });
      return next;
    } catch (e) {
      if (i + 1 >= attempts || !(e instanceof Error && (e as { code?: string }).code === 'conflict')) throw e;
    }
  }
}

/** How long an operation's own bookkeeping waits for a store that does not answer before it gives up. */
export const RECORD_PATIENCE_MS = 120_000;

/**
 * `update()` for an operation's own record (a migration, a backup, a sync):
 * a store that does not answer (`store-unavailable`: etcd paused, its
 * leader changing, a member cut off) is asked again every `everyMs` for up
 * to `maxMs`, so a short outage delays the operation instead of failing it
 * half-way. Its phases are what keep it safe: a live migration whose save
 * failed while QEMU went on would otherwise undo a transfer that completed.
 */
export async function updateRecord<T>(
  store: ClusterStore,
  clock: Clock,
  key: string,
  change: (current: T | undefined) => T | Promise<T>,
  opts: { maxMs?: number; everyMs?: number } = {},
): Promise<T> {
  const deadline = clock.nowMs() + (opts.maxMs ?? RECORD_PATIENCE_MS);
  for (;;) {
    try {
      return await update<T>(store, key, change);
    } catch (e) {
      if ((e as { code?: string }).code !== 'store-unavailable' || clock.nowMs() >= deadline) throw e;
      await clock.sleep(opts.everyMs ?? 500);
    }
  }
}

/** How the store behind the controller is doing, for `ferry status` and the console. */
export interface StoreHealth {
  backend: 'sqlite' | 'etcd';
  /** The file or the endpoints. */
  at: string;
  reachable: boolean;
  /** Why not, and since when (ms since the epoch). */
  error?: string;
  sinceMs?: number;
  /** The last revision the controller has seen. */
  revision?: number;
}

/**
 * The embedded store backend: one SQLite file (WAL) in the state directory.
 * Several processes may open it; watches poll the change log, so a change
 * written by one process reaches watchers in another.
 */
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import type { Clock } from '../domain/clock.js';
import { systemClock } from '../domain/clock.js';
import { errors } from '../domain/errors.js';
import type { Change, ClusterStore, Entry, PutOptions } from '../ports/store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, mod_rev INTEGER NOT NULL, create_rev INTEGER NOT NULL, lease TEXT);
CREATE TABLE IF NOT EXISTS changes (rev INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL, value TEXT);
CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, ttl_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
`;

/** Keep this many changes for watchers that fall behind; older ones are compacted. */
const CHANGE_LOG_KEEP = 10_000;

export class SqliteStore implements ClusterStore {
  private readonly db: Database.Database;
  private readonly watchers = new Set<{ prefix: string; after: number; onChange: (c: Change) => void }>();
  private pollTimer: NodeJS.Timeout | undefined;

  constructor(
    path: string,
    private readonly clock: Clock = systemClock,
    private readonly pollMs = 50,
  ) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
  }

  async get<T>(key: string): Promise<Entry<T> | undefined> {
    this.expireLeases();
    const row = this.db.prepare('SELECT * FROM kv WHERE key = ?').get(key) as Row | undefined;
    return row ? toEntry<T>(row) : undefined;
  }

  async list<T>(prefix: string): Promise<Entry<T>[]> {
    this.expireLeases();
    const rows = this.db.prepare('SELECT * FROM kv WHERE key >= ? AND key < ? ORDER BY key').all(prefix, prefixEnd(prefix)) as Row[];
    return rows.map((r) => toEntry<T>(r));
  }

  async put<T>(key: string, value: T, options: PutOptions = {}): Promise<number> {
    this.expireLeases();
    return this.db.transaction(() => {
      const current = this.db.prepare('SELECT mod_rev, create_rev FROM kv WHERE key = ?').get(key) as { mod_rev: number; create_rev: number } | undefined;
      if (options.expectRevision !== undefined && (current?.mod_rev ?? 0) !== options.expectRevision) {
        throw errors.conflict(`'${key}' changed concurrently (expected revision ${options.expectRevision}, found ${current?.mod_rev ?? 0})`, { key });
      }
      if (options.lease && !this.db.prepare('SELECT 1 FROM leases WHERE id = ?').get(options.lease)) {
        throw errors.invalid('lease', `lease '${options.lease}' does not exist or expired`);
      }
      const rev = this.bump();
      const json = JSON.stringify(value);
      this.db
        .prepare('INSERT OR REPLACE INTO kv (key, value, mod_rev, create_rev, lease) VALUES (?, ?, ?, ?, ?)')
        .run(key, json, rev, current?.create_rev ?? rev, options.lease ?? null);
      this.db.prepare('INSERT INTO changes (rev, key, type, value) VALUES (?, ?, ?, ?)').run(rev, key, 'put', json);
      return rev;
    })();
  }

  async delete(key: string, options: { expectRevision?: number } = {}): Promise<boolean> {
    this.expireLeases();
    return this.db.transaction(() => {
      const current = this.db.prepare('SELECT mod_rev FROM kv WHERE key = ?').get(key) as { mod_rev: number } | undefined;
      if (options.expectRevision !== undefined && (current?.mod_rev ?? 0) !== options.expectRevision) {
        throw errors.conflict(`'${key}' changed concurrently`, { key });
      }
      if (!current) return false;
      this.deleteKey(key);
      return true;
    })();
  }

  async revision(): Promise<number> {
    return (this.db.prepare("SELECT value FROM meta WHERE name = 'revision'").get() as { value: number }).value;
  }

  async grantLease(ttlMs: number): Promise<string> {
    const id = randomUUID();
    this.db.prepare('INSERT INTO leases (id, ttl_ms, expires_ms) VALUES (?, ?, ?)').run(id, ttlMs, this.clock.nowMs() + ttlMs);
    return id;
  }

  async keepAlive(lease: string): Promise<void> {
    this.expireLeases();
    const res = this.db.prepare('UPDATE leases SET expires_ms = ? + ttl_ms WHERE id = ?').run(this.clock.nowMs(), lease);
    if (res.changes === 0) throw errors.invalid('lease', `lease '${lease}' does not exist or expired`);
  }

  async revokeLease(lease: string): Promise<void> {
    this.db.transaction(() => this.dropLease(lease))();
  }

  watch(prefix: string, afterRevision: number, onChange: (change: Change) => void): () => void {
    const w = { prefix, after: afterRevision, onChange };
    this.watchers.add(w);
    this.pollTimer ??= setInterval(() => this.poll(), this.pollMs);
    queueMicrotask(() => this.poll());
    return () => {
      this.watchers.delete(w);
      if (this.watchers.size === 0 && this.pollTimer) {
        clearInterval(this.pollTimer);
        this.pollTimer = undefined;
      }
    };
  }

  async close(): Promise<void> {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.watchers.clear();
    this.db.close();
  }

  private poll(): void {
    if (!this.db.open) return;
    this.expireLeases();
    for (const w of this.watchers) {
      const rows = this.db
        .prepare('SELECT rev, key, type, value FROM changes WHERE rev > ? AND key >= ? AND key < ? ORDER BY rev')
        .all(w.after, w.prefix, prefixEnd(w.prefix)) as { rev: number; key: string; type: 'put' | 'delete'; value: string | null }[];
      for (const r of rows) {
        w.after = r.rev;
        const change: Change = { type: r.type, key: r.key, revision: r.rev };
        if (r.value !== null) change.value = JSON.parse(r.value);
        w.onChange(change);
      }
    }
  }

  private bump(): number {
    this.db.prepare("UPDATE meta SET value = value + 1 WHERE name = 'revision'").run();
    const rev = (this.db.prepare("SELECT value FROM meta WHERE name = 'revision'").get() as { value: number }).value;
    if (rev % 1000 === 0) this.db.prepare('DELETE FROM changes WHERE rev <= ?').run(rev - CHANGE_LOG_KEEP);
    return rev;
  }

  private deleteKey(key: string): void {
    const rev = this.bump();
    this.db.prepare('DELETE FROM kv WHERE key = ?').run(key);
    this.db.prepare('INSERT INTO changes (rev, key, type, value) VALUES (?, ?, ?, NULL)').run(rev, key, 'delete');
  }

  private dropLease(lease: string): void {
    const keys = this.db.prepare('SELECT key FROM kv WHERE lease = ?').all(lease) as { key: string }[];
    for (const { key } of keys) this.deleteKey(key);
    this.db.prepare('DELETE FROM leases WHERE id = ?').run(lease);
  }

  private expireLeases(): void {
    const expired = this.db.prepare('SELECT id FROM leases WHERE expires_ms < ?').all(this.clock.nowMs()) as { id: string }[];
    if (expired.length === 0) return;
    this.db.transaction(() => {
      for (const { id } of expired) this.dropLease(id);
    })();
  }
}

interface Row {
  key: string;
  value: string;
  mod_rev: number;
  create_rev: number;
  lease: string | null;
}

function toEntry<T>(row: Row): Entry<T> {
  const e: Entry<T> = { key: row.key, value: JSON.parse(row.value) as T, modRevision: row.mod_rev, createRevision: row.create_rev };
  if (row.lease) e.lease = row.lease;
  return e;
}

/** The smallest string greater than every string starting with `prefix`. */
function prefixEnd(prefix: string): string {
  if (prefix === '') return '\uffff';
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

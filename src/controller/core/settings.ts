/** Cluster settings (`cluster/settings`) and the default migration policy (`cluster/policy`). */
import { effectivePolicy, type MigrationPolicy, POLICY_FIELDS } from '../../domain/policy.js';
import { type ClusterSettings, DEFAULT_SETTINGS, SETTING_NAMES, type SettingName } from '../../domain/settings.js';
import type { EventSink } from '../../ports/events.js';
import type { Logger } from '../../ports/logger.js';
import { insideRoots } from '../../domain/storage-roots.js';
import type { Settings } from '../../ports/settings.js';
import { type ClusterStore, update } from '../../ports/store.js';

export class StoreSettings implements Settings {
  constructor(
    private readonly store: ClusterStore,
    private readonly events: EventSink,
    /** The cluster's shared volume: always a storage root. */
    private readonly sharedVolume: string,
    /** Resolves symbolic links (the Volume's), so a link inside a root cannot lead out of it. */
    private readonly realPath: (p: string) => string = (p) => p,
  ) {}

  async storageRoots(): Promise<string[]> {
    return [this.sharedVolume, ...(await this.get()).storageRoots];
  }

  /** A directory a user named, resolved on this side and confined to the storage roots (symbolic links followed). */
  async confine(given: string, what: string): Promise<string> {
    const roots = await this.storageRoots();
    const dir = insideRoots(given, roots, what);
    insideRoots(
      this.realPath(dir),
      roots.map((r) => this.realPath(r)),
      what,
    );
    return dir;
  }

  async get(): Promise<ClusterSettings> {
    const e = await this.store.get<Partial<ClusterSettings>>('cluster/settings');
    return { ...DEFAULT_SETTINGS, ...known(e?.value, SETTING_NAMES) };
  }

  /**
   * Drops stored keys this Ferry does not know (an older version's setting,
   * a hand edit, a prototype name), each with a warning; run at start.
   */
  async dropUnknown(log: Logger): Promise<void> {
    for (const [key, names, what] of [
      ['cluster/settings', SETTING_NAMES, 'setting'],
      ['cluster/policy', POLICY_FIELDS, 'policy key'],
    ] as const) {
      const stored = (await this.store.get<Record<string, unknown>>(key))?.value;
      if (!stored || typeof stored !== 'object') continue;
      const unknown = Object.keys(stored).filter((k) => !(names as readonly string[]).includes(k));
      if (unknown.length === 0) continue;
      for (const k of unknown) log.warn({ key: k }, `dropped unknown stored ${what} '${k}'`);
      await update<Record<string, unknown>>(this.store, key, (cur) => known(cur, names));
    }
  }

  /** Sets one (already validated) setting; the backup store must lie inside a storage root. */
  async set<K extends SettingName>(name: K, value: ClusterSettings[K]): Promise<ClusterSettings> {
    const before = await this.get();
    if (name === 'backupStore' && value !== '') value = (await this.confine(value as string, 'backupStore')) as ClusterSettings[K];
    const next = await update<ClusterSettings>(this.store, 'cluster/settings', (cur) => ({ ...DEFAULT_SETTINGS, ...(cur ?? {}), [name]: value }));
    await this.events.emit({ type: 'cluster.setting', message: `${name}: ${String(before[name])} → ${String(next[name])}`, data: { name, value: next[name] } });
    return next;
  }

  async policy(): Promise<Partial<MigrationPolicy>> {
    return known((await this.store.get<Partial<MigrationPolicy>>('cluster/policy'))?.value, POLICY_FIELDS);
  }

  /** Replaces the cluster's policy overrides (already validated); `{}` goes back to Ferry's default. */
  async setPolicy(policy: Partial<MigrationPolicy>): Promise<MigrationPolicy> {
    await this.store.put('cluster/policy', policy);
    await this.events.emit({ type: 'cluster.policy', message: `default migration policy: ${JSON.stringify(policy)}`, data: { policy } });
    return effectivePolicy(policy);
  }
}

/** Only the named own keys of a stored object. */
function known<T extends object>(value: T | undefined, names: readonly string[]): Partial<T> {
  if (!value || typeof value !== 'object') return {};
  return Object.fromEntries(Object.entries(value).filter(([k]) => names.includes(k))) as Partial<T>;
}

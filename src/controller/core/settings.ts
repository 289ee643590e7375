/** Cluster settings (`cluster/settings`) and the default migration policy (`cluster/policy`). */
import { effectivePolicy, type MigrationPolicy } from '../../domain/policy.js';
import { type ClusterSettings, DEFAULT_SETTINGS, type SettingName } from '../../domain/settings.js';
import type { EventSink } from '../../ports/events.js';
import type { Settings } from '../../ports/settings.js';
import { type ClusterStore, update } from '../../ports/store.js';

export class StoreSettings implements Settings {
  constructor(
    private readonly store: ClusterStore,
    private readonly events: EventSink,
  ) {}

  async get(): Promise<ClusterSettings> {
    const e = await this.store.get<Partial<ClusterSettings>>('cluster/settings');
    return { ...DEFAULT_SETTINGS, ...(e?.value ?? {}) };
  }

  /** Sets one (already validated) setting. */
  async set<K extends SettingName>(name: K, value: ClusterSettings[K]): Promise<ClusterSettings> {
    const before = await this.get();
    const next = await update<ClusterSettings>(this.store, 'cluster/settings', (cur) => ({ ...DEFAULT_SETTINGS, ...(cur ?? {}), [name]: value }));
    await this.events.emit({ type: 'cluster.setting', message: `${name}: ${String(before[name])} → ${String(next[name])}`, data: { name, value: next[name] } });
    return next;
  }

  async policy(): Promise<Partial<MigrationPolicy>> {
    return (await this.store.get<Partial<MigrationPolicy>>('cluster/policy'))?.value ?? {};
  }

  /** Replaces the cluster's policy overrides (already validated); `{}` goes back to Ferry's default. */
  async setPolicy(policy: Partial<MigrationPolicy>): Promise<MigrationPolicy> {
    await this.store.put('cluster/policy', policy);
    await this.events.emit({ type: 'cluster.policy', message: `default migration policy: ${JSON.stringify(policy)}`, data: { policy } });
    return effectivePolicy(policy);
  }
}

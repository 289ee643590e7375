/** Cluster settings and the default migration policy, as stored. */
import type { MigrationPolicy } from '../domain/policy.js';
import type { ClusterSettings } from '../domain/settings.js';

export interface Settings {
  get(): Promise<ClusterSettings>;
  /** The cluster's overrides of Ferry's default migration policy. */
  policy(): Promise<Partial<MigrationPolicy>>;
}

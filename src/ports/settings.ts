/** Cluster settings and the default migration policy, as stored. */
import type { MigrationPolicy } from '../domain/policy.js';
import type { ClusterSettings } from '../domain/settings.js';

export interface Settings {
  get(): Promise<ClusterSettings>;
  /** The cluster's overrides of Ferry's default migration policy. */
  policy(): Promise<Partial<MigrationPolicy>>;
  /** Where a user may put disks and backups: the shared volume, then the `storageRoots` setting's directories. */
  storageRoots(): Promise<string[]>;
  /** A directory a user named, resolved here and confined to the storage roots; refused naming them otherwise. */
  confine(given: string, what: string): Promise<string>;
}

/**
 * Cluster settings: plain data in the store (`cluster/settings`), each with
 * its own rule (in the API's schemas), changed with `ferry cluster set NAME VALUE`.
 */

export interface ClusterSettings {
  /** Live or quick migrations a node sends or receives at once (R11). */
  migrationsPerNode: number;
  /** Rebalance when the most and least loaded nodes differ by more than this (percentage points). */
  balanceThresholdPct: number;
  /** Rebalance by itself every balanceIntervalS (R14). */
  balanceAuto: boolean;
  /** How often automatic balancing runs; no VM moves more than once per interval. */
  balanceIntervalS: number;
  /** Where backups are written: an absolute directory inside a storage root; '' is the shared volume's backups/ directory. */
  backupStore: string;
  /** How long a guest may take to shut down (`vm stop`, `ferry down`) before it is powered off. */
  shutdownTimeoutS: number;
  /** Directories besides the shared volume that VM disks and backups may be put in (see storage-roots.ts). */
  storageRoots: string[];
  /** A host whose agent has not renewed its lease for this long has failed (its HA VMs restart elsewhere; see ha.ts). */
  hostLeaseTtlS: number;
}

export const DEFAULT_SETTINGS: ClusterSettings = {
  migrationsPerNode: 1,
  balanceThresholdPct: 20,
  balanceAuto: false,
  balanceIntervalS: 300,
  backupStore: '',
  shutdownTimeoutS: 30,
  storageRoots: [],
  hostLeaseTtlS: 8,
};

export type SettingName = keyof ClusterSettings;
export const SETTING_NAMES = Object.keys(DEFAULT_SETTINGS) as SettingName[];

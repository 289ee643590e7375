/**
 * Cluster settings: plain data in the store (`cluster/settings`), each with
 * its own validation, changed with `ferry cluster set NAME VALUE`.
 */
import { errors } from './errors.js';

export interface ClusterSettings {
  /** Live or quick migrations a node sends or receives at once (R11). */
  migrationsPerNode: number;
  /** Rebalance when the most and least loaded nodes differ by more than this (percentage points). */
  balanceThresholdPct: number;
  /** Rebalance by itself every balanceIntervalS (R14). */
  balanceAuto: boolean;
  /** How often automatic balancing runs; no VM moves more than once per interval. */
  balanceIntervalS: number;
  /** Where backups are written: an absolute directory; '' is the shared volume's backups/ directory. */
  backupStore: string;
}

export const DEFAULT_SETTINGS: ClusterSettings = { migrationsPerNode: 1, balanceThresholdPct: 20, balanceAuto: false, balanceIntervalS: 300, backupStore: '' };

function intRule(name: string, min: number, max: number): (raw: unknown) => number {
  return (raw) => {
    const n = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : raw;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      throw errors.invalid(name, `${name} must be a whole number from ${min} to ${max}, got '${String(raw)}'`);
    }
    return n;
  };
}

const RULES: { [K in keyof ClusterSettings]: (raw: unknown) => ClusterSettings[K] } = {
  migrationsPerNode: intRule('migrationsPerNode', 1, 16),
  balanceThresholdPct: intRule('balanceThresholdPct', 1, 100),
  balanceIntervalS: intRule('balanceIntervalS', 5, 86_400),
  backupStore: (raw) => {
    if (raw === '' || raw === 'default') return '';
    const ok = typeof raw === 'string' && raw.startsWith('/') && !/(^|\/)\.\.(\/|$)/.test(raw) && !/^\/(proc|sys|dev)(\/|$)/.test(raw);
    if (!ok) throw errors.invalid('backupStore', `backupStore must be an absolute directory outside /proc, /sys and /dev (or 'default'), got '${String(raw)}'`);
    return raw.replace(/\/+$/, '') || '/';
  },
  balanceAuto: (raw) => {
    if (raw === true || raw === 'true' || raw === 'on') return true;
    if (raw === false || raw === 'false' || raw === 'off') return false;
    throw errors.invalid('balanceAuto', `balanceAuto must be true or false, got '${String(raw)}'`);
  },
};

export function applySetting(current: ClusterSettings, name: string, raw: unknown): ClusterSettings {
  if (!(name in RULES)) {
    throw errors.invalid('setting', `unknown cluster setting '${name}' (known: ${Object.keys(RULES).join(', ')})`);
  }
  const key = name as keyof ClusterSettings;
  return { ...current, [key]: RULES[key](raw) };
}

/**
 * Cluster settings: plain data in the store (`cluster/settings`), each with
 * its own validation, changed with `ferry cluster set NAME VALUE`.
 */
import { errors } from '../errors.js';

export interface ClusterSettings {
  /** Live or quick migrations a node sends or receives at once (R11). */
  migrationsPerNode: number;
  /** Rebalance when the most and least loaded nodes differ by more than this (percentage points). */
  balanceThresholdPct: number;
  /** Rebalance by itself every balanceIntervalS (R14). */
  balanceAuto: boolean;
  /** How often automatic balancing runs; no VM moves more than once per interval. */
  balanceIntervalS: number;
}

export const DEFAULT_SETTINGS: ClusterSettings = { migrationsPerNode: 1, balanceThresholdPct: 20, balanceAuto: false, balanceIntervalS: 300 };

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

/**
 * Cluster settings: plain data in the store (`cluster/settings`), each with
 * its own validation, changed with `ferry cluster set NAME VALUE`.
 */
import { errors } from '../errors.js';

export interface ClusterSettings {
  /** Live or quick migrations a node sends or receives at once (R11). */
  migrationsPerNode: number;
}

export const DEFAULT_SETTINGS: ClusterSettings = { migrationsPerNode: 1 };

const RULES: { [K in keyof ClusterSettings]: (raw: unknown) => ClusterSettings[K] } = {
  migrationsPerNode: (raw) => {
    const n = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : raw;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 16) {
      throw errors.invalid('migrationsPerNode', `migrationsPerNode must be a whole number from 1 to 16, got '${String(raw)}'`);
    }
    return n;
  },
};

export function applySetting(current: ClusterSettings, name: string, raw: unknown): ClusterSettings {
  if (!(name in RULES)) {
    throw errors.invalid('setting', `unknown cluster setting '${name}' (known: ${Object.keys(RULES).join(', ')})`);
  }
  const key = name as keyof ClusterSettings;
  return { ...current, [key]: RULES[key](raw) };
}

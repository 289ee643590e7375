/**
 * The cluster's identity and membership, written once by `ferry up` to
 * cluster.json in the state directory, and the daemon endpoint files.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { writeFileAtomic } from '../system/json-file.js';
import type { ClusterNetwork } from '../domain/networks.js';
import type { StateLayout } from './paths.js';

import { type ClusterConfig, type NodeMember, type StoreConfig, nodeName } from '../domain/cluster.js';
export { type ClusterConfig, type NodeMember, type StoreConfig, nodeName };

export interface DaemonEndpoint {
  pid: number;
  url: string;
  /** A controller that stands by: it answers at `url` by forwarding to the leader. */
  standby?: boolean;
}

export function defaultMembers(count: number, networks: ClusterNetwork[], memoryMiB?: number): NodeMember[] {
  const migration = networks.find((n) => n.role === 'migration');
  return Array.from({ length: count }, (_, k) => {
    const name = nodeName(k + 1);
    const m: NodeMember = { name, migrationAddress: migration?.addresses[name] ?? '127.0.0.1' };
    if (memoryMiB) m.memoryMiB = memoryMiB;
    return m;
  });
}

export function readConfig(layout: StateLayout): ClusterConfig | undefined {
  try {
    return JSON.parse(fs.readFileSync(layout.cluster, 'utf8')) as ClusterConfig;
  } catch {
    return undefined;
  }
}

export function writeConfig(
  layout: StateLayout,
  nodes: NodeMember[],
  networks: ClusterNetwork[] = [],
  controllerPort?: number,
  store?: StoreConfig,
): ClusterConfig {
  const config: ClusterConfig = {
    id: randomUUID(),
    name: 'ferry',
    createdAtMs: Date.now(),
    nodes,
    vmSubnet: '10.99.0.0/16',
    networks,
    ...(controllerPort !== undefined ? { controllerPort } : {}),
    ...(store ? { store } : {}),
  };
  fs.writeFileSync(layout.cluster, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
  return config;
}

/** Rewrites cluster.json atomically (membership changed). */
export function saveConfig(layout: StateLayout, config: ClusterConfig): void {
  writeFileAtomic(layout.cluster, JSON.stringify(config, null, 2) + '\n', 0o600);
}

/** One node's address on each network. */
export function memberAddresses(config: ClusterConfig, node: string): { network: string; address: string }[] {
  return (config.networks ?? []).flatMap((n) => (n.addresses[node] ? [{ network: n.name, address: n.addresses[node]! }] : []));
}

export function readToken(layout: StateLayout): string | undefined {
  try {
    return fs.readFileSync(layout.token, 'utf8').trim();
  } catch {
    return undefined;
  }
}

export function ensureToken(layout: StateLayout): string {
  const existing = readToken(layout);
  if (existing) return existing;
  const token = randomBytes(24).toString('hex');
  fs.writeFileSync(layout.token, token + '\n', { mode: 0o600 });
  return token;
}

export function readEndpoint(layout: StateLayout, daemon: string): DaemonEndpoint | undefined {
  try {
    return JSON.parse(fs.readFileSync(layout.daemonFile(daemon), 'utf8')) as DaemonEndpoint;
  } catch {
    return undefined;
  }
}

export function writeEndpoint(layout: StateLayout, daemon: string, endpoint: DaemonEndpoint): void {
  writeFileAtomic(layout.daemonFile(daemon), JSON.stringify(endpoint), 0o600);
}

/** The cluster configuration in cluster.json, kept in memory and saved atomically when membership changes. */
export class FileConfigStore {
  private config: ClusterConfig;
  constructor(
    private readonly layout: StateLayout,
    initial: ClusterConfig,
  ) {
    this.config = initial;
  }
  current(): ClusterConfig {
    return this.config;
  }
  save(config: ClusterConfig): void {
    this.config = config;
    saveConfig(this.layout, config);
  }
}

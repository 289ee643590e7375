/**
 * A host's own files on a cluster of real hosts (`ferry init`, `ferry
 * join`, `ferry login`), all in its state directory:
 *
 *   host.json     this host: its name, the controllers' URLs, the shared
 *                 volume's mount point, its address on each cluster network
 *   client.json   the CLI's controller URL, API token and the cluster's CA
 *   pki/          ca.crt; ca.key on the controller host; host.key/host.crt
 *                 (the agent), controller.key/controller.crt (the controller)
 *
 * Nothing here is shared between hosts: a host finds the controller from
 * host.json, never from another host's files.
 */
import fs from 'node:fs';
import { readJsonFile, writeFileAtomic } from '../system/json-file.js';
import type { NicBackend } from '../domain/nic.js';
import { StateLayout } from '../domain/layout.js';
import type { ClientTls, ServerTls } from '../api/tls.js';

export interface HostConfig {
  clusterId: string;
  clusterName: string;
  /** This host's name in the cluster (its node name). */
  name: string;
  /** The controllers' API URLs (https), tried in order. */
  controllers: string[];
  /** Where the cluster's shared volume is mounted on this host. */
  shared: string;
  /** This host's address on each cluster network, and the interface that holds it. */
  addresses: { network: string; address: string; iface?: string }[];
  migrationAddress: string;
  nicBackend: NicBackend;
  memoryMiB?: number;
  cpuModel?: string;
}

export interface ClientConfig {
  url: string;
  token: string;
  caPem: string;
  /** Every controller's URL (from the login): tried in turn when the one asked does not answer. */
  controllers?: string[];
}

/** Written whole or not at all, for its owner only. */
export function writePrivate(file: string, text: string): void {
  writeFileAtomic(file, text, 0o600);
}

export function readHostConfig(layout: StateLayout): HostConfig | undefined {
  return readJsonFile<HostConfig>(layout.hostConfig);
}

export function writeHostConfig(layout: StateLayout, config: HostConfig): void {
  writePrivate(layout.hostConfig, JSON.stringify(config, null, 2) + '\n');
}

export function readClientConfig(layout: StateLayout): ClientConfig | undefined {
  return readJsonFile<ClientConfig>(layout.clientConfig);
}

/** The controllers a CLI asks, in the order it asks them: the one it logged in at first, then the others. */
export function controllerUrls(client: ClientConfig): string[] {
  return [...new Set([client.url, ...(client.controllers ?? [])])];
}

export function writeClientConfig(layout: StateLayout, config: ClientConfig): void {
  writePrivate(layout.clientConfig, JSON.stringify(config, null, 2) + '\n');
}

/** The state directory's layout, with the shared volume where this host mounts it. */
export function openLayout(dir: string): StateLayout {
  const plain = new StateLayout(dir);
  const host = readHostConfig(plain);
  return host ? new StateLayout(dir, host.shared) : plain;
}

function readPem(layout: StateLayout, name: string): string | undefined {
  try {
    return fs.readFileSync(layout.pkiFile(name), 'utf8');
  } catch {
    return undefined;
  }
}

export function writePki(layout: StateLayout, files: Record<string, string>): void {
  fs.mkdirSync(layout.pki, { recursive: true, mode: 0o700 });
  fs.chmodSync(layout.pki, 0o700);
  for (const [name, pem] of Object.entries(files)) writePrivate(layout.pkiFile(name), pem);
}

export function readCaPem(layout: StateLayout): string | undefined {
  return readPem(layout, 'ca.crt');
}

/** The CA's key: only on the host that made the cluster. */
export function readCaKey(layout: StateLayout): string | undefined {
  return readPem(layout, 'ca.key');
}

/** A role's certificate and key with the cluster's CA, if this host holds them. */
function identity(layout: StateLayout, role: 'host' | 'controller'): { certPem: string; keyPem: string; caPem: string } | undefined {
  const certPem = readPem(layout, `${role}.crt`);
  const keyPem = readPem(layout, `${role}.key`);
  const caPem = readPem(layout, 'ca.crt');
  return certPem && keyPem && caPem ? { certPem, keyPem, caPem } : undefined;
}

/** What the role's daemon serves HTTPS with: agents only talk to clients with a certificate, controllers to anyone with a certificate or a token. */
export function serverTls(layout: StateLayout, role: 'host' | 'controller'): ServerTls | undefined {
  const id = identity(layout, role);
  return id ? { ...id, requireClientCert: role === 'host' } : undefined;
}

/** What the role's daemon calls other daemons with. */
export function clientTls(layout: StateLayout, role: 'host' | 'controller'): ClientTls | undefined {
  return identity(layout, role);
}

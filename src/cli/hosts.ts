/**
 * A cluster of real hosts: `ferry init` makes it on the first host (its CA,
 * its configuration, the store, the controller and that host's agent),
 * `ferry join` adds a host over the network with a join token, `ferry login`
 * gives a CLI the API token and the CA with a login token.
 *
 * A newcomer trusts the controller only after checking that the CA it is
 * shown is the one its token names (the token carries the CA's fingerprint),
 * and every later call verifies the controller's certificate against it.
 * A host's private key never leaves the host. Nothing is written before the
 * controller said yes, so a refused join leaves nothing behind.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { ApiClient, type Fetch } from '../api/client.js';
import { joinRoutes } from '../api/routes/join.js';
import { nodeRoutes } from '../api/routes/nodes.js';
import { tlsFetch, unverifiedFetch } from '../api/tls.js';
import type { ClusterConfig } from '../config/cluster-config.js';
import { ensureToken, readEndpoint } from '../config/cluster-config.js';
import {
  type HostConfig,
  controllerUrls,
  readClientConfig,
  readHostConfig,
  writeClientConfig,
  writeHostConfig,
  writePki,
  writePrivate,
} from '../config/host-config.js';
import { errors } from '../domain/errors.js';
import { parseToken, type TokenKind } from '../domain/join-token.js';
import { StateLayout } from '../domain/layout.js';
import { type ClusterNetwork, type NetworkRole, NETWORK_ROLES, inSubnet } from '../domain/networks.js';
import type { NicBackend } from '../domain/nic.js';
import { ensureImage } from '../guest/image.js';
import { defaultRouteInterface, hostAddresses } from '../node/net-tools.js';
import { readVolumeMark } from '../node/volume-mark.js';
import { pidAlive } from '../system/process.js';
import { createAuthority, fingerprint, generateKeyPair, issueCertificate } from '../system/pki.js';
import { DEFAULT_CONTROLLER_PORT, daemonAlive, down, lastLogLine, spawnDaemon, waitUntil } from './daemons.js';

/** A network as `--network NAME=CIDR[:ROLE]` gives it. */
export interface NetworkSpec {
  name: string;
  subnet: string;
  role: NetworkRole;
}

export function parseNetworkSpec(text: string): NetworkSpec {
  const m = /^([a-z][a-z0-9-]{0,30})=(\d{1,3}(?:\.\d{1,3}){3}\/\d{1,2})(?::([a-z]+))?$/.exec(text);
  if (!m) throw errors.usage(`--network ${text.slice(0, 64)}: expected NAME=CIDR[:ROLE], e.g. migration=10.0.2.0/24:migration`);
  const [, name, subnet, roleText] = m;
  const role = (roleText ?? (NETWORK_ROLES as readonly string[]).find((r) => r === name) ?? 'none') as NetworkRole;
  if (!(NETWORK_ROLES as readonly string[]).includes(role)) throw errors.usage(`--network ${text}: the role must be one of ${NETWORK_ROLES.join(', ')}`);
  return { name: name!, subnet: subnet!, role };
}

/** `--address NAME=ADDR` pairs. */
export function parseAddressSpecs(texts: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of texts) {
    const m = /^([a-z][a-z0-9-]{0,30})=(\d{1,3}(?:\.\d{1,3}){3})$/.exec(t);
    if (!m) throw errors.usage(`--address ${t.slice(0, 64)}: expected NETWORK=ADDRESS, e.g. migration=10.0.2.12`);
    out[m[1]!] = m[2]!;
  }
  return out;
}

/** This host's address in each network: the one given, or the one an interface holds in the network's subnet. */
type HostAddress = Awaited<ReturnType<typeof hostAddresses>>[number];

function ownAddresses(networks: { name: string; subnet: string }[], given: Record<string, string>, mine: HostAddress[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of networks) {
    const address = given[n.name] ?? mine.find((a) => inSubnet(a.address, n.subnet))?.address;
    if (!address) throw errors.invalid('address', `this host has no address in network ${n.name} (${n.subnet}); give one with --address ${n.name}=ADDRESS`);
    if (!inSubnet(address, n.subnet)) throw errors.invalid('address', `${address} is not in network ${n.name} (${n.subnet})`);
    out[n.name] = address;
  }
  for (const k of Object.keys(given))
    if (!networks.some((n) => n.name === k))
      throw errors.invalid('address', `the cluster has no network '${k}' (it has ${networks.map((n) => n.name).join(', ')})`);
  return out;
}

/** Each address with the interface that holds it, as host.json records them. */
function withInterfaces(list: { network: string; address: string }[], mine: HostAddress[]): { network: string; address: string; iface?: string }[] {
  return list.map((a) => {
    const iface = mine.find((m) => m.address === a.address)?.iface;
    return iface ? { ...a, iface } : a;
  });
}

/** The management network when none is given: the subnet of the default route's interface. */
async function defaultManagement(mine: HostAddress[]): Promise<NetworkSpec> {
  const dev = await defaultRouteInterface();
  const a = mine.find((x) => x.iface === dev && x.iface !== 'lo');
  if (!a) throw errors.usage('this host has no default route to take the management network from; give it with --network management=CIDR');
  const mask = a.prefixLength === 0 ? 0 : (0xffffffff << (32 - a.prefixLength)) >>> 0;
  const n = a.address.split('.').reduce((v, p) => v * 256 + Number(p), 0) & mask;
  const base = [24, 16, 8, 0].map((s) => ((n >>> 0) >>> s) & 255).join('.');
  return { name: 'management', subnet: `${base}/${a.prefixLength}`, role: 'management' };
}

function refuseExisting(layout: StateLayout): void {
  if (fs.existsSync(layout.hostConfig)) throw errors.invalidState(`${layout.dir} belongs to a cluster already (${layout.hostConfig}); use another --state`);
  if (fs.existsSync(layout.cluster)) throw errors.invalidState(`${layout.dir} holds a cluster already (${layout.cluster}); use another --state`);
}

function prepareDirs(layout: StateLayout): void {
  for (const d of [layout.dir, layout.logs, layout.run]) {
    fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    fs.chmodSync(d, 0o700);
  }
}

function checkShared(shared: string): void {
  if (!path.isAbsolute(shared)) throw errors.usage(`--shared ${shared}: the shared volume's mount point must be an absolute path`);
  if (!fs.existsSync(shared) || !fs.statSync(shared).isDirectory())
    throw errors.invalid('shared', `${shared} is not a directory (mount the cluster's shared volume there first)`);
}

/**
 * Starts this host's missing daemons all at once and waits until each wrote its endpoint: each waits for the
 * one it needs by itself (the controller for the switch, an agent for a controller), as `ferry up` starts them.
 */
async function startHostDaemons(layout: StateLayout, names: { role: 'switch' | 'controller' | 'agent'; name: string }[], progress: (l: string) => void) {
  await ensureImage(progress);
  const started = names
    .filter((d) => !daemonAlive(layout, d.name))
    .map((d) => {
      progress(`starting ${d.name}`);
      return { ...d, pid: spawnDaemon(layout, d.role, d.name) };
    });
  await Promise.all(
    started.map((d) =>
      waitUntil(
        () => {
          if (daemonAlive(layout, d.name)) return true;
          if (!pidAlive(d.pid)) throw errors.internal(`${d.name} did not start: ${lastLogLine(layout, d.name)} (see ${layout.daemonLog(d.name)})`);
          return false;
        },
        60_000,
        `starting ${d.name} (see ${layout.daemonLog(d.name)})`,
      ),
    ),
  );
}

/**
 * Waits until a controller (any of `urls`: a standby forwards to the leader) hears host `name` at its agent's URL:
 * up, or in maintenance (an operator's state that a restart keeps).
 */
async function waitForNode(urls: string[], token: string, fetch: Fetch, name: string, url: () => string | undefined): Promise<void> {
  const apis = urls.map((baseUrl) => new ApiClient({ baseUrl, token, fetch, timeoutMs: 5000 }));
  let at = 0;
  await waitUntil(
    async () => {
      const api = apis[at++ % apis.length]!;
      const nodes = await api.call(nodeRoutes.list, {}).catch(() => []);
      return nodes.some((n) => n.name === name && n.state !== 'down' && n.url === url());
    },
    60_000,
    `host ${name} to report to the controller`,
  );
}

export interface InitOptions {
  name?: string;
  shared: string;
  networks: NetworkSpec[];
  addresses: Record<string, string>;
  port?: number;
  etcd?: string[];
  nicBackend?: NicBackend;
  memoryMiB?: number;
  /** Write everything but leave starting the daemons to a service manager. */
  start: boolean;
  progress?: (line: string) => void;
}

export interface InitResult {
  clusterId: string;
  name: string;
  url: string;
  fingerprint: string;
  started: boolean;
}

/** `ferry init`: a new cluster with this host as its first member and its controller. */
export async function initCluster(layout: StateLayout, o: InitOptions): Promise<InitResult> {
  const progress = o.progress ?? (() => {});
  refuseExisting(layout);
  checkShared(o.shared);
  const name = o.name ?? os.hostname();
  // The host's interfaces and addresses, read once.
  const mine = await hostAddresses();
  const specs = o.networks.some((n) => n.role === 'management') ? o.networks : [await defaultManagement(mine), ...o.networks];
  for (const [i, n] of specs.entries()) if (specs.findIndex((x) => x.name === n.name) !== i) throw errors.usage(`--network ${n.name} is given twice`);
  const addresses = ownAddresses(specs, o.addresses, mine);
  const management = specs.find((n) => n.role === 'management')!;
  const migration = specs.find((n) => n.role === 'migration') ?? management;
  const mgmtAddress = addresses[management.name]!;
  const uplink = mine.find((a) => a.address === mgmtAddress)?.iface;
  const port = o.port ?? DEFAULT_CONTROLLER_PORT;
  const url = `https://${mgmtAddress}:${port}`;
  const nicBackend = o.nicBackend ?? 'bridge';

  const id = randomUUID();
  const networks: ClusterNetwork[] = specs.map((n) => ({
    name: n.name,
    subnet: n.subnet,
    role: n.role,
    metric: n.role === 'migration' ? 100 : n.role === 'storage' ? 500 : 1000,
    addresses: { [name]: addresses[n.name]! },
  }));
  const config: ClusterConfig = {
    id,
    name: 'ferry',
    createdAtMs: Date.now(),
    nodes: [{ name, migrationAddress: addresses[migration.name]!, nicBackend, ...(o.memoryMiB ? { memoryMiB: o.memoryMiB } : {}) }],
    vmSubnet: '10.99.0.0/16',
    networks,
    controllerPort: port,
    controllerAddress: mgmtAddress,
    ...(uplink && uplink !== 'lo' ? { defaultUplink: uplink } : {}),
    ...(o.etcd ? { store: { backend: 'etcd' as const, endpoints: o.etcd } } : {}),
  };
  const host: HostConfig = {
    clusterId: id,
    clusterName: config.name,
    name,
    controllers: [url],
    shared: o.shared,
    addresses: withInterfaces(
      networks.map((n) => ({ network: n.name, address: addresses[n.name]! })),
      mine,
    ),
    migrationAddress: addresses[migration.name]!,
    nicBackend,
    ...(o.memoryMiB ? { memoryMiB: o.memoryMiB } : {}),
  };

  progress('making the cluster CA and certificates');
  const ca = createAuthority(id, config.name);
  const controllerKey = generateKeyPair();
  const hostKey = generateKeyPair();
  const all = Object.values(addresses);
  const controllerCert = issueCertificate(ca, { publicKeyPem: controllerKey.publicKeyPem, name, role: 'controller', clusterId: id, addresses: all });
  const hostCert = issueCertificate(ca, { publicKeyPem: hostKey.publicKeyPem, name, role: 'host', clusterId: id, addresses: all });

  prepareDirs(layout);
  for (const d of ['disks', 'consoles', 'states', 'overlays']) fs.mkdirSync(path.join(o.shared, d), { recursive: true, mode: 0o700 });
  writePki(layout, {
    'ca.crt': ca.certPem,
    'ca.key': ca.keyPem,
    'controller.crt': controllerCert,
    'controller.key': controllerKey.privateKeyPem,
    'host.crt': hostCert,
    'host.key': hostKey.privateKeyPem,
  });
  const token = ensureToken(layout);
  writePrivate(layout.cluster, JSON.stringify(config, null, 2) + '\n');
  writeHostConfig(layout, host);
  writeClientConfig(layout, { url, token, caPem: ca.certPem });
  const result: InitResult = { clusterId: id, name, url, fingerprint: fingerprint(ca.certPem), started: false };
  if (!o.start) return result;
  const hostLayout = new StateLayout(layout.dir, o.shared);
  const fetch = tlsFetch({ caPem: ca.certPem });
  try {
    await startHostDaemons(
      hostLayout,
      [
        { role: 'switch', name: 'switch' },
        { role: 'controller', name: 'controller' },
        { role: 'agent', name },
      ],
      progress,
    );
    progress(`waiting for ${name} to report`);
    await waitForNode([url], token, fetch, name, () => readEndpoint(hostLayout, name)?.url);
  } catch (e) {
    // Nothing half-made: the daemons stop and the files go, so `ferry init` can run again.
    await undo(hostLayout, [
      layout.cluster,
      layout.hostConfig,
      layout.clientConfig,
      layout.token,
      layout.pki,
      ...['', '-wal', '-shm'].map((x) => layout.store + x),
    ]);
    throw e;
  } finally {
    await fetch.close();
  }
  return { ...result, started: true };
}

/**
 * The controller at `url` as a newcomer first sees it: without trusting its
 * certificate yet, it fetches the CA and checks it against the token's
 * fingerprint; everything after goes over TLS verified against that CA.
 */
async function trustedController(url: string, tokenText: string, kind: TokenKind) {
  const parsed = parseToken(tokenText, kind);
  if ('error' in parsed) throw errors.usage(parsed.error);
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw errors.usage(`${url} is not a URL (expected https://HOST:PORT)`);
  }
  if (base.protocol !== 'https:') throw errors.usage(`${url}: a cluster of real hosts speaks HTTPS (https://HOST:PORT)`);
  const insecure = unverifiedFetch();
  let info;
  try {
    info = await new ApiClient({ baseUrl: base.origin, fetch: insecure, timeoutMs: 10_000 }).call(joinRoutes.info, {});
  } finally {
    await insecure.close();
  }
  if (fingerprint(info.caPem) !== parsed.fingerprint)
    throw errors.unauthorized(`the controller at ${base.origin} does not hold the CA the token was made with (wrong URL, or someone in between)`);
  const fetch = tlsFetch({ caPem: info.caPem });
  return { info, fetch, api: new ApiClient({ baseUrl: base.origin, fetch, timeoutMs: 30_000 }), origin: base.origin };
}

export interface JoinOptions {
  name?: string;
  shared: string;
  addresses: Record<string, string>;
  nicBackend?: NicBackend;
  memoryMiB?: number;
  cpuModel?: string;
  /** Run a controller here too (standby until it leads). */
  controller?: boolean;
  start: boolean;
  progress?: (line: string) => void;
}

/** Stops whatever this host started and removes the files a failed init or join wrote. */
async function undo(layout: StateLayout, files: string[]): Promise<void> {
  await down(layout, { shutdownTimeoutS: 0, force: true }).catch(() => {});
  for (const f of files) fs.rmSync(f, { recursive: true, force: true });
}

/** `ferry join URL --token T`: this host becomes a member, gets its certificate and starts its agent. */
export async function joinCluster(
  layout: StateLayout,
  url: string,
  token: string,
  o: JoinOptions,
): Promise<{ name: string; clusterId: string; started: boolean }> {
  const progress = o.progress ?? (() => {});
  refuseExisting(layout);
  checkShared(o.shared);
  const { info: joinInfo, api, fetch, origin } = await trustedController(url, token, 'join');
  const info = { ...joinInfo, url: origin };
  try {
    const name = o.name ?? os.hostname();
    const mine = await hostAddresses();
    const addresses = ownAddresses(info.networks, o.addresses, mine);
    const keys = generateKeyPair();
    const controllerKeys = o.controller ? generateKeyPair() : undefined;
    progress(`joining ${info.clusterName} (${info.clusterId}) as ${name}${o.controller ? ', with a controller' : ''}`);
    const answer = await api.call(joinRoutes.join, {
      body: {
        token,
        name,
        publicKeyPem: keys.publicKeyPem,
        addresses,
        volume: readVolumeMark(o.shared),
        ...(o.nicBackend ? { nicBackend: o.nicBackend } : {}),
        ...(o.memoryMiB ? { memoryMiB: o.memoryMiB } : {}),
        ...(o.cpuModel ? { cpuModel: o.cpuModel } : {}),
        ...(controllerKeys ? { controllerPublicKeyPem: controllerKeys.publicKeyPem } : {}),
      },
    });
    prepareDirs(layout);
    writePki(layout, { 'ca.crt': answer.caPem, 'host.crt': answer.certPem, 'host.key': keys.privateKeyPem });
    if (answer.controller && controllerKeys) {
      // What this host's controller runs on: the cluster's configuration (the store's copy wins once it leads),
      // the API token, the CA's key (a leader signs joining hosts) and its own certificate.
      writePki(layout, { 'ca.key': answer.controller.caKeyPem, 'controller.crt': answer.controller.certPem, 'controller.key': controllerKeys.privateKeyPem });
      writePrivate(layout.cluster, JSON.stringify(answer.controller.config, null, 2) + '\n');
      writePrivate(layout.token, answer.apiToken + '\n');
    }
    // The CLI on this host talks to the controller like the first host's.
    writeClientConfig(layout, { url: answer.controllers[0] ?? info.url, token: answer.apiToken, caPem: answer.caPem });
    writeHostConfig(layout, {
      clusterId: answer.clusterId,
      clusterName: answer.clusterName,
      name,
      controllers: answer.controllers,
      shared: o.shared,
      addresses: withInterfaces(
        info.networks.map((n) => ({ network: n.name, address: addresses[n.name]! })),
        mine,
      ),
      migrationAddress: answer.migrationAddress,
      nicBackend: o.nicBackend ?? 'bridge',
      ...(o.memoryMiB ? { memoryMiB: o.memoryMiB } : {}),
      ...(o.cpuModel ? { cpuModel: o.cpuModel } : {}),
    });
    if (!o.start) return { name, clusterId: answer.clusterId, started: false };
    const hostLayout = new StateLayout(layout.dir, o.shared);
    try {
      await startHostDaemons(hostLayout, hostDaemons(hostLayout, name), progress);
    } catch (e) {
      // The agent did not start: the host leaves again, and its files go, so `ferry join` can run again (with a new token).
      await new ApiClient({ baseUrl: info.url, token: answer.apiToken, fetch, timeoutMs: 10_000 })
        .call(nodeRoutes.remove, { params: { name } })
        .catch(() => {});
      await undo(hostLayout, [layout.hostConfig, layout.clientConfig, layout.pki, ...(answer.controller ? [layout.cluster, layout.token] : [])]);
      throw e;
    }
    return { name, clusterId: answer.clusterId, started: true };
  } finally {
    await fetch.close();
  }
}

/** `ferry login URL --token T`: this CLI gets the API token and the cluster's CA. */
export async function login(layout: StateLayout, url: string, token: string): Promise<{ url: string }> {
  const { api, fetch, origin } = await trustedController(url, token, 'login');
  try {
    const answer = await api.call(joinRoutes.login, { body: { token } });
    fs.mkdirSync(layout.dir, { recursive: true, mode: 0o700 });
    writeClientConfig(layout, {
      url: origin,
      token: answer.token,
      caPem: answer.caPem,
      ...(answer.controllers?.length ? { controllers: answer.controllers } : {}),
    });
    return { url: origin };
  } finally {
    await fetch.close();
  }
}

/** A host's own daemons: the switch and a controller on a host that runs one (the first, or one joined with --controller), and its agent. */
function hostDaemons(layout: StateLayout, name: string): { role: 'switch' | 'controller' | 'agent'; name: string }[] {
  const controller = fs.existsSync(layout.cluster);
  return [
    ...(controller
      ? [
          { role: 'switch' as const, name: 'switch' },
          { role: 'controller' as const, name: 'controller' },
        ]
      : []),
    { role: 'agent' as const, name },
  ];
}

/**
 * `ferry up` on a host of a cluster of real hosts (without systemd, or after
 * `ferry down`): starts whichever of this host's own daemons is not running
 * (the switch and controller too on the first host), nothing of any other host.
 */
export async function startHost(layout: StateLayout, progress: (line: string) => void = () => {}): Promise<{ name: string; started: string[] }> {
  const host = readHostConfig(layout);
  if (!host) throw errors.invalidState(`${layout.dir} is not a host of a cluster of real hosts (no host.json)`);
  const daemons = hostDaemons(layout, host.name);
  const missing = daemons.filter((d) => !daemonAlive(layout, d.name));
  await startHostDaemons(layout, missing, progress);
  // As `ferry init` and the local `ferry up`: done once the controller hears this host, not when its agent listens.
  const client = missing.length ? readClientConfig(layout) : undefined;
  if (client) {
    const fetch = tlsFetch({ caPem: client.caPem });
    try {
      progress(`waiting for ${host.name} to report`);
      await waitForNode(controllerUrls(client), client.token, fetch, host.name, () => readEndpoint(layout, host.name)?.url);
    } finally {
      await fetch.close();
    }
  }
  return { name: host.name, started: missing.map((d) => d.name) };
}

/**
 * Starting and stopping a local cluster's daemons (`ferry up` / `ferry down`).
 * Each daemon runs detached with its log in logs/; run/<name>.json says it is
 * ready. `up` starts only what is missing, so it also restarts a dead agent.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ApiClient } from '../api/client.js';
import { nodeRoutes } from '../api/routes/nodes.js';
import { clusterRoutes } from '../api/routes/cluster.js';
import {
  type ClusterConfig,
  type NodeMember,
  defaultMembers,
  ensureToken,
  nodeName,
  readConfig,
  readEndpoint,
  readToken,
  writeConfig,
} from '../config/cluster-config.js';
import { errors } from '../domain/errors.js';
import { defaultNetworks, randomBlock } from '../domain/networks.js';
import { ensureImage } from '../guest/image.js';
import type { NodeRecord } from '../domain/records.js';
import { StateLayout, projectRoot } from '../config/paths.js';
import { killStaleStorageDaemons } from '../qemu/backup-job.js';
import { pidAlive } from '../qemu/qemu-vm.js';
import type { NicBackend } from '../domain/nic.js';
import { deleteLinks, removeUplinks } from '../node/tap-uplink.js';
import { readCaPem, readHostConfig } from '../config/host-config.js';
import { tlsFetch } from '../api/tls.js';

export interface UpOptions {
  nodes?: number;
  nodeMemoryMiB?: number;
  cpuModels?: string[];
  nicBackends?: NicBackend[];
  /** The controller's port on a new cluster (default 8470; 0: any free port). */
  port?: number;
  /** A new cluster keeps its state in these etcd members instead of the SQLite file. */
  etcd?: string[];
  progress?: (line: string) => void;
}

/** The controller's port unless `ferry up --port` says otherwise. */
export const DEFAULT_CONTROLLER_PORT = 8470;

export interface UpResult {
  alreadyRunning: boolean;
  started: string[];
  config: ClusterConfig;
  controllerUrl: string;
  /** VMs their start action started (after `ferry down`), and those that could not start. */
  startActions: { started: string[]; failed: { vm: string; error: string }[] };
}

function daemonNames(config: ClusterConfig): string[] {
  return ['switch', 'controller', ...config.nodes.map((n) => n.name)];
}

export function daemonAlive(layout: StateLayout, name: string): boolean {
  const e = readEndpoint(layout, name);
  return e !== undefined && pidAlive(e.pid);
}

/** Starts a daemon detached; returns its pid. */
export function spawnDaemon(layout: StateLayout, role: string, name: string): number {
  const out = fs.openSync(layout.daemonLog(name), 'a', 0o600);
  const args = [path.join(projectRoot(), 'dist', 'src', 'daemon', 'main.js'), role, '--state', layout.dir];
  if (role === 'agent') args.push('--node', name);
  fs.rmSync(layout.daemonFile(name), { force: true });
  // The daemon's umask (0077, set in daemon/main.ts) makes what it and its QEMUs create 0600/0700.
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out, out], env: process.env });
  fs.closeSync(out);
  child.unref();
  return child.pid ?? -1;
}

/** The last line a daemon logged (its error when it died starting), at most 300 characters. */
export function lastLogLine(layout: StateLayout, name: string): string {
  try {
    const lines = fs.readFileSync(layout.daemonLog(name), 'utf8').trim().split('\n');
    const last = lines.at(-1) ?? '';
    let msg = last;
    try {
      msg = String((JSON.parse(last) as { msg?: unknown }).msg ?? last);
    } catch {
      /* not a JSON log line */
    }
    return msg.replace(/^error: /, '').slice(0, 300);
  } catch {
    return 'no log';
  }
}

export async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw errors.timeout(what, timeoutMs);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function up(layout: StateLayout, opts: UpOptions = {}): Promise<UpResult> {
  const progress = opts.progress ?? (() => {});
  // Everything of a cluster is its owner's alone (disks, consoles, logs, the store, the token).
  for (const d of [layout.dir, layout.logs, layout.shared, layout.disks, layout.consoles, layout.run]) {
    fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    fs.chmodSync(d, 0o700);
  }
  fs.mkdirSync(layout.switchDir, { recursive: true, mode: 0o700 });
  const token = ensureToken(layout);
  let config = readConfig(layout);
  if (!config) {
    const count = opts.nodes ?? 3;
    const networks = defaultNetworks(
      Array.from({ length: count }, (_, k) => nodeName(k + 1)),
      randomBlock(),
    );
    const members: NodeMember[] = defaultMembers(count, networks, opts.nodeMemoryMiB);
    opts.cpuModels?.forEach((model, i) => {
      if (members[i]) members[i]!.cpuModel = model;
    });
    opts.nicBackends?.forEach((backend, i) => {
      if (members[i]) members[i]!.nicBackend = backend;
    });
    config = writeConfig(layout, members, networks, opts.port ?? DEFAULT_CONTROLLER_PORT, opts.etcd ? { backend: 'etcd', endpoints: opts.etcd } : undefined);
  } else if (opts.etcd && opts.etcd.join(',') !== (config.store?.endpoints ?? []).join(',')) {
    const now = config.store ? `etcd at ${config.store.endpoints.join(',')}` : 'the SQLite file in the state directory';
    throw errors.invalid('etcd', `the cluster in ${layout.dir} keeps its state in ${now}; --etcd applies only when a cluster is created`);
  }
  const names = daemonNames(config);
  const missing = names.filter((n) => !daemonAlive(layout, n));
  if (missing.length === 0) {
    return { alreadyRunning: true, started: [], config, controllerUrl: readEndpoint(layout, 'controller')!.url, startActions: { started: [], failed: [] } };
  }
  await ensureImage(progress);
  // All at once: the controller waits for the switch's endpoint and each agent for the controller's.
  for (const name of missing) {
    const role = name === 'switch' || name === 'controller' ? name : 'agent';
    progress(`starting ${name}`);
    spawnDaemon(layout, role, name);
  }
  for (const name of missing.filter((n) => n === 'switch' || n === 'controller')) {
    // Wait for its URL too: on etcd a controller listens once it stands for leader (a standby answers by forwarding).
    await waitUntil(() => daemonAlive(layout, name) && readEndpoint(layout, name)?.url !== '', 20_000, `starting ${name} (see ${layout.daemonLog(name)})`);
  }
  const controllerUrl = readEndpoint(layout, 'controller')!.url;
  progress('waiting for the nodes to report');
  await waitUntil(
    async () => {
      const nodes = await new ApiClient({ baseUrl: controllerUrl, token, timeoutMs: 3000 }).call(nodeRoutes.list, {}).catch(() => [] as NodeRecord[]);
      // Each agent is ready once it wrote its endpoint and the controller heard from that very agent.
      return config!.nodes.every((m) => {
        const endpoint = readEndpoint(layout, m.name);
        return endpoint && pidAlive(endpoint.pid) && nodes.some((n) => n.name === m.name && n.state !== 'down' && n.url === endpoint.url);
      });
    },
    90_000,
    `the nodes to report (see ${layout.logs})`,
  );
  // Back from `ferry down`: the VMs whose start action says so start now (the controller runs them once).
  progress('start actions');
  const startActions = await new ApiClient({ baseUrl: controllerUrl, token, timeoutMs: 10 * 60_000 }).call(clusterRoutes.startActions, {});
  return { alreadyRunning: false, started: missing, config, controllerUrl, startActions };
}

/** Stops VMs, daemons and any QEMU left behind; removes every socket and endpoint. */
/**
 * Shuts every VM down (each guest may take `shutdownTimeoutS`, default the
 * cluster setting, before it is powered off), then stops the daemons and any
 * QEMU left behind; removes every socket and endpoint.
 */
export async function down(
  layout: StateLayout,
  opts: { shutdownTimeoutS?: number; force?: boolean } = {},
): Promise<{ stoppedVms: string[]; forcedVms: string[]; stoppedDaemons: string[] }> {
  const config = readConfig(layout);
  // A host that joined a cluster: its guests are the cluster's, so they move away (a drain) before it goes down.
  const host = readHostConfig(layout);
  if (host && !config && !opts.force) {
    const running = runningQemu(layout);
    if (running.length)
      throw errors.invalidState(
        `${host.name} still runs VMs (${running.join(', ')}): drain it first (ferry node maintenance ${host.name} --drain live), or --force to power them off`,
      );
  }
  const token = readToken(layout);
  let stoppedVms: string[] = [];
  let forcedVms: string[] = [];
  const controller = readEndpoint(layout, 'controller');
  // A standby controller (no URL yet) serves nothing to ask: it stops with the other daemons.
  if (controller?.url && token && pidAlive(controller.pid)) {
    const body = opts.shutdownTimeoutS !== undefined ? { shutdownTimeoutS: opts.shutdownTimeoutS } : {};
    const caPem = readCaPem(layout);
    const res = await new ApiClient({
      baseUrl: controller.url,
      token,
      timeoutMs: ((opts.shutdownTimeoutS ?? 3600) + 120) * 1000,
      ...(caPem && controller.url.startsWith('https:') ? { fetch: tlsFetch({ caPem }) } : {}),
    })
      .call(clusterRoutes.down, { body })
      .catch(() => ({ stopped: [] as string[], forced: [] as string[] }));
    stoppedVms = res.stopped;
    forcedVms = res.forced;
  }
  const stoppedDaemons: string[] = [];
  const names = config ? daemonNames(config).reverse() : [];
  // Remember the pids now: a daemon removes its endpoint file as it exits.
  const pids = new Map<string, number>();
  for (const name of names) {
    const e = readEndpoint(layout, name);
    if (e && pidAlive(e.pid)) {
      process.kill(e.pid, 'SIGTERM');
      pids.set(name, e.pid);
      stoppedDaemons.push(name);
    }
  }
  // A daemon still starting has no endpoint file yet: find it by its command line.
  for (const pid of daemonPids(layout)) {
    if ([...pids.values()].includes(pid)) continue;
    try {
      process.kill(pid, 'SIGTERM');
      pids.set(`pid ${pid}`, pid);
    } catch {
      /* gone */
    }
  }
  for (const [name, pid] of pids) {
    await waitUntil(() => !pidAlive(pid), 10_000, `${name} to exit`).catch(async () => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await waitUntil(() => !pidAlive(pid), 5_000, `${name} to die`).catch(() => {});
    });
  }
  for (const pid of killLeftoverQemu(layout)) await waitUntil(() => !pidAlive(pid), 5_000, 'QEMU to die').catch(() => {});
  // A backup copy or replica export a killed controller could not stop.
  for (const pid of killStaleStorageDaemons(layout.run)) await waitUntil(() => !pidAlive(pid), 5_000, 'qemu-storage-daemon to die').catch(() => {});
  // Tap nodes: relays, then the bridges they hung on.
  const nodesDir = path.join(layout.run, 'nodes');
  for (const node of fs.existsSync(nodesDir) ? fs.readdirSync(nodesDir) : []) {
    const { killed, links } = removeUplinks(path.join(nodesDir, node));
    for (const pid of killed) await waitUntil(() => !pidAlive(pid), 5_000, 'relay to die').catch(() => {});
    await deleteLinks(links);
  }
  fs.rmSync(layout.run, { recursive: true, force: true });
  return { stoppedVms, forcedVms, stoppedDaemons };
}

/** Stops a node's agent after it left the cluster and removes its runtime directory. */
export async function stopNodeAgent(layout: StateLayout, node: string): Promise<void> {
  const e = readEndpoint(layout, node);
  if (e && pidAlive(e.pid)) {
    process.kill(e.pid, 'SIGTERM');
    await waitUntil(() => !pidAlive(e.pid), 10_000, `${node} to exit`).catch(() => {
      try {
        process.kill(e.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    });
  }
  const dir = layout.nodeRun(node);
  const { killed, links } = removeUplinks(dir);
  for (const pid of killed) await waitUntil(() => !pidAlive(pid), 5_000, 'relay to die').catch(() => {});
  await deleteLinks(links);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(layout.daemonFile(node), { force: true });
}

/** Ferry daemons of this state directory, found in /proc by their command line. */
function daemonPids(layout: StateLayout): number[] {
  const script = path.join(projectRoot(), 'dist', 'src', 'daemon', 'main.js');
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const i = args.indexOf('--state');
      if (args.includes(script) && i >= 0 && args[i + 1] === layout.dir) pids.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return pids;
}

/** The QEMUs alive on this host, from their pid files under run/nodes/: each VM's name and pid. */
function liveQemu(layout: StateLayout): { vm: string; pid: number }[] {
  const nodesDir = path.join(layout.run, 'nodes');
  if (!fs.existsSync(nodesDir)) return [];
  return fs.readdirSync(nodesDir).flatMap((node) =>
    fs.readdirSync(path.join(nodesDir, node)).flatMap((f) => {
      if (!f.endsWith('.json')) return [];
      try {
        const { pid } = JSON.parse(fs.readFileSync(path.join(nodesDir, node, f), 'utf8')) as { pid: number };
        return pidAlive(pid) ? [{ vm: f.slice(0, -5), pid }] : [];
      } catch {
        return []; // unreadable or gone
      }
    }),
  );
}

/** The VMs whose QEMU runs on this host. */
function runningQemu(layout: StateLayout): string[] {
  return liveQemu(layout).map((q) => q.vm);
}

/** QEMU processes whose agent is gone would otherwise outlive the cluster. */
function killLeftoverQemu(layout: StateLayout): number[] {
  const killed: number[] = [];
  for (const { pid } of liveQemu(layout)) {
    try {
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      /* gone */
    }
  }
  return killed;
}

/**
 * The agent daemon's composition root: the QEMU hypervisor, the host's
 * network tools and tap uplinks, the agent and its HTTP API, on the node's
 * management address.
 */
import fs from 'node:fs';
import { readVolumeMark } from './volume-mark.js';
import { serve, serveTunnels } from '../api/http.js';
import { DISPLAY_PATH } from './routes.js';
import { memberAddresses, readConfig, readEndpoint, readToken, writeEndpoint } from '../config/cluster-config.js';
import { systemClock } from '../domain/clock.js';
import type { StateLayout } from '../domain/layout.js';
import { tlsFetch } from '../api/tls.js';
import { clientTls, openLayout, readHostConfig, serverTls } from '../config/host-config.js';
import { cacheDir, ensureImage } from '../guest/image.js';
import { QemuHypervisor } from '../qemu/hypervisor.js';
import { createImage } from '../qemu/mirror-job.js';
import { daemonLogger } from '../system/logging.js';
import { Agent } from './agent.js';
import { agentApp } from './http.js';
import { linksOf, listenBeacon, measureThroughput, probeTcp } from './net-tools.js';
import { TapUplinks } from './tap-uplink.js';
import { FenceFiles, startWatchdog, stopWatchdog } from './watchdog.js';
import { type LeaseStore, LeaseTargetFile } from './host-lease.js';
import type { LeaseRenewal } from '../domain/records.js';
import path from 'node:path';

/** Who this agent is and where its controller is: host.json on a real host, cluster.json and the token on the single-machine cluster. */
function agentIdentity(layout: StateLayout, node: string | undefined) {
  const host = readHostConfig(layout);
  if (host) {
    if (node && node !== host.name) throw new Error(`--node ${node} is not this host (${layout.hostConfig} names '${host.name}')`);
    const tls = clientTls(layout, 'host');
    if (!tls) throw new Error(`${layout.pki} holds no host certificate (run 'ferry join')`);
    return {
      node: host.name,
      clusterId: host.clusterId,
      migrationAddress: host.migrationAddress,
      networks: host.addresses.map((a) => ({ network: a.network, address: a.address })),
      memoryMiB: host.memoryMiB,
      cpuModel: host.cpuModel,
      nicBackend: host.nicBackend,
      controllerUrls: () => host.controllers,
      fetch: tlsFetch(tls),
      serverTls: serverTls(layout, 'host'),
    };
  }
  const config = readConfig(layout);
  const token = readToken(layout);
  if (!config || !token) throw new Error(`${layout.dir} holds no cluster (run 'ferry up', or 'ferry join' on a real host)`);
  const member = config.nodes.find((n) => n.name === node);
  if (!member) throw new Error(`--node must name a member of the cluster (${config.nodes.map((n) => n.name).join(', ')})`);
  return {
    node: member.name,
    clusterId: config.id,
    token,
    migrationAddress: member.migrationAddress,
    networks: memberAddresses(config, member.name),
    memoryMiB: member.memoryMiB,
    cpuModel: member.cpuModel,
    nicBackend: member.nicBackend ?? 'stream',
    // The controller may have restarted on another address: its endpoint file says where it is now.
    controllerUrls: () => {
      const url = readEndpoint(layout, 'controller')?.url;
      return url ? [url] : [];
    },
    fetch: undefined,
    serverTls: undefined,
  };
}

/**
 * The store where this host renews its own lease (etcd; short calls: the lease loop must not stall on a silent
 * member). The etcd client loads at the first call: its gRPC stack takes a quarter of a second to load, which
 * an agent of a cluster on SQLite never needs.
 */
function etcdLeaseStore(at: LeaseRenewal): LeaseStore {
  const store = import('../store/etcd-store.js').then(
    ({ EtcdStore }) => new EtcdStore({ endpoints: at.endpoints, ...(at.prefix ? { prefix: at.prefix } : {}), callTimeoutMs: 1500 }),
  );
  return {
    grantLease: async (ttlMs) => (await store).grantLease(ttlMs),
    keepAlive: async (lease) => (await store).keepAlive(lease),
    put: async (key, value, options) => (await store).put(key, value, options),
    get: async (key) => (await store).get(key),
    close: async () => (await store).close(),
  };
}

export async function runAgent(o: { stateDir: string; node?: string }): Promise<{ close(): Promise<void>; url: string; node: string }> {
  const layout = openLayout(o.stateDir);
  const me = agentIdentity(layout, o.node);
  const log = daemonLogger(me.node);
  const runDir = layout.nodeRun(me.node);
  fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(runDir, 0o700);
  const image = await ensureImage((line) => log.info({}, line));
  const hypervisor = new QemuHypervisor({ runDir, node: me.node, image, cacheDir: cacheDir() });
  const uplinks = new TapUplinks(me.node, me.clusterId, runDir);
  const fenceFiles = new FenceFiles(runDir);
  // The independent watchdog: it fences this host's HA VMs even when the agent hangs or is stopped.
  startWatchdog({ stateDir: o.stateDir, node: me.node, runDir, logFile: path.join(layout.logs, `${me.node}-watchdog.log`) });
  const agent = new Agent(
    {
      node: me.node,
      clusterId: me.clusterId,
      ...(me.token ? { token: me.token } : {}),
      migrationAddress: me.migrationAddress,
      networks: me.networks,
      ...(me.memoryMiB ? { memoryMiB: me.memoryMiB } : {}),
      ...(me.cpuModel ? { cpuModel: me.cpuModel } : {}),
      nicBackend: me.nicBackend,
      switchSocket: (sw) => layout.switchSocket(sw, me.node),
      runDir,
    },
    {
      hypervisor,
      clock: systemClock,
      log,
      controllerUrls: me.controllerUrls,
      createImage,
      removeFile: (f) => fs.rmSync(f, { force: true }),
      fileExists: (f) => fs.existsSync(f),
      uplinks,
      beacon: listenBeacon,
      linksOf,
      readVolume: () => readVolumeMark(layout.shared),
      watchdog: fenceFiles,
      // On etcd the host renews its own lease there.
      leaseTarget: new LeaseTargetFile(runDir),
      leaseStore: etcdLeaseStore,
      ...(me.fetch ? { fetch: me.fetch } : {}),
    },
  );
  await agent.prepare();
  const app = agentApp(agent, {
    probe: (to, port, opts) => probeTcp(to, port, opts),
    throughput: (to, port, opts) => measureThroughput(to, port, opts),
  });
  const api = await serve(app, agent.managementAddress, 0, me.serverTls);
  // A VM's screen: the same path's GET (authenticated like every call) says the VM is here; the tunnel is its VNC socket.
  serveTunnels(api, app, (p) => {
    const m = DISPLAY_PATH.exec(p);
    return m ? agent.hypervisor.display(decodeURIComponent(m[1]!)) : undefined;
  });
  agent.startHeartbeats(api.url);
  writeEndpoint(layout, me.node, { pid: process.pid, url: api.url });
  log.info({ url: api.url }, `listening on ${api.url}`);
  return {
    url: api.url,
    node: me.node,
    async close() {
      const guarding = agent.runsHaVms();
      await agent.stop();
      // A watchdog still guarding HA VMs outlives the agent: if no agent renews the lease in time, it fences them.
      if (!guarding) stopWatchdog(runDir);
      await api.close();
      await me.fetch?.close();
    },
  };
}

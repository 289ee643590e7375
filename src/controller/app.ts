/**
 * The controller's composition root: the one place that knows every part
 * of the controller and wires them together through narrow ports. Nothing
 * else imports the parts' concrete classes to reach each other.
 *
 *   buildController(ports)   the parts over given ports (the daemon's real
 *                            adapters, or fakes in component tests)
 *   runController(options)   the daemon: real adapters, the HTTP app, the loops
 */
import { randomBytes } from 'node:crypto';
import { writeFileAtomic } from '../system/json-file.js';
import path from 'node:path';
import { controllerApp } from '../api/controller/app.js';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { forwardToLeader, relayUpgrade } from '../api/forward.js';
import { type Listening, serve, serveTunnels } from '../api/http.js';
import { DISPLAY_PATH } from '../api/routes/vms.js';
import { errors } from '../domain/errors.js';
import { remoteCluster } from '../api/remote.js';
import { FileConfigStore, readConfig, readEndpoint, readToken, writeEndpoint } from '../config/cluster-config.js';
import { projectRoot } from '../config/paths.js';
import { type Clock, systemClock } from '../domain/clock.js';
import type { ClusterConfig } from '../domain/cluster.js';
import { StateLayout } from '../domain/layout.js';
import type { NodeLoad } from '../domain/placement.js';
import { isActive, VOLUME_MARKER, type VmRecord, VmState } from '../domain/records.js';
import { usesImage } from '../domain/images.js';
import { LEADER_KEY, LIVENESS_PREFIX, type LivenessRecord } from '../domain/ha.js';
import type { ImageBuilder } from '../ports/image-builder.js';
import { debianBuilder } from '../guest/debian.js';
import { AgentClient, identifyAgent } from '../node/client.js';
import { tlsFetch } from '../api/tls.js';
import { clientTls, openLayout, readCaKey, readHostConfig, serverTls } from '../config/host-config.js';
import { PemAuthority } from '../system/pki.js';
import { probeTcp } from '../node/net-tools.js';
import type { ClusterAuthority } from '../ports/authority.js';
import type { ClusterConfigStore } from '../ports/cluster-config.js';
import type { Logger } from '../ports/logger.js';
import type { AgentConnector } from '../ports/node-agent.js';
import type { RemoteConnector } from '../ports/remote-cluster.js';
import type { ClusterStore, StoreHealth } from '../ports/store.js';
import type { SwitchControl } from '../ports/switch-control.js';
import type { Volume } from '../ports/volume.js';
import { QemuVolume } from '../qemu/volume.js';
import type { EtcdStore } from '../store/etcd-store.js';
import { MirroredStore } from '../store/mirrored-store.js';
import { SqliteStore } from '../store/sqlite-store.js';
import { SwitchClient } from '../switch/client.js';
import { daemonLogger } from '../system/logging.js';
import { Balancer } from './balancer.js';
import type { PhaseGate } from './core/phase-runner.js';
import { StoreEventLog } from './core/events.js';
import { VmLockTable } from './core/locks.js';
import { StoreNodes } from './core/nodes.js';
import { StoreSettings } from './core/settings.js';
import { StoreVms } from './core/vms.js';
import { CpuBaselines } from './cpu-baselines.js';
import { Lifecycle, type VmCreate } from './lifecycle.js';
import { Maintenance } from './maintenance.js';
import { Joining } from './joining.js';
import { Images } from './storage/images.js';
import { Membership } from './membership.js';
import { Migrations } from './migration/service.js';
import { ClusterNetworks, type Reach } from './network/networks.js';
import { VirtualSwitches } from './network/switches.js';
import { Reconciler } from './reconciler.js';
import { Failover, type FailoverDeps } from './failover.js';
import { ControllerDirectory } from './core/controllers.js';
import { SharedConfig } from './core/shared-config.js';
import { type Lead, type LeaderRecord, Leadership } from './core/leadership.js';
import { IncomingReplicas } from './replica/incoming.js';
import { Replicas } from './replica/replicas.js';
import type { ControllerServices } from './services.js';
import { Backups } from './storage/backups.js';
import { BackupSchedules } from './storage/schedules.js';

/** Set by `ferry down`, cleared once the start actions ran at the next start. */
const POWERED_OFF_KEY = 'cluster/powered-off';

/** Everything the controller's parts run on. */
export interface ControllerPorts {
  layout: StateLayout;
  config: ClusterConfigStore;
  token: string;
  store: ClusterStore;
  clock: Clock;
  log: Logger;
  switch: SwitchControl;
  connect: AgentConnector;
  volume: Volume;
  reach: Reach;
  remote: RemoteConnector;
  identify: (url: string) => Promise<{ node: string; clusterId: string }>;
  /** The API's base URL and the console's, once known. */
  url: () => string;
  consoleUrl: () => string;
  pid: number;
  /** The mark written on the shared volume that every agent must read back (absent: no check). */
  volumeMark?: { clusterId: string; mark: string };
  /** How the store is doing (default: the SQLite file, always there). */
  storeHealth?: () => StoreHealth;
  /** The cluster's CA on a cluster of real hosts: hosts join with tokens and get certificates (absent: the single-machine cluster). */
  authority?: ClusterAuthority;
  /** Component tests inject failures and hangs before phases here; a daemon has none. */
  phaseGate?: PhaseGate;
  /** Builds images from recipes (`ferry image build debian`). */
  builder: ImageBuilder;
  /** On etcd: agents renew their hosts' leases there themselves (absent: each heartbeat renews it here). */
  agentLeases?: FailoverDeps['agentLeases'];
  /** On etcd: the leadership this controller leads under, told to agents in heartbeat answers (and sent with calls by `connect`). */
  leadership?: () => number | undefined;
}

export interface ControllerRuntime {
  services: ControllerServices;
  /** Prepares the store (members, networks, switches) and takes back the locks of unfinished work. */
  start(): Promise<void>;
  /** Carries unfinished migrations, backups and syncs on (or undoes them) from their saved phases. */
  recover(): Promise<void>;
  /** The loops: reconcile, schedules, replicas every second; migration scheduler; automatic balancing. */
  run(signal: AbortSignal): void;
  stop(): Promise<void>;
}

export function buildController(p: ControllerPorts): ControllerRuntime {
  const { store, clock, log } = p;
  const events = new StoreEventLog(store, clock, log);
  const locks = new VmLockTable(clock);
  const vms = new StoreVms(store, clock);
  const nodes = new StoreNodes(store, p.config, clock, events, p.connect, p.volumeMark);
  const settings = new StoreSettings(store, events, p.layout.shared, (f) => p.volume.realPath(f));
  const baselines = new CpuBaselines(nodes, events);
  nodes.onCpuChange = () => baselines.note();
  const uplink = p.config.current().defaultUplink;
  const switches = new VirtualSwitches({ store, vms, nodes, events, control: p.switch, clock, ...(uplink ? { defaultUplink: uplink } : {}) });
  const loads = async (): Promise<NodeLoad[]> => {
    const all = await vms.list();
    const sws = await switches.list();
    return (await nodes.list()).map((node) => {
      const placed = all.filter((v) => v.node === node.name && isActive(v.state));
      return {
        node,
        committedMiB: placed.reduce((s, v) => s + v.memoryMiB, 0),
        vmCount: placed.length,
        switches: sws.filter((s) => s.bindings.some((b) => b.node === node.name)).map((s) => s.name),
      };
    });
  };
  const networks = new ClusterNetworks(store, nodes, events, p.reach);
  const images = new Images({
    store,
    volume: p.volume,
    settings,
    layout: p.layout,
    clock,
    events,
    builder: p.builder,
    usedBy: async (image) => (await vms.list()).filter((v) => usesImage(v, image)).map((v) => v.name),
  });
  const lifecycle = new Lifecycle({
    image: (name) => images.get(name),
    vms,
    nodes,
    locks,
    events,
    clock,
    volume: p.volume,
    layout: p.layout,
    settings,
    loads,
    switchExists: async (name) => void (await switches.get(name)),
    switchBindings: async (name) => (await switches.get(name)).bindings,
    bootCpu: (vm, node) => baselines.bootCpu(vm, node),
  });
  const migrations = new Migrations({
    store,
    vms,
    nodes,
    locks,
    events,
    clock,
    settings,
    switch: p.switch,
    volume: p.volume,
    layout: p.layout,
    loads,
    onSharedVolume: (f) => lifecycle.onSharedVolume(f),
    networks,
    clusterId: p.config.current().id,
    identify: p.identify,
    log: log.child({ part: 'migrations' }),
    ...(p.phaseGate ? { gate: p.phaseGate } : {}),
  });
  /** A VM as operators see it: its record, a running migration, and what its node reports of its process now. */
  const viewVm = async (v: VmRecord) => {
    const decorated = await migrations.decorate(v);
    const live = v.state === VmState.Running || v.state === VmState.Migrating ? nodes.reported(v.node)?.vms.find((i) => i.name === v.name) : undefined;
    return live ? { ...decorated, runState: live.runState, ...(live.network ? { network: live.network } : {}) } : decorated;
  };
  const viewVms = async () => Promise.all((await vms.list()).map(viewVm));
  const migrate = (vm: string, to: string, priority: 'drain' | 'rebalance') => migrations.request(vm, { to, priority }) as Promise<{ id: string }>;
  const maintenance = new Maintenance({ nodes, events, vms: viewVms, loads, migrate: (vm, to) => migrate(vm, to, 'drain'), save: (vm) => lifecycle.save(vm) });
  const balancer = new Balancer({
    clock,
    settings,
    events,
    log,
    vms: viewVms,
    loads,
    migrations: () => migrations.list(),
    migrate: (vm, to) => migrate(vm, to, 'rebalance'),
  });
  const membership = new Membership({
    config: p.config,
    store,
    nodes,
    vms,
    events,
    openMigrations: () => migrations.open(),
    switches,
    noteBaselines: () => baselines.note(),
  });
  const createVm = (v: VmCreate) => lifecycle.create(v);
  const backups = new Backups({
    store,
    vms,
    nodes,
    locks,
    events,
    clock,
    settings,
    volume: p.volume,
    layout: p.layout,
    log: log.child({ part: 'backups' }),
    createVm,
    deleteVm: (n) => lifecycle.delete(n),
    ...(p.phaseGate ? { gate: p.phaseGate } : {}),
  });
  const schedules = new BackupSchedules({ store, vms, events, clock, log, backups });
  const incoming = new IncomingReplicas({
    store,
    vms,
    volume: p.volume,
    events,
    clock,
    layout: p.layout,
    clusterId: p.config.current().id,
    members: () => nodes.members(),
    createVm,
    startVm: (n) => lifecycle.start(n),
    deleteVm: (n) => lifecycle.delete(n),
    switches,
  });
  const replicas = new Replicas({
    store,
    vms,
    nodes,
    locks,
    events,
    clock,
    log: log.child({ part: 'replicas' }),
    remote: p.remote,
    incoming,
    self: { clusterId: p.config.current().id, url: p.url, token: p.token },
    stopVm: (n) => lifecycle.stop(n, { timeoutMs: 0, force: true }),
    startVm: (n) => lifecycle.start(n),
    ...(p.phaseGate ? { gate: p.phaseGate } : {}),
  });
  const controllers = new ControllerDirectory(store, p.url);
  const joining = p.authority
    ? new Joining({
        store,
        config: p.config,
        membership,
        authority: p.authority,
        clock,
        events,
        apiToken: p.token,
        controllers: () => controllers.urls(),
        registerController: (entry) => controllers.register(entry),
        volumeMark: p.volumeMark ?? { clusterId: p.config.current().id, mark: '' },
      })
    : undefined;
  const reconciler = new Reconciler({ nodes, vms, locks, events, clock, log, syncSwitches: () => switches.sync() });
  const failover = new Failover({
    store,
    nodes,
    vms,
    locks,
    events,
    settings,
    clock,
    log: log.child({ part: 'failover' }),
    start: (n) => lifecycle.start(n),
    ...(p.agentLeases ? { agentLeases: p.agentLeases } : {}),
  });

  const services: ControllerServices = {
    config: () => p.config.current(),
    ...(p.leadership ? { leadership: p.leadership } : {}),
    info: {
      pid: p.pid,
      url: p.url,
      consoleUrl: p.consoleUrl,
      tokenFile: p.layout.token,
      store: p.storeHealth ?? (() => ({ backend: 'sqlite', at: p.layout.store, reachable: true })),
    },
    token: p.token,
    clock,
    nodes,
    loads,
    vms,
    lifecycle,
    migrations,
    maintenance,
    balancer,
    membership,
    ...(joining ? { joining } : {}),
    networks,
    switches,
    switchControl: p.switch,
    backups,
    schedules,
    images,
    replicas,
    incoming,
    failover,
    controllers,
    events,
    settings,
    baselines,
    volume: p.volume,
    displayTarget: async (name) => {
      const vm = await vms.get(name);
      if (!vm.boot)
        throw errors.invalidState(`VM '${name}' runs Ferry's built-in guest, which has no screen ('ferry vm console ${name}' is its serial console)`);
      if (vm.state !== VmState.Running || !vm.node) throw errors.invalidState(`VM '${name}' is ${vm.state}: its screen is there while it runs`);
      return { vm: name, node: vm.node };
    },
    displayOf: async (name) => {
      const vm = await vms.get(name);
      return (await nodes.agent(await nodes.get(vm.node))).display(vm.name);
    },
    guestOf: async (name) => {
      const vm = await vms.get(name);
      try {
        return await (await nodes.agent(await nodes.get(vm.node))).guest(vm.name, { timeoutMs: 20_000 });
      } catch (e) {
        return { agent: false, reason: `node '${vm.node}' did not say: ${(e as Error).message}` };
      }
    },
    nicOf: async (name) => {
      const vm = await vms.get(name);
      try {
        const node = await nodes.get(vm.node);
        const nic = await (await nodes.agent(node)).nic(vm.name);
        return { backend: node.capabilities?.nic?.backend ?? 'stream', ...nic };
      } catch {
        return undefined;
      }
    },
    down: async (shutdownTimeoutMs) => {
      await migrations.cancelAll();
      // Backups in flight stop their copy and merge the disk's overlay back while the VM still runs.
      await backups.cancelAll('the cluster is going down');
      // Marked before the VMs go: a down cut short still runs the start actions at the next start.
      await store.put(POWERED_OFF_KEY, { atMs: clock.nowMs() });
      return lifecycle.stopAll(shutdownTimeoutMs, (vm, e) => log.warn({ vm, err: String(e) }, 'stopping for down failed'));
    },
    startActions: () => (startActions ??= runStartActions()),
    viewVm,
  };

  /** Once the cluster is back from `ferry down` and its nodes are up: each VM's start action, once. */
  let startActions: Promise<{ started: string[]; failed: { vm: string; error: string }[] }> | undefined;
  const runStartActions = async () => {
    if (!(await store.get(POWERED_OFF_KEY))) return { started: [], failed: [] };
    const deadline = clock.nowMs() + 60_000;
    while (clock.nowMs() < deadline && (await nodes.list()).some((n) => n.state === 'down')) await clock.sleep(200);
    const done = await lifecycle.runStartActions();
    await store.delete(POWERED_OFF_KEY);
    if (done.started.length || done.failed.length) log.info(done, `start actions: started ${done.started.join(', ') || 'none'}`);
    return done;
  };

  return {
    services,
    async start() {
      // Storage daemons a killed controller left behind (a backup copy, a replica export).
      const stale = p.volume.stopLeftovers();
      if (stale.length) log.info({ pids: stale }, `stopped ${stale.length} leftover qemu-storage-daemon(s)`);
      await settings.dropUnknown(log);
      await nodes.initialise();
      await networks.initialise(p.config.current().networks ?? []);
      await switches.initialise(nodes.members());
      await baselines.note();
      await switches.sync().catch((e: unknown) => log.warn({ err: String(e) }, 'switch sync failed'));
      await migrations.retakeLocks();
    },
    async recover() {
      await migrations.recover().catch((e: unknown) => log.error({ err: String(e) }, 'recovering migrations failed'));
      await backups.recover().catch((e: unknown) => log.error({ err: String(e) }, 'recovering backups failed'));
      await replicas.recover().catch((e: unknown) => log.error({ err: String(e) }, 'recovering replica syncs failed'));
    },
    run(signal) {
      const every = (ms: number, what: string, fn: () => Promise<void>) =>
        void (async () => {
          while (!signal.aborted) {
            await fn().catch((e: unknown) => log.warn({ err: String(e) }, `${what} failed`));
            await clock.sleep(ms, signal).catch(() => {});
          }
        })();
      every(1000, 'reconcile', () => reconciler.tick());
      every(500, 'failover', () => failover.tick());
      every(1000, 'event log', () => events.flush());
      every(1000, 'backup schedules', () => schedules.tick());
      every(1000, 'replicas', () => replicas.tick());
      void services.startActions();
      void migrations.runScheduler(signal);
      void balancer.run(signal);
    },
    async stop() {
      await incoming.closeAll();
      // A copy still running (the controller is stopped without `ferry down`) ends with it; the next start merges its overlay back.
      const stopped = p.volume.stopLeftovers();
      if (stopped.length) log.info({ pids: stopped }, `stopped ${stopped.length} qemu-storage-daemon(s)`);
    },
  };
}

export interface RunControllerOptions {
  stateDir: string;
  /** This controller's name in the leader key and events (default: its address). */
  name?: string;
  /** Called when this controller lost the lead (default: the process exits, to be started again as a standby). */
  onDeposed?: (why: string) => void;
  /** Wait for etcd to answer at start instead of failing (a controller started again after losing the lead). */
  waitForStore?: boolean;
  /** The API's port (0: any free port). */
  port?: number;
  host?: string;
  switchUrl: string;
}

/**
 * The cluster's store as its configuration says: the SQLite file, or etcd
 * behind a mirror (reads answered from what was last seen, changes followed
 * by one watch). Throws one line if etcd does not answer at start.
 */
async function openStore(layout: StateLayout, config: ClusterConfig): Promise<{ store: ClusterStore; health: () => StoreHealth; etcd?: EtcdStore }> {
  if (config.store?.backend !== 'etcd')
    return { store: new SqliteStore(layout.store), health: () => ({ backend: 'sqlite', at: layout.store, reachable: true }) };
  const { endpoints, prefix } = config.store;
  // Loaded only here: etcd's gRPC client takes a quarter of a second to load, which a cluster on SQLite never needs.
  const { EtcdStore } = await import('../store/etcd-store.js');
  const etcd = new EtcdStore({ endpoints, ...(prefix ? { prefix } : {}) });
  const store = new MirroredStore(etcd, { backend: 'etcd', at: endpoints.join(',') });
  try {
    await store.start();
  } catch (e) {
    await store.close();
    throw e;
  }
  return { store, health: () => store.health(), etcd };
}

/** How long a leader that stopped renewing holds the lead: a standby takes over within this (plus its start). */
export const LEADER_TTL_MS = 3000;
/** How long a standby waits for the leader to take a forwarded request's connection. */
const FORWARD_CONNECT_MS = 2000;

/**
 * Writes a fresh mark on the shared volume: an agent that reads this very
 * mark back sees the cluster's volume (not an empty mount point, not another
 * cluster's export, not a stale copy).
 */
function writeVolumeMark(layout: StateLayout, clusterId: string): { clusterId: string; mark: string } {
  const mark = { clusterId, mark: randomBytes(8).toString('hex') };
  const file = path.join(layout.shared, VOLUME_MARKER);
  writeFileAtomic(file, JSON.stringify(mark) + '\n', 0o600);
  return mark;
}

/** The controller daemon: real adapters, the HTTP app, the loops; resolves once it serves. */
export async function runController(o: RunControllerOptions): Promise<{ close(): Promise<void>; url: string }> {
  const layout = openLayout(o.stateDir);
  const config: ClusterConfig | undefined = readConfig(layout);
  const token = readToken(layout);
  if (!config || !token) throw new Error(`${o.stateDir} holds no cluster (run 'ferry up')`);
  const log = daemonLogger('controller');
  // A cluster of real hosts speaks HTTPS: the controller's certificate serves the API and calls the agents; its CA signs joining hosts.
  const tls = serverTls(layout, 'controller');
  const agentTls = clientTls(layout, 'controller');
  const agentFetch = agentTls ? tlsFetch(agentTls) : undefined;
  // A standby forwarding to a leader that hangs gives up on connecting soon: the leader's peers are on one network.
  const forwardFetch = agentTls ? tlsFetch(agentTls, { connectTimeoutMs: FORWARD_CONNECT_MS }) : undefined;
  const caKey = tls ? readCaKey(layout) : undefined;
  let opened: Awaited<ReturnType<typeof openStore>> | undefined;
  while (!opened) {
    try {
      opened = await openStore(layout, config);
    } catch (e) {
      if (!o.waitForStore) throw e;
      log.warn({ err: String(e) }, 'the store does not answer yet; trying again');
      await systemClock.sleep(1000);
    }
  }
  const { store, health, etcd } = opened;
  // A controller listens on its own host's management address (a host that joined as a controller is not the first).
  const host = readHostConfig(layout);
  const addressIn = (c: ClusterConfig): string => {
    const management = (c.networks ?? []).find((n) => n.role === 'management')?.name;
    return o.host ?? host?.addresses.find((a) => a.network === management)?.address ?? c.controllerAddress ?? '127.0.0.1';
  };
  const name = o.name ?? host?.name ?? config.controllerAddress ?? 'controller';
  // What answers the API: while standing by, forwarding to the leader; once leading, the controller's own app.
  let answer: (req: Request, env?: object) => Response | Promise<Response>;
  let relay: ((req: IncomingMessage, socket: Duplex, head: Buffer) => Promise<boolean>) | undefined;
  let screens: (path: string) => Promise<Duplex> | undefined = () => undefined;
  const front = { fetch: (req: Request, env?: object) => answer(req, env) };
  const listen = async (address: string, port: number): Promise<Listening> => {
    const l = await serve(front, address, port, tls);
    serveTunnels(
      l,
      front,
      (p) => screens(p),
      (req, socket, head) => relay?.(req, socket, head) ?? Promise.resolve(false),
    );
    return l;
  };
  let listening: Listening | undefined;
  // On etcd, controllers stand for leader: one leads, the others wait here (standby) until its lease runs out.
  // From then on every write of this one is fenced by its leadership, and it steps down (exits) once it cannot renew.
  let leadership: { lead: Lead; election: Leadership; held: { release(): Promise<void> }; waitedFor?: LeaderRecord } | undefined;
  /** The leadership every store write is fenced by and every agent call carries (it changes when a lone controller stands again). */
  let revision: number | undefined;
  if (etcd) {
    const election = new Leadership(store, systemClock, { name, pid: process.pid }, LEADER_TTL_MS);
    let waitedFor: LeaderRecord | undefined;
    // Standing by, it answers already: every request goes on to the leader (any controller answers the API).
    const self = () => listening?.url ?? '';
    const leaderUrl = async () => (await election.leader())?.url;
    answer = forwardToLeader({ by: name, self, leader: leaderUrl, fetch: forwardFetch ?? fetch });
    relay = async (req, socket, head) => {
      const leader = await leaderUrl().catch(() => undefined);
      relayUpgrade(req, socket, head, { by: name, leader, self: self(), ...(agentTls ? { tls: agentTls } : {}) });
      return true;
    };
    listening = await listen(addressIn(config), o.port ?? config.controllerPort ?? 0);
    writeEndpoint(layout, 'controller', { pid: process.pid, url: listening.url, standby: true });
    log.info({ url: listening.url }, `listening on ${listening.url}: requests go on to the leader until this controller leads`);
    const lead = await election.campaign(undefined, (leader) => {
      waitedFor = leader;
      log.info(
        { leader: leader.name, pid: leader.pid },
        `standby: ${leader.name} leads (pid ${leader.pid}); this controller takes over when its lease runs out`,
      );
    });
    etcd.fenceWith({ key: LEADER_KEY, createRevision: lead.revision });
    revision = lead.revision;
    // Whether another controller is registered (kept from the mirror): only then can one take over from this one.
    const me = election.name;
    let others = false;
    const look = () =>
      void store
        .list<{ name: string }>('controllers/')
        .then((all) => (others = all.some((e) => e.value.name !== me)))
        .catch(() => {});
    const looking = new AbortController();
    void (async () => {
      while (!looking.signal.aborted) {
        look();
        await systemClock.sleep(2000, looking.signal).catch(() => {});
      }
    })();
    // The lead held now (a lone controller whose lease ran out takes it again, see below).
    let current = { lead, held: { stop() {}, release: async () => {} } as { stop(): void; release(): Promise<void> } };
    const keep = (l: Lead): void => {
      current = {
        lead: l,
        held: election.hold(
          l,
          (why) => {
            if (others) {
              log.error({ leadership: l.revision }, `stepping down: ${why}`);
              (o.onDeposed ?? (() => process.exit(75)))(why);
              return;
            }
            // Alone, nobody can have taken over: lead again under a new leadership (writes fail as not-leader meanwhile).
            log.warn({ leadership: l.revision }, `${why}; no other controller: standing again`);
            void election.campaign().then((again) => {
              etcd.fenceWith({ key: LEADER_KEY, createRevision: again.revision });
              revision = again.revision;
              log.info({ leadership: again.revision }, `leading again (leadership ${again.revision})`);
              keep(again);
            });
          },
          { othersStandBy: () => others },
        ),
      };
    };
    keep(lead);
    const held = {
      stop: () => current.held.stop(),
      release: () => {
        looking.abort();
        return current.held.release();
      },
    };
    leadership = { lead, election, held, ...(waitedFor ? { waitedFor } : {}) };
    log.info({ leadership: lead.revision }, `leading (leadership ${lead.revision})`);
  }
  // The configuration as the store holds it once this controller leads (members that joined through another controller).
  const file = new FileConfigStore(layout, config);
  const configStore = etcd ? await SharedConfig.open(store, file) : file;
  const current = configStore.current();
  // The API's address is known once it listens; the parts ask for it later.
  const at = { url: '' };
  const url = () => at.url;
  const runtime = buildController({
    layout,
    config: configStore,
    token,
    store,
    clock: systemClock,
    log,
    // The switch daemon may restart at another port: its endpoint file says where it is now.
    switch: new SwitchClient(() => readEndpoint(layout, 'switch')?.url ?? o.switchUrl, token),
    connect: (node, agentUrl) => new AgentClient(node, agentUrl, token, agentFetch, agentTls, () => revision),
    // A lone controller on SQLite has none (services.leadership is absent there, as its doc says).
    ...(etcd ? { leadership: () => revision } : {}),
    volume: new QemuVolume(layout.run),
    builder: debianBuilder,
    reach: (address, port) => probeTcp(address, port, { timeoutMs: 300 }),
    remote: remoteCluster,
    identify: (agentUrl) => identifyAgent(agentUrl, agentFetch),
    url,
    consoleUrl: () => `${url()}/`,
    pid: process.pid,
    storeHealth: health,
    ...(etcd && config.store?.backend === 'etcd'
      ? {
          agentLeases: {
            at: { endpoints: config.store.endpoints, ...(config.store.prefix ? { prefix: config.store.prefix } : {}) },
            read: () => etcd.list<LivenessRecord>(LIVENESS_PREFIX),
          },
        }
      : {}),
    volumeMark: writeVolumeMark(layout, config.id),
    ...(tls && caKey ? { authority: new PemAuthority({ certPem: tls.caPem, keyPem: caKey }, config.id) } : {}),
  });
  await runtime.start();
  const app = controllerApp(runtime.services, { assetDirs: [path.join(projectRoot(), 'dist', 'dashboard')] });
  // VM screens for the console (noVNC): the upgrade passes the API's authentication and displayTarget's checks first.
  screens = (p) => {
    const m = DISPLAY_PATH.exec(p);
    return m ? runtime.services.displayOf(decodeURIComponent(m[1]!)) : undefined;
  };
  // A standby's listener serves on, now with this controller's own app.
  answer = (req, env) => app.fetch(req, env);
  relay = undefined;
  listening ??= await listen(addressIn(current), o.port ?? current.controllerPort ?? 0);
  at.url = listening.url;
  writeEndpoint(layout, 'controller', { pid: process.pid, url: listening.url });
  log.info({ url: listening.url }, `listening on ${listening.url}`);
  if (leadership) {
    await runtime.services.controllers
      .register({ name, url: listening.url })
      .catch((e: unknown) => log.warn({ err: String(e) }, 'registering the controller failed'));
    await leadership.election.announce(listening.url).catch((e: unknown) => log.warn({ err: String(e) }, 'announcing the leader URL failed'));
    const was = leadership.waitedFor;
    await runtime.services.events.emit({
      type: 'controller.leader',
      message: `${leadership.election.name} leads the cluster (leadership ${leadership.lead.revision})${was ? `, after ${was.name} (pid ${was.pid}) stopped renewing` : ''}`,
      data: { leadership: leadership.lead.revision, url: listening.url, ...(was ? { after: was.name } : {}) },
    });
  }
  const loops = new AbortController();
  // Settle unfinished work and start the loops once every member has reported to this controller (each
  // heartbeat names all its QEMUs), or after three seconds, whichever is first: a host that is down never will.
  void (async () => {
    const sinceMs = systemClock.nowMs();
    const nodes = runtime.services.nodes;
    const allHeard = () => nodes.members().every((m) => nodes.reported(m) !== undefined);
    while (!allHeard() && systemClock.nowMs() - sinceMs < 3000) await systemClock.sleep(100, loops.signal);
    await runtime.recover();
    runtime.run(loops.signal);
  })().catch(() => {});
  return {
    url: listening.url,
    async close() {
      loops.abort();
      await runtime.stop();
      await listening.close();
      await agentFetch?.close();
      await forwardFetch?.close();
      // A controller stopped on purpose lets the lead go at once: a standby need not wait for the lease.
      await leadership?.held.release();
      await store.close();
    },
  };
}

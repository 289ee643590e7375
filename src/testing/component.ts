/**
 * Component tests' cluster: the real controller (its composition root) and
 * real agents (their HTTP API and core), all in one process, over a strict
 * fake hypervisor and fake volume, switch and replica side. Calls between
 * them go through each app's in-process `request`: no sockets, no QEMU.
 * Time runs fast (a ScaledClock), so polls and timeouts take milliseconds.
 */
import { ApiClient } from '../api/client.js';
import { controllerApp } from '../api/controller/app.js';
import { buildController, type ControllerRuntime } from '../controller/app.js';
import type { PhaseGate } from '../controller/core/phase-runner.js';
import { type Clock, ScaledClock } from '../domain/clock.js';
import type { ClusterConfig } from '../domain/cluster.js';
import { ErrorCode, FerryError } from '../domain/errors.js';
import { StateLayout } from '../domain/layout.js';
import { defaultNetworks } from '../domain/networks.js';
import { type FenceFile, LIVENESS_PREFIX, type LivenessRecord } from '../domain/ha.js';
import type { LeaseRenewal } from '../domain/records.js';
import { Agent } from '../node/agent.js';
import type { LeaseStore, LeaseTarget } from '../node/host-lease.js';
import { AgentClient } from '../node/client.js';
import { agentApp } from '../node/http.js';
import { silentLogger } from '../ports/logger.js';
import type { ClusterStore } from '../ports/store.js';
import type { ClusterAuthority } from '../ports/authority.js';
import { SqliteStore } from '../store/sqlite-store.js';
import { FakeHypervisor, FakeWorld } from './fake-hypervisor.js';
import { FakeImageBuilder, FakeRemote, FakeSwitch, FakeVolume } from './fakes.js';

type Fetch = (input: string, init: RequestInit) => Promise<Response>;

const TOKEN = 'component-token';
const CONTROLLER = 'http://controller.component';
const STORE = 'http://store.component';

/** Faults at phases: `fail` throws before the phase runs, `hang` never lets it run (a controller crash). */
export interface PhaseFault {
  operation: string;
  phase: string;
  kind: 'fail' | 'hang';
}

export class ComponentCluster {
  readonly world = new FakeWorld();
  readonly clock: Clock;
  readonly layout = new StateLayout('/ferry-component');
  readonly store: ClusterStore;
  readonly config: ClusterConfig;
  readonly volume: FakeVolume;
  readonly builder = new FakeImageBuilder();
  readonly switch: FakeSwitch;
  readonly remote: FakeRemote;
  private readonly macs = new Map<string, string>();
  private readonly agents = new Map<string, { agent: Agent; fetch: Fetch; hv: FakeHypervisor }>();
  runtime!: ControllerRuntime;
  api!: ApiClient;
  private controllerFetch!: Fetch;
  private loops = new AbortController();
  /** Phase faults the next phases meet. */
  phaseFaults: PhaseFault[] = [];
  /** Hosts cut off from the controller (both ways), as by a management link that is down. */
  private readonly isolated = new Set<string>();

  /** Agents renew their hosts' leases in the store themselves (as on etcd), not through heartbeats. */
  private agentLeases = false;
  /** The leadership the controller leads under, as on etcd (a test may raise it: a new leader); undefined: none. */
  leadership: number | undefined;

  private constructor(nodes: string[], factor: number) {
    this.clock = new ScaledClock(factor);
    this.world.clock = this.clock;
    this.store = this.faultyWrites(new SqliteStore(':memory:', this.clock));
    const networks = defaultNetworks(nodes, 77);
    this.config = {
      id: 'component-cluster',
      name: 'ferry',
      createdAtMs: 0,
      vmSubnet: '10.99.0.0/16',
      networks,
      nodes: nodes.map((name) => ({ name, migrationAddress: networks.find((n) => n.role === 'migration')!.addresses[name]!, memoryMiB: 4096 })),
    };
    this.volume = new FakeVolume(this.world, this.clock);
    this.switch = new FakeSwitch(this.world, this.clock, (mac) => this.macs.get(mac));
    this.remote = new FakeRemote(this.world, 'http://far.component');
  }

  /** `authority`: a cluster of real hosts, whose hosts join with tokens (absent: the single-machine cluster). */
  /** `agentLeases`: each agent renews its host's lease in the store itself, as on etcd (default: through its heartbeats). */
  /** `leadership`: the controller leads under it and calls agents with it, as on etcd. */
  static async start(
    opts: { nodes?: number; factor?: number; authority?: ClusterAuthority; agentLeases?: boolean; leadership?: number } = {},
  ): Promise<ComponentCluster> {
    const nodes = Array.from({ length: opts.nodes ?? 2 }, (_, i) => `node-${i + 1}`);
    const c = new ComponentCluster(nodes, opts.factor ?? 25);
    c.agentLeases = opts.agentLeases ?? false;
    c.leadership = opts.leadership;
    await c.startController(opts.authority);
    for (const node of nodes) await c.startAgent(node);
    await c.until('every node to be up', async () => (await c.runtime.services.nodes.list()).every((n) => n.state === 'up'));
    c.runtime.run(c.loops.signal);
    return c;
  }

  private gate: PhaseGate = async (operation, phase) => {
    const f = this.phaseFaults.find((x) => x.operation === operation && x.phase === phase);
    if (!f) return;
    this.phaseFaults = this.phaseFaults.filter((x) => x !== f);
    if (f.kind === 'hang') await new Promise<never>(() => {});
    throw new Error(`injected failure before phase ${phase} of the ${operation}`);
  };

  private async startController(authority?: ClusterAuthority): Promise<void> {
    const config = this.config;
    const runtime = buildController({
      layout: this.layout,
      config: { current: () => config, save: () => {} },
      token: TOKEN,
      store: this.store,
      clock: this.clock,
      log: silentLogger,
      builder: this.builder,
      switch: this.switch,
      connect: (node, url) => this.agentClient(node, url, () => this.leadership),
      leadership: () => this.leadership,
      volume: this.volume,
      reach: async () => ({ ok: true }),
      remote: () => this.remote,
      identify: async (url) => {
        const node = new URL(url).hostname.split('.')[0]!;
        return { node, clusterId: this.config.id };
      },
      url: () => CONTROLLER,
      consoleUrl: () => `${CONTROLLER}/`,
      pid: 1,
      phaseGate: this.gate,
      ...(authority ? { authority } : {}),
      ...(this.agentLeases ? { agentLeases: { at: { endpoints: [STORE] }, read: () => this.store.list<LivenessRecord>(LIVENESS_PREFIX) } } : {}),
    });
    await runtime.start();
    const app = controllerApp(runtime.services, { assetDirs: [] });
    this.controllerFetch = (input, init) => Promise.resolve(app.request(input, init));
    this.runtime = runtime;
    this.api = new ApiClient({ baseUrl: CONTROLLER, token: TOKEN, fetch: (input, init) => this.controllerFetch(input, init) });
  }

  /** What each host keeps in its run directory across agent restarts: the watchdog's fence file and the lease target. */
  private readonly runFiles = new Map<string, { fence?: FenceFile; leaseTarget?: LeaseTarget }>();

  private async startAgent(node: string): Promise<void> {
    // A restarted agent finds its host's guests still running.
    const hv = this.agents.get(node)?.hv ?? new FakeHypervisor(node, this.world);
    const files = this.runFiles.get(node) ?? {};
    this.runFiles.set(node, files);
    const member = this.config.nodes.find((n) => n.name === node)!;
    const agent = new Agent(
      {
        node,
        clusterId: this.config.id,
        token: TOKEN,
        migrationAddress: member.migrationAddress,
        networks: (this.config.networks ?? []).map((n) => ({ network: n.name, address: n.addresses[node]! })),
        memoryMiB: 4096,
        nicBackend: 'stream',
        switchSocket: (sw) => `/ferry-component/run/switch/${sw}/${node}.sock`,
        runDir: `/ferry-component/run/nodes/${node}`,
      },
      {
        hypervisor: hv,
        clock: this.clock,
        log: silentLogger,
        controllerUrls: () => [CONTROLLER],
        createImage: async (file) => void this.world.files.add(file),
        removeFile: (file) => void this.world.files.delete(file),
        fileExists: (file) => this.world.files.has(file),
        uplinks: {
          ensure: async () => 'br0',
          vmTap: (vm) => `tap-${vm}`,
          attach: async () => {},
          // The component world's nodes use stream NICs; a host bridge here is a test bug.
          hostBridge: async (iface) => {
            throw new Error(`component nodes have no host bridges (asked for ${iface})`);
          },
          learnt: async () => {
            throw new Error('component nodes have no host bridges');
          },
        },
        beacon: async () => ({ port: this.world.port(), close: async () => {} }),
        fetch: (input, init) => this.cut(node) ?? this.controllerFetch(input, init),
        ...(this.agentLeases ? { leaseStore: (at: LeaseRenewal) => this.leaseStoreOf(node, at) } : {}),
        watchdog: {
          write: (f) => void (files.fence = f),
          read: () => files.fence,
          takeFenced: () => [],
        },
        leaseTarget: {
          read: () => files.leaseTarget,
          write: (t) => void (files.leaseTarget = t),
        },
      },
    );
    await agent.prepare();
    const app = agentApp(agent, {
      probe: async () => ({ ok: true, ms: 1 }),
      throughput: async () => ({ bytesPerSec: 1e9, bytes: 1e8, ms: 100 }),
    });
    this.agents.set(node, { agent, hv, fetch: (input, init) => Promise.resolve(app.request(input, init)) });
    agent.startHeartbeats(`http://${node}.component`);
  }

  /** A client of a node's agent as a controller calling under `leadership` (a deposed leader: an older one). */
  agentClient(node: string, url = `http://${node}.component`, leadership: () => number | undefined = () => undefined): AgentClient {
    return new AgentClient(node, url, TOKEN, (input, init) => this.cut(node) ?? this.agents.get(node)!.fetch(input, init), undefined, leadership);
  }

  /**
   * A client of a node's agent from a controller other than the cluster's (a deposed leader that thawed): it
   * reaches the agent while the cluster's controller is away, though not an isolated host.
   */
  strayClient(node: string, leadership: number): AgentClient {
    const fetch: Fetch = (input, init) => this.cutOff(node) ?? this.agents.get(node)!.fetch(input, init);
    return new AgentClient(node, `http://${node}.component`, TOKEN, fetch, undefined, () => leadership);
  }

  /** A node's agent app, in process: raw requests as any caller makes them. */
  agentFetch(node: string): Fetch {
    return (input, init) => this.agents.get(node)!.fetch(input, init);
  }

  /** The store as a host that renews its own lease reaches it: not while the host is cut off; closing it closes nothing. */
  private leaseStoreOf(node: string, at: LeaseRenewal): LeaseStore {
    if (at.endpoints.join() !== STORE) throw new Error(`component agents renew leases only at ${STORE}, not ${at.endpoints.join()}`);
    const reach = () => {
      if (this.isolated.has(node)) throw new FerryError(ErrorCode.StoreUnavailable, `the cluster store did not answer: ${node} is isolated`);
    };
    return {
      grantLease: async (ttlMs) => {
        reach();
        return this.store.grantLease(ttlMs);
      },
      keepAlive: async (lease) => {
        reach();
        return this.store.keepAlive(lease);
      },
      put: async (key, value, options) => {
        reach();
        return this.store.put(key, value, options);
      },
      get: async (key) => {
        reach();
        return this.store.get(key);
      },
      close: async () => {},
    };
  }

  /** While true no agent reaches the controller (stopped, or cut off from every host); the store still answers. */
  private away = false;

  controllerAway(on: boolean): void {
    this.away = on;
  }

  private cut(node: string): Promise<Response> | undefined {
    if (this.away) return Promise.reject(new TypeError('fetch failed: the controller does not answer'));
    return this.cutOff(node);
  }

  /** A call to or from an isolated host fails as fetch fails on a link that is down. */
  private cutOff(node: string): Promise<Response> | undefined {
    return this.isolated.has(node) ? Promise.reject(new TypeError(`fetch failed: ${node} is isolated`)) : undefined;
  }

  /** The host's management link goes down: it and the controller no longer reach each other (its guests run on). */
  isolate(node: string): void {
    this.isolated.add(node);
  }

  heal(node: string): void {
    this.isolated.delete(node);
  }

  /** Power loss: the host's guests and its agent are gone at once. */
  async crash(node: string): Promise<void> {
    this.isolate(node);
    const { agent, hv } = this.agents.get(node)!;
    await agent.stop();
    for (const g of hv.guests()) hv.crash(g.spec.name);
  }

  agent(node: string): Agent {
    return this.agents.get(node)!.agent;
  }

  /** The agent stops and a new one starts (its guests run on, and it adopts them), as systemd restarts it. */
  async restartAgent(node: string): Promise<void> {
    await this.agents.get(node)!.agent.stop();
    await this.startAgent(node);
  }

  hypervisor(node: string): FakeHypervisor {
    return this.agents.get(node)!.hv;
  }

  /** Creates a VM on the shared volume and starts it on `node`. */
  async runVm(name: string, node: string, opts: { memoryMiB?: number } = {}): Promise<void> {
    const { vmRoutes } = await import('../api/routes/vms.js');
    const vm = await this.api.call(vmRoutes.create, { body: { name, node, memoryMiB: opts.memoryMiB ?? 256 } });
    this.macs.set(vm.mac, name);
    await this.api.call(vmRoutes.start, { params: { name }, body: {} });
  }

  /** Where each copy of a VM's process is, and in which state. */
  copiesOf(vm: string): { node: string; runState: string }[] {
    return Object.entries(this.world.placement()).flatMap(([node, guests]) => guests.filter((g) => g.name === vm).map((g) => ({ node, runState: g.runState })));
  }

  /** Store writes that fail once each, as etcd's do when the member a call went to stops answering. */
  private readonly writeFaults: ((key: string, value: unknown) => boolean)[] = [];

  /** The next write that `match` picks fails with store-unavailable (once). */
  failNextWrite(match: (key: string, value: unknown) => boolean): void {
    this.writeFaults.push(match);
  }

  /** Until when (clock time) every write fails, as while etcd is paused or has lost its quorum. */
  private awayUntilMs = 0;

  /** Every store write fails with store-unavailable for `ms` (clock time); reads answer, as the controller's mirror does. */
  storeAway(ms: number): void {
    this.awayUntilMs = this.clock.nowMs() + ms;
  }

  private faultyWrites(store: ClusterStore): ClusterStore {
    const away = (what: string) => {
      if (this.clock.nowMs() < this.awayUntilMs)
        throw new FerryError(ErrorCode.StoreUnavailable, `the cluster store did not answer ${what}: deadline exceeded`);
    };
    return new Proxy(store, {
      get: (target, prop, receiver) => {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (prop === 'delete')
          return async (...args: Parameters<ClusterStore['delete']>) => {
            away(`delete ${args[0]}`);
            return target.delete(...args);
          };
        if (prop !== 'put') return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        return async (...args: Parameters<ClusterStore['put']>) => {
          away(`put ${args[0]}`);
          const i = this.writeFaults.findIndex((f) => f(args[0], args[1]));
          if (i >= 0) {
            this.writeFaults.splice(i, 1);
            throw new FerryError(ErrorCode.StoreUnavailable, `the cluster store did not answer put ${args[0]}: deadline exceeded`);
          }
          return target.put(...args);
        };
      },
    });
  }

  /** The controller's /metrics, as a scraper reads it. */
  async metrics(): Promise<string> {
    const r = await this.controllerFetch(`${CONTROLLER}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`);
    return r.text();
  }

  async until(what: string, probe: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (await probe()) return;
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setImmediate(r));
      await this.clock.sleep(20);
    }
  }

  /**
   * The controller dies (its loops stop, whatever it was doing never goes
   * on) and a new one starts over the same store, agents and hosts, then
   * settles unfinished work from the saved phases.
   */
  async restartController(o: { meanwhile?: () => Promise<void> } = {}): Promise<void> {
    this.loops.abort();
    this.loops = new AbortController();
    // Whatever happens while no controller runs (the old one's app still answers heartbeats, but nothing watches).
    await o.meanwhile?.();
    await this.startController();
    await this.until('the agents to report to the new controller', async () =>
      (await this.runtime.services.nodes.list()).every((n) => n.state === 'up' || this.isolated.has(n.name)),
    );
    await this.runtime.recover();
    this.runtime.run(this.loops.signal);
  }

  async stop(): Promise<void> {
    this.loops.abort();
    for (const { agent } of this.agents.values()) await agent.stop();
    await this.runtime.stop();
    await this.store.close();
  }
}

/**
 * Cluster networks on the controller (R6): listing them with each node's
 * address and reachability, changing a network's role and metric, and
 * choosing the network a live migration crosses.
 *
 * Reachability is real: the source node's agent opens a TCP connection from
 * its own address on the network to the target's beacon on that network, so
 * an unreachable address (a cut link, a route gone) shows as down.
 */
import { errors } from '../../domain/errors.js';
import type { MigrationNetwork } from '../../domain/migration.js';
import type { HostLink, NodeRecord } from '../../domain/records.js';
import { type ClusterNetwork, type NetworkRole, migrationCandidates } from '../../domain/networks.js';
import type { EventSink } from '../../ports/events.js';
import type { NodeDirectory } from '../../ports/node-directory.js';
import { type ClusterStore, update } from '../../ports/store.js';

/** Can this controller reach `address:port` (a node's beacon on a network)? */
export type Reach = (address: string, port: number) => Promise<{ ok: boolean; error?: string }>;

export interface NodeOnNetwork {
  node: string;
  address: string;
  /** up: its beacon answers; down: it does not; unknown: the node is down or never reported. */
  state: 'up' | 'down' | 'unknown';
  error?: string;
  /** The interface holding the address there, as that node's kernel reports it. */
  link?: HostLink;
}

export interface NetworkView extends ClusterNetwork {
  state: 'up' | 'partial' | 'down';
  nodes: NodeOnNetwork[];
}

export class ClusterNetworks {
  constructor(
    private readonly store: ClusterStore,
    private readonly nodes: NodeDirectory,
    private readonly events: EventSink,
    private readonly reach: Reach,
  ) {}

  /** Writes the networks the cluster was created with, once. */
  async initialise(networks: ClusterNetwork[]): Promise<void> {
    for (const n of networks) if (!(await this.store.get(`networks/${n.name}`))) await this.store.put<ClusterNetwork>(`networks/${n.name}`, n);
  }

  async list(): Promise<ClusterNetwork[]> {
    return (await this.store.list<ClusterNetwork>('networks/')).map((e) => e.value);
  }

  async get(name: string): Promise<ClusterNetwork> {
    const e = await this.store.get<ClusterNetwork>(`networks/${name}`);
    if (!e) throw errors.invalid('network', `no network named '${name}' (see 'ferry net list')`);
    return e.value;
  }

  /** Every network with each node's address and whether it answers there now. */
  async status(): Promise<NetworkView[]> {
    const nodes = await this.nodes.list();
    const views: NetworkView[] = [];
    for (const n of await this.list()) {
      const members = await Promise.all(
        Object.entries(n.addresses).map(async ([node, address]): Promise<NodeOnNetwork> => {
          const record = nodes.find((x) => x.name === node);
          const port = record?.networks?.[n.name]?.port;
          if (!record || record.state === 'down' || !port) return { node, address, state: 'unknown' };
          const link = record.networks?.[n.name]?.link;
          const p = await this.reach(address, port);
          return { node, address, ...(p.ok ? { state: 'up' as const } : { state: 'down' as const, error: p.error! }), ...(link ? { link } : {}) };
        }),
      );
      const up = members.filter((m) => m.state === 'up').length;
      views.push({ ...n, state: up === members.length ? 'up' : up === 0 ? 'down' : 'partial', nodes: members });
    }
    return views.sort((a, b) => a.metric - b.metric || a.name.localeCompare(b.name));
  }

  async set(name: string, change: { role?: NetworkRole; metric?: number }): Promise<ClusterNetwork> {
    if (change.role === undefined && change.metric === undefined) throw errors.invalid('network', 'nothing to set: give --role and/or --metric');
    const { role, metric } = change;
    const before = await this.get(name);
    const next = await update<ClusterNetwork>(this.store, `networks/${name}`, (cur) => {
      if (!cur) throw errors.invalid('network', `no network named '${name}'`);
      return { ...cur, ...(role ? { role } : {}), ...(metric ? { metric } : {}) };
    });
    await this.events.emit({
      type: 'network.set',
      message: `network ${name}: role ${before.role} → ${next.role}, metric ${before.metric} → ${next.metric}`,
      data: { network: name, role: next.role, metric: next.metric },
    });
    return next;
  }

  /**
   * The best network a live migration from `source` to `target` can use now:
   * candidates by role and metric, each probed from the source node. Throws,
   * naming every network and why it was not usable, when there is none.
   */
  async choose(source: NodeRecord, target: NodeRecord, signal?: AbortSignal): Promise<MigrationNetwork> {
    const { candidates, excluded } = migrationCandidates(await this.list(), source.name, target.name);
    const skipped: { network: string; reason: string }[] = [];
    const agent = await this.nodes.agent(source);
    for (const cand of candidates) {
      const port = target.networks?.[cand.network.name]?.port;
      if (!port) {
        skipped.push({ network: cand.network.name, reason: `node '${target.name}' does not answer on it` });
        continue;
      }
      const p = await agent.probe(cand.from, cand.to, port, signal ? { signal } : {});
      if (p.ok) return { name: cand.network.name, sourceAddress: cand.from, targetAddress: cand.to, skipped };
      skipped.push({ network: cand.network.name, reason: `${cand.to} unreachable from ${cand.from}: ${p.error}` });
    }
    const why = [...skipped, ...excluded].map((s) => `${s.network}: ${s.reason}`).join('; ');
    throw errors.invalidState(`no usable migration network between '${source.name}' and '${target.name}' (${why || 'the cluster has no networks'})`, {
      from: source.name,
      to: target.name,
    });
  }
}

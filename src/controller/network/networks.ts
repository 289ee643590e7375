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
import type { NodeRecord } from '../../domain/records.js';
import { validateName } from '../../domain/validate.js';
import {
  type ClusterNetwork,
  migrationCandidates,
  validateMetric,
  validateRole,
} from '../../domain/networks.js';
import { update } from '../../ports/store.js';
import { probeTcp } from '../../node/net-tools.js';
import type { Controller } from '../controller.js';

export interface NodeOnNetwork {
  node: string;
  address: string;
  /** up: its beacon answers; down: it does not; unknown: the node is down or never reported. */
  state: 'up' | 'down' | 'unknown';
  error?: string;
}

export interface NetworkView extends ClusterNetwork {
  state: 'up' | 'partial' | 'down';
  nodes: NodeOnNetwork[];
}

export class ClusterNetworks {
  constructor(private readonly c: Controller) {}

  async list(): Promise<ClusterNetwork[]> {
    return (await this.c.store.list<ClusterNetwork>('networks/')).map((e) => e.value);
  }

  async get(name: string): Promise<ClusterNetwork> {
    const e = await this.c.store.get<ClusterNetwork>(`networks/${name}`);
    if (!e) throw errors.invalid('network', `no network named '${name}' (see 'ferry net list')`);
    return e.value;
  }

  /** Every network with each node's address and whether it answers there now. */
  async status(): Promise<NetworkView[]> {
    const nodes = await this.c.nodes();
    const views: NetworkView[] = [];
    for (const n of await this.list()) {
      const members = await Promise.all(
        Object.entries(n.addresses).map(async ([node, address]): Promise<NodeOnNetwork> => {
          const record = nodes.find((x) => x.name === node);
          const port = record?.networks?.[n.name]?.port;
          if (!record || record.state === 'down' || !port) return { node, address, state: 'unknown' };
          const p = await probeTcp(address, port, { timeoutMs: 300 });
          return p.ok ? { node, address, state: 'up' } : { node, address, state: 'down', error: p.error! };
        }),
      );
      const up = members.filter((m) => m.state === 'up').length;
      views.push({ ...n, state: up === members.length ? 'up' : up === 0 ? 'down' : 'partial', nodes: members });
    }
    return views.sort((a, b) => a.metric - b.metric || a.name.localeCompare(b.name));
  }

  async set(name: string, change: { role?: unknown; metric?: unknown }): Promise<ClusterNetwork> {
    validateName('network', name, 'network');
    if (change.role === undefined && change.metric === undefined) throw errors.invalid('network', 'nothing to set: give --role and/or --metric');
    const role = change.role === undefined ? undefined : validateRole(change.role);
    const metric = change.metric === undefined ? undefined : validateMetric(change.metric);
    const before = await this.get(name);
    const next = await update<ClusterNetwork>(this.c.store, `networks/${name}`, (cur) => {
      if (!cur) throw errors.invalid('network', `no network named '${name}'`);
      return { ...cur, ...(role ? { role } : {}), ...(metric ? { metric } : {}) };
    });
    await this.c.event({
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
    const agent = this.c.agent(source);
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
      from: source.name, to: target.name,
    });
  }
}

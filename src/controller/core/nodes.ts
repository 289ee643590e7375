/**
 * The node directory: members (from the cluster configuration), node
 * records in the store (`nodes/<name>`), and liveness from the agents'
 * heartbeats, kept in this controller's memory. A node not heard from for
 * NODE_DOWN_AFTER_MS is down; one this controller never heard from is down
 * whatever the store says.
 */
import type { Clock } from '../../domain/clock.js';
import { errors } from '../../domain/errors.js';
import { type Heartbeat, judgeVolume, type NodeRecord, type NodeState, type VmInstance } from '../../domain/records.js';
import type { ClusterConfigStore } from '../../ports/cluster-config.js';
import type { EventSink } from '../../ports/events.js';
import type { NodeDirectory } from '../../ports/node-directory.js';
import type { AgentConnector, NodeAgent } from '../../ports/node-agent.js';
import { type ClusterStore, update } from '../../ports/store.js';

/** An agent not heard from for this long is down. */
export const NODE_DOWN_AFTER_MS = 5_000;

interface Liveness {
  lastSeenMs: number;
  vms: VmInstance[];
}

export class StoreNodes implements NodeDirectory {
  private readonly liveness = new Map<string, Liveness>();
  private readonly agents = new Map<string, NodeAgent>();
  /** Called after a node's CPU changed or membership changed (compatibility baselines). */
  onCpuChange: () => Promise<void> = async () => {};

  constructor(
    private readonly store: ClusterStore,
    private readonly config: ClusterConfigStore,
    private readonly clock: Clock,
    private readonly events: EventSink,
    private readonly connect: AgentConnector,
    /** The mark this controller wrote on the shared volume; absent: no check (component tests). */
    private readonly volumeMark?: { clusterId: string; mark: string },
  ) {}

  members(): string[] {
    return this.config.current().nodes.map((n) => n.name);
  }

  isMember(name: string): boolean {
    return this.members().includes(name);
  }

  /** Makes sure every member has a record (a new cluster, a restarted controller). */
  async initialise(): Promise<void> {
    for (const member of this.config.current().nodes) {
      if (!(await this.store.get<NodeRecord>(`nodes/${member.name}`))) {
        await this.store.put<NodeRecord>(`nodes/${member.name}`, { name: member.name, url: '', migrationAddress: member.migrationAddress, state: 'down' });
      }
    }
  }

  async heartbeat(hb: Heartbeat): Promise<{ ok: true }> {
    if (hb.clusterId !== this.config.current().id) throw errors.strangerHeartbeat(hb.name, hb.clusterId);
    if (!this.isMember(hb.name)) throw errors.strangerHeartbeat(hb.name);
    const now = this.clock.nowMs();
    this.liveness.set(hb.name, { lastSeenMs: now, vms: hb.vms });
    const key = `nodes/${hb.name}`;
    const prev = (await this.store.get<NodeRecord>(key))?.value;
    const volume = this.volumeMark ? judgeVolume(this.volumeMark, hb.volume) : undefined;
    const changed =
      !prev ||
      JSON.stringify(prev.volume) !== JSON.stringify(volume) ||
      prev.url !== hb.url ||
      prev.state === 'down' ||
      JSON.stringify(prev.capabilities) !== JSON.stringify(hb.capabilities) ||
      JSON.stringify(prev.networks ?? {}) !== JSON.stringify(hb.networks ?? {});
    if (changed) {
      // Compare-and-set: a node put in maintenance between the read above and this write keeps its maintenance.
      const written = await update<NodeRecord>(this.store, key, (cur) => ({
        name: hb.name,
        url: hb.url,
        migrationAddress: hb.migrationAddress,
        state: cur?.state === 'maintenance' ? 'maintenance' : 'up',
        capabilities: hb.capabilities,
        lastSeenMs: now,
        ...(hb.networks ? { networks: hb.networks } : {}),
        ...(volume ? { volume } : {}),
      }));
      const state = written.state;
      if (volume && volume.ok !== (prev?.volume?.ok ?? true)) {
        await this.events.emit({
          type: volume.ok ? 'node.volume-ok' : 'node.volume-lost',
          node: hb.name,
          message: volume.ok
            ? `node ${hb.name} sees the cluster's shared volume again`
            : `node ${hb.name} does not see the cluster's shared volume (${volume.error}); it gets no VMs`,
        });
      }
      if (prev?.state !== state) await this.events.emit({ type: 'node.up', node: hb.name, message: `node ${hb.name} is ${state}` });
      if (JSON.stringify(prev?.capabilities?.cpu) !== JSON.stringify(hb.capabilities.cpu)) await this.onCpuChange();
    }
    return { ok: true };
  }

  async list(): Promise<NodeRecord[]> {
    return (await this.store.list<NodeRecord>('nodes/')).map((e) => {
      const live = this.liveness.get(e.value.name);
      if (live) return { ...e.value, lastSeenMs: live.lastSeenMs };
      // Not heard from since this controller started: not up, whatever the store says.
      return e.value.state === 'up' ? { ...e.value, state: 'down' } : e.value;
    });
  }

  async get(name: string): Promise<NodeRecord> {
    const n = (await this.list()).find((x) => x.name === name);
    if (!n) throw errors.nodeNotFound(name);
    return n;
  }

  async agent(node: string | NodeRecord): Promise<NodeAgent> {
    const record = typeof node === 'string' ? await this.get(node) : node;
    if (!record.url) throw errors.agentUnreachable(record.name);
    const key = `${record.name} ${record.url}`;
    let agent = this.agents.get(key);
    if (!agent) {
      agent = this.connect(record.name, record.url);
      this.agents.set(key, agent);
    }
    return agent;
  }

  reported(node: string): { vms: VmInstance[]; atMs: number } | undefined {
    const l = this.liveness.get(node);
    return l && { vms: l.vms, atMs: l.lastSeenMs };
  }

  async setState(node: string, state: Exclude<NodeState, 'down'>): Promise<NodeRecord> {
    return update<NodeRecord>(this.store, `nodes/${node}`, (cur) => {
      if (!cur) throw errors.nodeNotFound(node);
      return { ...cur, state };
    });
  }

  /** Marks nodes not heard from in time as down (called every second). */
  async expire(): Promise<void> {
    const now = this.clock.nowMs();
    for (const entry of await this.store.list<NodeRecord>('nodes/')) {
      const node = entry.value;
      const live = this.liveness.get(node.name);
      if (node.state !== 'down' && (!live || now - live.lastSeenMs > NODE_DOWN_AFTER_MS)) {
        this.liveness.delete(node.name);
        await this.store.put<NodeRecord>(entry.key, { ...node, state: 'down' }, { expectRevision: entry.modRevision }).catch(() => {});
        const silence = live ? `no heartbeat for ${((now - live.lastSeenMs) / 1000).toFixed(1)} s` : 'no heartbeat since this controller started';
        await this.events.emit({ type: 'node.down', node: node.name, message: `node ${node.name} stopped answering (${silence})` });
      }
    }
  }

  /** Forgets a node that left the cluster. */
  forget(name: string): void {
    this.liveness.delete(name);
    for (const key of [...this.agents.keys()]) if (key.startsWith(`${name} `)) this.agents.delete(key);
  }

  /** Every node that is up, with its heartbeat's time. */
  liveNodes(): { node: string; atMs: number; vms: VmInstance[] }[] {
    return [...this.liveness].map(([node, l]) => ({ node, atMs: l.lastSeenMs, vms: l.vms }));
  }
}

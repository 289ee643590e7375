/**
 * The cluster's hosts: membership, liveness from heartbeats, each host's
 * agent. Subsystems ask it; only the node directory writes node records.
 */
import type { NodeRecord, NodeState, VmInstance } from '../domain/records.js';
import type { NodeAgent } from './node-agent.js';

export interface NodeDirectory {
  /** Every member with its state as this controller sees it (not heard from: down). */
  list(): Promise<NodeRecord[]>;
  /** Throws `node-not-found`. */
  get(name: string): Promise<NodeRecord>;
  isMember(name: string): boolean;
  members(): string[];
  /** The agent of a node (throws `agent-unreachable` when it never reported an address). */
  agent(node: string | NodeRecord): Promise<NodeAgent>;
  /** The guests a node's agent reported in its last heartbeat, and when that was. */
  reported(node: string): { vms: VmInstance[]; atMs: number } | undefined;
  setState(node: string, state: Exclude<NodeState, 'down'>): Promise<NodeRecord>;
}

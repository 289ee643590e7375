/** The cluster's identity and membership, as written when it was created. */
import type { ClusterNetwork } from './networks.js';

export interface NodeMember {
  name: string;
  /** Loopback address of this node on the migration network. */
  migrationAddress: string;
  memoryMiB?: number;
  cpuModel?: string;
  /** How VMs' NICs reach the switch on this node (default stream). */
  nicBackend?: 'stream' | 'tap' | 'bridge';
}

export interface ClusterConfig {
  id: string;
  name: string;
  createdAtMs: number;
  nodes: NodeMember[];
  /** The port the controller's API and console listen on (0: any free port). */
  controllerPort?: number;
  /** The address they listen on (default 127.0.0.1; a host's management address on real hosts and in the lab). */
  controllerAddress?: string;
  /** Subnet VMs get their addresses from (inside the virtual switch only). */
  vmSubnet: string;
  /** The networks as first defined; their role and metric live in the store and may change. */
  networks?: ClusterNetwork[];
  /** The interface the default switch is bound to on every node at first (default eth0). */
  defaultUplink?: string;
  /** Where the cluster's state lives: etcd's members, or (absent) the SQLite file in the state directory. */
  store?: StoreConfig;
}

export interface StoreConfig {
  backend: 'etcd';
  /** Client URLs of the etcd members. */
  endpoints: string[];
  /** Every key under this prefix (default /ferry/). */
  prefix?: string;
}

/** The n-th node's default name. */
export function nodeName(i: number): string {
  return `node-${i}`;
}

/**
 * Another Ferry cluster's API as Replica (R5) uses it: the primary asks the
 * replica side to register a replica, open and close syncs (NBD exports of
 * the replica disk) and fail over.
 */
import type { NbdEndpoint } from '../domain/block-jobs.js';
import type { IncomingView, RecoveryPoint } from '../domain/replicas.js';

export interface ReplicaRegistration {
  vm: string;
  interval: string;
  keep: number;
  spec: { memoryMiB: number; cpus: number; diskGiB: number; workload: string };
  source: { clusterId: string; url: string; token: string };
}

export interface RemoteCluster {
  readonly url: string;
  replicaTarget(): Promise<{ clusterId: string }>;
  register(r: ReplicaRegistration): Promise<IncomingView>;
  openSync(vm: string): Promise<NbdEndpoint>;
  closeSync(vm: string, point?: RecoveryPoint): Promise<unknown>;
  failover(vm: string, opts: { point?: string; test?: boolean }): Promise<{ vm: { name: string }; point: RecoveryPoint }>;
  remove(vm: string): Promise<void>;
}

export type RemoteConnector = (url: string, token: string, timeoutMs?: number) => RemoteCluster;

/** The cluster's identity and membership as written at creation. */
import type { ClusterConfig } from '../domain/cluster.js';

export interface ClusterConfigStore {
  current(): ClusterConfig;
  save(config: ClusterConfig): void | Promise<void>;
}

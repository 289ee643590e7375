/**
 * The cluster's configuration (members, networks) where several
 * controllers can lead in turn: kept in the store (`cluster/config`) as
 * well as in the leader's own file. A controller that takes over reads it
 * from the store, so it knows the hosts that joined through another one;
 * every change is written to both.
 */
import type { ClusterConfig } from '../../domain/cluster.js';
import type { ClusterConfigStore } from '../../ports/cluster-config.js';
import type { ClusterStore } from '../../ports/store.js';

export const CONFIG_KEY = 'cluster/config';

export class SharedConfig implements ClusterConfigStore {
  private constructor(
    private readonly store: ClusterStore,
    private readonly file: ClusterConfigStore,
  ) {}

  /** The store's copy wins (and is written to the file); a cluster without one gets the file's. */
  static async open(store: ClusterStore, file: ClusterConfigStore): Promise<SharedConfig> {
    const held = await store.get<ClusterConfig>(CONFIG_KEY);
    if (held) await file.save(held.value);
    else await store.put(CONFIG_KEY, file.current());
    return new SharedConfig(store, file);
  }

  current(): ClusterConfig {
    return this.file.current();
  }

  async save(config: ClusterConfig): Promise<void> {
    await this.store.put(CONFIG_KEY, config);
    await this.file.save(config);
  }
}

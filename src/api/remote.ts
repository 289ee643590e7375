/** Another Ferry cluster's replica-side API (the RemoteCluster port), through the typed client. */
import type { RecoveryPoint } from '../domain/replicas.js';
import type { RemoteCluster, ReplicaRegistration } from '../ports/remote-cluster.js';
import { ApiClient } from './client.js';
import { replicaRoutes as r } from './routes/replicas.js';

export function remoteCluster(url: string, token: string, timeoutMs = 5000): RemoteCluster {
  const api = new ApiClient({ baseUrl: url, token, timeoutMs });
  return {
    url,
    replicaTarget: () => api.call(r.target, {}),
    register: (reg: ReplicaRegistration) => api.call(r.register, { body: reg }),
    openSync: (vm) => api.call(r.openSync, { params: { vm } }),
    closeSync: (vm, point?: RecoveryPoint) => api.call(r.closeSync, { params: { vm }, body: point ? { point } : {} }),
    failover: (vm, opts) => api.call(r.incomingFailover, { params: { vm }, body: opts }),
    remove: async (vm) => {
      await api.call(r.remove, { params: { vm } });
    },
  };
}

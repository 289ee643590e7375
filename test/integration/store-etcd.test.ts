/**
 * The ClusterStore contract against a real etcd: the same suite SQLite
 * passes. Each test gets keys of its own (a prefix), a second handle is a
 * second client, and leases run on etcd's clock.
 */
import { randomUUID } from 'node:crypto';
import { after, before } from 'node:test';
import { EtcdStore } from '../../src/store/etcd-store.js';
import { storeContract } from '../../src/testing/store-contract.js';
import { type TestEtcd, startEtcd } from '../helpers/etcd.js';

let etcd: TestEtcd;
before(async () => {
  etcd = await startEtcd();
});
after(async () => {
  await etcd?.stop();
});

storeContract('etcd', { handles: 'many' }, async () => {
  const prefix = `/ferry-test/${randomUUID()}/`;
  const open = () => new EtcdStore({ endpoints: [etcd.endpoint], prefix });
  const store = open();
  return {
    store,
    advance: (ms) => new Promise((r) => setTimeout(r, ms)),
    second: async () => open(),
    dispose: () => store.close(),
  };
});

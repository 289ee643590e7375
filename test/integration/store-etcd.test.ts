/**
 * The ClusterStore contract against a real etcd: the same suite SQLite
 * passes. Each test gets keys of its own (a prefix), a second handle is a
 * second client, and leases run on etcd's clock.
 */
import { randomUUID } from 'node:crypto';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isFerryError } from '../../src/domain/errors.js';
import { EtcdStore } from '../../src/store/etcd-store.js';
import { MirroredStore } from '../../src/store/mirrored-store.js';
import { storeContract } from '../../src/testing/store-contract.js';
import { waitFor } from '../helpers/cluster.js';
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

// The controller's view: a mirror over etcd answers reads itself and follows other writers by the watch.
storeContract('etcd, mirrored', { handles: 'many', follows: 'by-watch' }, async () => {
  const prefix = `/ferry-test/${randomUUID()}/`;
  const store = new MirroredStore(new EtcdStore({ endpoints: [etcd.endpoint], prefix }));
  await store.start();
  return {
    store,
    advance: (ms) => new Promise((r) => setTimeout(r, ms)),
    second: async () => new EtcdStore({ endpoints: [etcd.endpoint], prefix }),
    dispose: () => store.close(),
  };
});

describe('a mirrored etcd store while etcd is away', () => {
  it('answers reads from what it last saw, refuses writes with one line, and carries on when etcd is back', async () => {
    const own = await startEtcd();
    const prefix = `/ferry-test/${randomUUID()}/`;
    const store = new MirroredStore(new EtcdStore({ endpoints: [own.endpoint], prefix, callTimeoutMs: 1500 }));
    const other = new EtcdStore({ endpoints: [own.endpoint], prefix });
    try {
      await store.start();
      await store.put('vms/a', { n: 1 });
      await own.pause();

      assert.deepEqual((await store.get('vms/a'))?.value, { n: 1 });
      assert.deepEqual(
        (await store.list('vms/')).map((e) => e.key),
        ['vms/a'],
      );
      const t0 = Date.now();
      await assert.rejects(store.put('vms/b', { n: 2 }), (e: unknown) => {
        assert.ok(isFerryError(e, 'store-unavailable'), String(e));
        assert.match((e as Error).message, new RegExp(`^the cluster store \\(etcd at ${own.endpoint}\\) did not answer put vms/b: [^\\n]+$`));
        return true;
      });
      assert.ok(Date.now() - t0 < 3000, `a refused write takes ${Date.now() - t0} ms`);
      assert.equal(await store.get('vms/b'), undefined, 'a refused write changes nothing');

      await own.resume();
      const back = Date.now();
      // Another writer's change reaches the mirror by its resumed watch, and its own writes go through again.
      await waitFor('a write to succeed again', 5000, () => other.put('vms/c', { n: 3 }).then(() => true));
      await waitFor('the watch to bring vms/c', 5000, async () => (await store.get('vms/c')) !== undefined);
      await waitFor('own writes to succeed again', 5000, () => store.put('vms/b', { n: 2 }).then(() => true));
      assert.ok(Date.now() - back < 8000);
      assert.deepEqual(
        (await other.list('vms/')).map((e) => e.key),
        ['vms/a', 'vms/b', 'vms/c'],
      );
    } finally {
      await store.close();
      await other.close();
      await own.stop();
    }
  });
});

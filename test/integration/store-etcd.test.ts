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
import { Leadership } from '../../src/controller/core/leadership.js';
import { LEADER_KEY } from '../../src/domain/ha.js';
import { systemClock } from '../../src/domain/clock.js';
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

describe('controllers standing for leader on etcd', () => {
  it('one leads; a standby takes over once it stops renewing, and the deposed one’s late writes fail and change nothing', async () => {
    const prefix = `/ferry-test/${randomUUID()}/`;
    const open = () => new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    const [a, b, reader] = [open(), open(), open()];
    const ttlMs = 2000;
    const first = new Leadership(a, systemClock, { name: 'host-1', pid: 1 }, ttlMs);
    const second = new Leadership(b, systemClock, { name: 'host-2', pid: 2 }, ttlMs);
    try {
      const lead = await first.campaign();
      a.fenceWith({ key: LEADER_KEY, createRevision: lead.revision });
      await a.put('vms/web', { node: 'host-1' });
      assert.deepEqual(await second.leader().then((l) => l && [l.name, l.pid]), ['host-1', 1]);
      // The second waits while the first renews.
      const waited: string[] = [];
      const ac = new AbortController();
      const standing = second.campaign(ac.signal, (l) => waited.push(l.name));
      const lost: string[] = [];
      const held = first.hold(lead, (why) => lost.push(why));
      await new Promise((r) => setTimeout(r, ttlMs * 2));
      assert.deepEqual(waited, ['host-1'], 'the standby saw who leads and waits');
      assert.deepEqual(lost, [], 'a leader that renews keeps the lead');
      // The first stops renewing (hung, or cut off from etcd): the second leads within the lease's TTL.
      const stoppedAt = Date.now();
      held.stop();
      const next = await standing;
      const tookMs = Date.now() - stoppedAt;
      assert.ok(tookMs <= ttlMs + 1500, `taken over ${tookMs} ms after the leader stopped renewing`);
      assert.ok(next.revision > lead.revision);
      b.fenceWith({ key: LEADER_KEY, createRevision: next.revision });
      assert.deepEqual((await second.leader())?.name, 'host-2');
      // A late write of the deposed leader: refused with one line, nothing changed; the new leader writes.
      for (const write of [
        () => a.put('vms/web', { node: 'stale' }),
        () => a.put('vms/web', { node: 'stale' }, { expectRevision: 0 }),
        () => a.delete('vms/web'),
      ]) {
        await assert.rejects(write(), (e: unknown) => {
          assert.ok(isFerryError(e, 'not-leader'), String(e));
          assert.match(
            (e as Error).message,
            new RegExp(`^this controller no longer leads \\(its leadership from revision ${lead.revision} ended\\); (put|delete) vms/web was not written$`),
          );
          return true;
        });
      }
      assert.deepEqual((await reader.get('vms/web'))?.value, { node: 'host-1' });
      await b.put('vms/web', { node: 'host-2' });
      assert.deepEqual((await reader.get('vms/web'))?.value, { node: 'host-2' });
      // A compare-and-set the new leader loses is still a conflict, not a lost lead.
      await assert.rejects(b.put('vms/web', { node: 'x' }, { expectRevision: 1 }), (e: unknown) => isFerryError(e, 'conflict'));
    } finally {
      await Promise.all([a.close(), b.close(), reader.close()]);
    }
  });
});

/**
 * The ClusterStore contract: one suite every store backend passes (SQLite
 * now, etcd with real hosts), so the controller may rely on the same
 * revisions, compare-and-set, leases and watches whichever runs under it.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ManualClock } from '../domain/clock.js';
import { isFerryError } from '../domain/errors.js';
import { type Change, type ClusterStore, update } from '../ports/store.js';

export interface StoreUnderTest {
  store: ClusterStore;
  /** Lets `ms` pass for the store's leases: a manual clock moves, a real store is waited for. */
  advance(ms: number): void | Promise<void>;
  /** A second handle on the same data, if the backend has such a thing (another process, another member). */
  second?(): Promise<ClusterStore>;
  dispose(): Promise<void>;
}

export interface BackendTraits {
  /** Whether the backend can be opened twice on the same data (a file, a cluster), so `second` exists. */
  handles: 'one' | 'many';
  /** How another handle's writes reach this one: at once, or by a watch (a mirror), so within a moment. */
  follows?: 'at-once' | 'by-watch';
}

export function storeContract(name: string, traits: BackendTraits, make: (clock: ManualClock) => Promise<StoreUnderTest>): void {
  describe(`ClusterStore contract: ${name}`, () => {
    let t: StoreUnderTest;
    let store: ClusterStore;
    beforeEach(async () => {
      t = await make(new ManualClock());
      store = t.store;
    });
    afterEach(() => t.dispose());

    it('puts and gets values with increasing revisions', async () => {
      const r1 = await store.put('vms/a', { n: 1 });
      const r2 = await store.put('vms/a', { n: 2 });
      assert.ok(r2 > r1);
      const e = await store.get<{ n: number }>('vms/a');
      assert.deepEqual(e?.value, { n: 2 });
      assert.equal(e?.modRevision, r2);
      assert.equal(e?.createRevision, r1);
      assert.equal(await store.revision(), r2);
      assert.equal(await store.get('vms/none'), undefined);
    });

    it('lists by prefix in key order, not matching neighbours', async () => {
      await store.put('vms/b', 2);
      await store.put('vms/a', 1);
      await store.put('vmsx/c', 3);
      await store.put('nodes/n', 4);
      assert.deepEqual(
        (await store.list('vms/')).map((e) => e.key),
        ['vms/a', 'vms/b'],
      );
    });

    it('compare-and-set refuses a stale revision and create-only refuses an existing key', async () => {
      const rev = await store.put('k', 'v1');
      await store.put('k', 'v2', { expectRevision: rev });
      await assert.rejects(store.put('k', 'v3', { expectRevision: rev }), (e: unknown) => isFerryError(e, 'conflict'));
      await assert.rejects(store.put('k', 'v3', { expectRevision: 0 }), (e: unknown) => isFerryError(e, 'conflict'));
      assert.equal((await store.get('k'))?.value, 'v2');
      await assert.rejects(store.delete('k', { expectRevision: rev }), (e: unknown) => isFerryError(e, 'conflict'));
      assert.equal(await store.delete('k'), true);
      assert.equal(await store.delete('k'), false);
    });

    it('update() retries a compare-and-set that lost a race', async () => {
      await store.put('counter', 0);
      let raced = false;
      const result = await update<number>(store, 'counter', async (n) => {
        if (!raced) {
          raced = true;
          // another writer lands between our read and our write
          await store.put('counter', 10);
        }
        return (n ?? 0) + 1;
      });
      assert.equal(result, 11);
      assert.equal((await store.get('counter'))?.value, 11);
    });

    it('removes keys of a lease that expires and keeps those that are renewed', async () => {
      // Whole seconds (etcd's unit), with half a second either side for a real store's expiry sweep.
      const lease = await store.grantLease(3000);
      const kept = await store.grantLease(3000);
      await store.put('nodes/a', 'alive', { lease });
      await store.put('nodes/b', 'alive', { lease: kept });
      await t.advance(1500);
      await store.keepAlive(kept);
      await t.advance(2500);
      assert.equal(await store.get('nodes/a'), undefined);
      assert.equal((await store.get('nodes/b'))?.value, 'alive');
      await assert.rejects(store.keepAlive(lease), (e: unknown) => isFerryError(e, 'invalid-argument'));
      await store.revokeLease(kept);
      assert.equal(await store.get('nodes/b'), undefined);
    });

    it('watches changes under a prefix after a revision, in order, including deletes', async () => {
      const start = await store.put('vms/x', 'before');
      const seen: Change[] = [];
      const stop = store.watch('vms/', start, (c) => seen.push(c));
      await store.put('vms/a', 1);
      await store.put('nodes/ignored', 1);
      await store.delete('vms/x');
      for (let i = 0; i < 200 && seen.length < 2; i++) await new Promise((r) => setImmediate(r));
      for (let i = 0; i < 100 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
      stop();
      assert.deepEqual(
        seen.map((c) => [c.type, c.key]),
        [
          ['put', 'vms/a'],
          ['delete', 'vms/x'],
        ],
      );
      assert.ok(seen[0]!.revision < seen[1]!.revision);
    });

    if (traits.handles === 'many') {
      it("a second handle sees the first one's writes", async () => {
        assert.ok(t.second, 'a backend with many handles opens a second one');
        const other = await t.second();
        await other.put('shared', 'from-other');
        if (traits.follows === 'by-watch') {
          for (let i = 0; i < 200 && !(await store.get('shared')); i++) await new Promise((r) => setTimeout(r, 10));
        }
        assert.equal((await store.get('shared'))?.value, 'from-other');
        await other.close();
      });
    }
  });
}

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ManualClock } from '../../src/domain/clock.js';
import { isFerryError } from '../../src/domain/errors.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import { type Change, update } from '../../src/ports/store.js';

describe('SQLite cluster store', () => {
  let dir: string;
  let clock: ManualClock;
  let store: SqliteStore;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-store-'));
    clock = new ManualClock();
    store = new SqliteStore(path.join(dir, 'store.db'), clock, 10);
  });
  afterEach(async () => {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('puts and gets values with increasing revisions', async () => {
    const r1 = await store.put('vms/a', { n: 1 });
    const r2 = await store.put('vms/a', { n: 2 });
    assert.ok(r2 > r1);
    const e = await store.get<{ n: number }>('vms/a');
    assert.deepEqual(e?.value, { n: 2 });
    assert.equal(e?.modRevision, r2);
    assert.equal(e?.createRevision, r1);
    assert.equal(await store.revision(), r2);
  });

  it('lists by prefix in key order, not matching neighbours', async () => {
    await store.put('vms/b', 2);
    await store.put('vms/a', 1);
    await store.put('vmsx/c', 3);
    await store.put('nodes/n', 4);
    assert.deepEqual((await store.list('vms/')).map((e) => e.key), ['vms/a', 'vms/b']);
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
    const result = await update<number>(store, 'counter', (n) => {
      if (!raced) {
        raced = true;
        // another writer sneaks in between our read and our write
        void store.put('counter', 10);
      }
      return (n ?? 0) + 1;
    });
    assert.equal(result, 11);
    assert.equal((await store.get('counter'))?.value, 11);
  });

  it('removes keys of a lease that expires and keeps those that are renewed', async () => {
    const lease = await store.grantLease(1000);
    const kept = await store.grantLease(1000);
    await store.put('nodes/a', 'alive', { lease });
    await store.put('nodes/b', 'alive', { lease: kept });
    clock.advance(800);
    await store.keepAlive(kept);
    clock.advance(400);
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
    for (let i = 0; i < 100 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    stop();
    assert.deepEqual(seen.map((c) => [c.type, c.key]), [['put', 'vms/a'], ['delete', 'vms/x']]);
    assert.ok(seen[0]!.revision < seen[1]!.revision);
  });

  it('sees writes made by another process through the same file', async () => {
    const other = new SqliteStore(path.join(dir, 'store.db'), clock, 10);
    await other.put('shared', 'from-other');
    assert.equal((await store.get('shared'))?.value, 'from-other');
    await other.close();
  });
});

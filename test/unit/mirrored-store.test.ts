/**
 * The controller's mirror of the store when its watch goes quiet: the
 * stream looks open but brings nothing (an etcd member that stopped
 * answering without closing the connection; a client stream that silently
 * stopped, microsoft/etcd3#72). The probe finds that a revision the backend
 * had has not come by the watch, starts the watch again from what it last
 * brought, and the copy catches up.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Change, ClusterStore } from '../../src/ports/store.js';
import { MirroredStore } from '../../src/store/mirrored-store.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';

async function waitFor(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A backend whose watches can be made to go quiet: they stay open and bring nothing more. */
function quietable(store: SqliteStore): { backend: ClusterStore; silence(): void; watchesOpened: () => number } {
  let opened = 0;
  const live = new Set<{ quiet: boolean }>();
  const backend = new Proxy(store, {
    get: (target, prop, receiver) => {
      if (prop === 'watch')
        return (prefix: string, after: number, onChange: (c: Change) => void) => {
          opened++;
          const w = { quiet: false };
          live.add(w);
          const stop = target.watch(prefix, after, (c) => {
            if (!w.quiet) onChange(c);
          });
          return () => {
            live.delete(w);
            stop();
          };
        };
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return {
    backend,
    silence: () => {
      for (const w of live) w.quiet = true;
    },
    watchesOpened: () => opened,
  };
}

describe('a mirrored store whose watch goes quiet', () => {
  it('starts the watch again from what it last brought, and the copy catches up', async () => {
    const sqlite = new SqliteStore(':memory:', undefined, 10);
    const q = quietable(sqlite);
    const mirror = new MirroredStore(q.backend, { backend: 'etcd', at: 'test' }, 50);
    try {
      await mirror.start();
      // Another writer's change comes by the watch.
      await sqlite.put('vms/a', { n: 1 });
      await waitFor('vms/a by the watch', 2000, async () => (await mirror.get('vms/a')) !== undefined);
      assert.equal(mirror.rewatches, 0, 'a watch that keeps up is left alone');
      q.silence();
      await sqlite.put('vms/b', { n: 2 });
      await sqlite.delete('vms/a');
      await waitFor('the copy to catch up', 2000, async () => (await mirror.get('vms/b')) !== undefined && (await mirror.get('vms/a')) === undefined);
      assert.equal(mirror.rewatches, 1);
      assert.equal(q.watchesOpened(), 2);
      assert.deepEqual((await mirror.get('vms/b'))?.value, { n: 2 });
      // The new watch follows on.
      await sqlite.put('vms/c', { n: 3 });
      await waitFor('vms/c by the new watch', 2000, async () => (await mirror.get('vms/c')) !== undefined);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(mirror.rewatches, 1, 'and it is not started again while it keeps up');
    } finally {
      await mirror.close(); // closes the backend too
    }
  });
});

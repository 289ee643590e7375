/**
 * A cluster whose state lives in a real etcd (`ferry up --etcd URL`), with
 * real QEMU: its VMs are etcd keys, not rows of store.db; while etcd is away
 * the API answers reads from what the controller last saw and refuses
 * changes with one line (exit 1), the VMs keep running; when etcd is back
 * the cluster carries on.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { EtcdStore } from '../../src/store/etcd-store.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { type TestEtcd, startEtcd } from '../helpers/etcd.js';

describe('a cluster on etcd', () => {
  let etcd: TestEtcd;
  let c: TestCluster;
  before(async () => {
    etcd = await startEtcd();
    c = await TestCluster.start({ nodes: 1, etcd: [etcd.endpoint] });
  });
  after(async () => {
    await c?.stop();
    await etcd?.stop();
  });

  it('keeps its state in etcd, not in a SQLite file', async () => {
    assert.match(await c.ferryOk(['status']), new RegExp(`^store: etcd at ${etcd.endpoint}$`, 'm'));
    await c.createAndStart('web', { node: 'node-1' });
    const direct = new EtcdStore({ endpoints: [etcd.endpoint] });
    try {
      const vm = await direct.get<{ name: string; node: string; state: string }>('vms/web');
      assert.equal(vm?.value.node, 'node-1');
      assert.equal(vm?.value.state, 'running');
    } finally {
      await direct.close();
    }
    assert.equal(fs.existsSync(c.layout.store), false, 'no store.db');
  });

  it('answers reads while etcd is away, refuses changes with one line, and carries on when it is back', async () => {
    const ticks = c.console('web').ticks.length;
    await etcd.pause();
    try {
      const list = await c.ferryJson<{ name: string; state: string }[]>(['vm', 'list']);
      assert.deepEqual(
        list.map((v) => [v.name, v.state]),
        [['web', 'running']],
      );
      const r = await c.ferry(['vm', 'create', 'late', '--memory', '64']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^error: the cluster store \\(etcd at ${etcd.endpoint}\\) did not answer [^\\n]+\\n$`));
      assert.equal(r.stdout, '');
      await waitFor('status to say the store does not answer', 10_000, async () =>
        /^store: etcd at \S+, NOT ANSWERING since /m.test(await c.ferryOk(['status'])),
      );
      // The guest does not depend on the store.
      await waitFor('the guest to keep ticking', 10_000, () => c.console('web').ticks.length > ticks + 2);
    } finally {
      await etcd.resume();
    }
    await waitFor('changes to be accepted again', 15_000, async () => (await c.ferry(['vm', 'create', 'late', '--memory', '64'])).code === 0);
    assert.match(await c.ferryOk(['status']), new RegExp(`^store: etcd at ${etcd.endpoint}$`, 'm'));
    const names = (await c.ferryJson<{ name: string }[]>(['vm', 'list'])).map((v) => v.name).sort();
    assert.deepEqual(names, ['late', 'web']);
  });
});

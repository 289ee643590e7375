/** A node's record under concurrent writers: a heartbeat never undoes a maintenance set while it was under way. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StoreNodes } from '../../src/controller/core/nodes.js';
import { ManualClock } from '../../src/domain/clock.js';
import type { Heartbeat, NodeRecord } from '../../src/domain/records.js';
import type { ClusterStore } from '../../src/ports/store.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';

describe('node records', () => {
  it('keep maintenance that was set between a heartbeat reading the record and writing it', async () => {
    const clock = new ManualClock();
    const inner = new SqliteStore(':memory:', clock);
    const ref: { nodes?: StoreNodes } = {};
    let reads = 0;
    // The store a heartbeat sees: right after its first read of the node, a drain puts the node in maintenance.
    const store: ClusterStore = Object.assign(Object.create(inner) as ClusterStore, {
      get: async <T>(key: string) => {
        const got = await inner.get<T>(key);
        if (key === 'nodes/n1' && ++reads === 2) await ref.nodes!.setState('n1', 'maintenance');
        return got;
      },
    });
    const config = {
      current: () => ({ id: 'c', name: 'ferry', createdAtMs: 0, vmSubnet: '10.99.0.0/16', nodes: [{ name: 'n1', migrationAddress: '127.0.0.1' }] }),
      save: () => {},
    };
    const nodes = (ref.nodes = new StoreNodes(store, config, clock, { emit: async () => {} }, () => {
      throw new Error('no agent calls here');
    }));
    await nodes.initialise();
    const hb = (memoryFreeMiB: number): Heartbeat => ({
      name: 'n1',
      url: 'http://n1',
      clusterId: 'c',
      migrationAddress: '127.0.0.1',
      capabilities: {
        accelerator: 'tcg',
        acceleratorReason: 'test',
        cpu: { vendor: 'AuthenticAMD', model: 'qemu64', features: [] },
        qemuVersion: '10.0.0',
        memoryTotalMiB: 4096,
        memoryFreeMiB,
      },
      vms: [],
    });
    await nodes.heartbeat(hb(4096)); // the node comes up (read 1)
    await nodes.heartbeat(hb(3840)); // its free memory changed: written again, racing the drain (read 2)
    assert.equal((await inner.get<NodeRecord>('nodes/n1'))?.value.state, 'maintenance');
    await inner.close();
  });
});

/** Choosing the networks a migration may cross (R6): pure rules. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ClusterNetwork, defaultNetworks, migrationCandidates } from '../../src/domain/networks.js';

const net = (name: string, role: ClusterNetwork['role'], metric: number, nodes = ['a', 'b']): ClusterNetwork => ({
  name,
  role,
  metric,
  subnet: '127.9.9.0/24',
  addresses: Object.fromEntries(nodes.map((n, i) => [n, `127.9.9.${i + 1}`])),
});

describe('migration network choice', () => {
  it('ranks migration networks by metric, then management ones, and never storage or none', () => {
    const c = migrationCandidates(
      [net('mgmt', 'management', 10), net('slow', 'migration', 300), net('fast', 'migration', 100), net('san', 'storage', 1), net('off', 'none', 1)],
      'a',
      'b',
    );
    assert.deepEqual(
      c.candidates.map((x) => x.network.name),
      ['fast', 'slow', 'mgmt'],
    );
    assert.deepEqual(c.excluded, [
      { network: 'off', reason: 'role none' },
      { network: 'san', reason: 'role storage' },
    ]);
  });

  it('skips a network one of the two nodes has no address on', () => {
    const c = migrationCandidates([net('m1', 'migration', 1, ['a']), net('m2', 'migration', 2)], 'a', 'b');
    assert.deepEqual(
      c.candidates.map((x) => [x.network.name, x.from, x.to]),
      [['m2', '127.9.9.1', '127.9.9.2']],
    );
    assert.deepEqual(c.excluded, [{ network: 'm1', reason: 'no address for b' }]);
  });

  it('gives a new cluster three networks with a distinct loopback address per node on each', () => {
    const nets = defaultNetworks(['node-1', 'node-2'], 42);
    assert.deepEqual(
      nets.map((n) => [n.name, n.role, n.subnet, n.addresses['node-2']]),
      [
        ['management', 'management', '127.42.0.0/24', '127.42.0.2'],
        ['migration', 'migration', '127.42.1.0/24', '127.42.1.2'],
        ['storage', 'storage', '127.42.2.0/24', '127.42.2.2'],
      ],
    );
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planDrain } from '../../src/domain/drain.js';
import { planBalance } from '../../src/domain/balance.js';
import { cpuBlockers } from '../../src/domain/compat.js';
import type { NodeLoad } from '../../src/domain/placement.js';
import type { NodeRecord, VmRecord } from '../../src/domain/records.js';

const node = (name: string, state: NodeRecord['state'], totalMiB: number): NodeRecord => ({
  name,
  url: 'http://x',
  migrationAddress: '127.0.1.1',
  state,
  capabilities: {
    accelerator: 'tcg',
    acceleratorReason: '',
    cpu: { vendor: 'v', model: 'm', features: [] },
    qemuVersion: '10',
    memoryTotalMiB: totalMiB,
    memoryFreeMiB: totalMiB,
  },
});
const vm = (name: string, on: string, memoryMiB: number, extra: Partial<VmRecord> = {}): VmRecord => ({
  name,
  memoryMiB,
  cpus: 1,
  diskGiB: 1,
  diskPath: '/d',
  mac: 'm',
  ip: 'i',
  workload: 'idle',
  node: on,
  state: 'running',
  createdAtMs: 0,
  ...extra,
});
const load = (n: NodeRecord, committedMiB: number): NodeLoad => ({ node: n, committedMiB, vmCount: 0 });

describe('drain planning (R12)', () => {
  it('moves the biggest VMs first, each to the node with the most room left, spreading them', () => {
    const plan = planDrain(
      'n1',
      'live',
      [vm('small', 'n1', 128), vm('big', 'n1', 512), vm('mid', 'n1', 256), vm('elsewhere', 'n2', 128)],
      [load(node('n1', 'up', 2048), 896), load(node('n2', 'up', 1024), 128), load(node('n3', 'up', 1024), 0), load(node('n4', 'maintenance', 4096), 0)],
    );
    assert.deepEqual(plan.blockers, []);
    assert.deepEqual(
      plan.steps.map((s) => [s.order, s.vm, s.to]),
      [
        [1, 'big', 'n3'],
        [2, 'mid', 'n2'],
        [3, 'small', 'n2'],
      ],
    );
    assert.equal(
      plan.estimatedMs,
      plan.steps.reduce((s, x) => s + x.estimatedMs, 0),
    );
  });

  it('names every VM that cannot be placed, and every VM that cannot move', () => {
    const plan = planDrain(
      'n1',
      'live',
      [vm('huge', 'n1', 4096), vm('fits', 'n1', 256), vm('busy', 'n1', 128, { migrationId: 'm-1' })],
      [load(node('n1', 'up', 8192), 4480), load(node('n2', 'up', 1024), 512)],
    );
    assert.deepEqual(plan.blockers, ["VM 'busy' is migrating; wait for it or cancel it", "no node has room for VM 'huge' (needs 4096 MiB; n2: 512 MiB free)"]);
    assert.deepEqual(
      plan.steps.map((s) => s.vm),
      ['fits'],
    );
  });

  it('refuses a live drain of the last up node, while a save drain needs no target', () => {
    const loads = [load(node('n1', 'up', 1024), 256), load(node('n2', 'maintenance', 1024), 0)];
    assert.match(planDrain('n1', 'live', [vm('a', 'n1', 256)], loads).blockers[0]!, /no other node is up/);
    const save = planDrain('n1', 'save', [vm('a', 'n1', 256)], loads);
    assert.deepEqual([save.blockers, save.steps.map((s) => [s.vm, s.to])], [[], [['a', undefined]]]);
  });
});

describe('rebalancing (R14)', () => {
  const caps = (n: NodeRecord) => ({ ...n, capabilities: { ...n.capabilities!, cpuCount: 4 } });
  it('moves VMs off an overloaded node until the spread is within the threshold, then plans nothing', () => {
    const vms = [vm('a', 'n1', 256), vm('b', 'n1', 256), vm('c', 'n1', 256)];
    const loads = [
      load(caps(node('n1', 'up', 1024)), 768),
      load(caps(node('n2', 'up', 1024)), 0),
      load(caps(node('n3', 'up', 1024)), 0),
      load(caps(node('n4', 'maintenance', 1024)), 0),
    ];
    const plan = planBalance(loads, vms, { thresholdPct: 20, recentlyMoved: new Set() });
    assert.deepEqual(
      plan.moves.map((m) => [m.vm, m.from, m.to]),
      [
        ['a', 'n1', 'n2'],
        ['b', 'n1', 'n3'],
      ],
    );
    assert.deepEqual(plan.before, { n1: 75, n2: 0, n3: 0 });
    assert.deepEqual(plan.after, { n1: 25, n2: 25, n3: 25 });
    const moved = vms.map((v) => ({ ...v, node: plan.moves.find((m) => m.vm === v.name)?.to ?? v.node }));
    const again = planBalance(
      [load(caps(node('n1', 'up', 1024)), 256), load(caps(node('n2', 'up', 1024)), 256), load(caps(node('n3', 'up', 1024)), 256)],
      moved,
      { thresholdPct: 20, recentlyMoved: new Set() },
    );
    assert.deepEqual(again.moves, [], 'stable once balanced');
  });

  it('never moves a VM that moved within the interval, nor one that does not fit', () => {
    const vms = [vm('a', 'n1', 512), vm('b', 'n1', 256)];
    const loads = [load(caps(node('n1', 'up', 1024)), 768), load(caps(node('n2', 'up', 400)), 0)];
    const plan = planBalance(loads, vms, { thresholdPct: 20, recentlyMoved: new Set(['b']) });
    assert.deepEqual(plan.moves, [], 'b moved recently and a does not fit on n2');
  });
});

describe('CPU compatibility rules (R9)', () => {
  const westmere = { vendor: 'GenuineIntel', model: 'Westmere', features: ['sse2', 'sse4.2', 'aes', 'pclmulqdq'] };
  const nehalem = { vendor: 'GenuineIntel', model: 'Nehalem', features: ['sse2', 'sse4.2'] };
  const opteron = { vendor: 'AuthenticAMD', model: 'Opteron_G2', features: ['sse2', 'sse4.2', 'aes', 'pclmulqdq'] };
  it('lets an older guest onto a newer node, names the features a node lacks, and never mixes vendors', () => {
    assert.deepEqual(cpuBlockers(nehalem, westmere, 'n1'), []);
    assert.deepEqual(cpuBlockers(westmere, nehalem, 'n2'), ["node 'n2' (Nehalem) lacks CPU features the VM uses: aes, pclmulqdq"]);
    assert.deepEqual(cpuBlockers(westmere, opteron, 'n3'), [
      "CPU vendor mismatch: the VM runs on GenuineIntel (Westmere), node 'n3' is AuthenticAMD (Opteron_G2)",
    ]);
  });
});

describe('CPU compatibility in drain and balance planning', () => {
  const intel = { vendor: 'GenuineIntel', model: 'Westmere', features: ['sse2', 'aes'] };
  const amd = { vendor: 'AuthenticAMD', model: 'Opteron_G2', features: ['sse2', 'aes'] };
  const withCpu = (n: NodeRecord, cpu: typeof intel) => ({ ...n, capabilities: { ...n.capabilities!, cpu, cpuCount: 4 } });
  it('drains only onto nodes whose CPU can run the guest, and names a VM no node can run', () => {
    const vms = [vm('a', 'n1', 128, { guestCpu: intel })];
    const plan = planDrain('n1', 'live', vms, [
      load(withCpu(node('n1', 'up', 1024), intel), 128),
      load(withCpu(node('n2', 'up', 4096), amd), 0),
      load(withCpu(node('n3', 'up', 512), intel), 0),
    ]);
    assert.deepEqual(
      plan.steps.map((s) => s.to),
      ['n3'],
      'the AMD node has more room but cannot run it',
    );
    const none = planDrain('n1', 'live', vms, [load(withCpu(node('n1', 'up', 1024), intel), 128), load(withCpu(node('n2', 'up', 4096), amd), 0)]);
    assert.deepEqual(none.blockers, ["no up node has a CPU compatible with VM 'a' (GenuineIntel Westmere)"]);
  });

  it('never balances a VM onto a node of another vendor', () => {
    const vms = [vm('a', 'n1', 256, { guestCpu: intel }), vm('b', 'n1', 256, { guestCpu: intel })];
    const plan = planBalance([load(withCpu(node('n1', 'up', 1024), intel), 512), load(withCpu(node('n2', 'up', 1024), amd), 0)], vms, {
      thresholdPct: 20,
      recentlyMoved: new Set(),
    });
    assert.deepEqual(plan.moves, []);
  });
});

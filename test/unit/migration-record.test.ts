import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { placeVm } from '../../src/domain/placement.js';
import type { NodeRecord } from '../../src/domain/records.js';
import { type MigrationRecord, STEPS, queueOrder, startable, toReport } from '../../src/domain/migration.js';
import { toTransferProgress } from '../../src/qemu/migration-params.js';
import { DEFAULT_TUNING } from '../../src/domain/tuning.js';

describe('migration report', () => {
  it('lists finished steps in R3 order with their durations and keeps the error', () => {
    const r: MigrationRecord = {
      id: 'm1',
      vm: 'web',
      mode: 'live',
      from: 'node-1',
      to: 'node-2',
      phase: 'failed',
      status: 'failed',
      requestedAtMs: 0,
      priority: 'manual',
      steps: [
        { name: 'connect', startedAtMs: 0, endedAtMs: 5, ms: 5 },
        { name: 'config', startedAtMs: 5, endedAtMs: 7, ms: 2 },
        { name: 'create', startedAtMs: 7 },
      ],
      tuning: DEFAULT_TUNING,
      totalMs: 50,
      error: 'target QEMU died',
      cleanupErrors: ['remove target VM: agent unreachable'],
    };
    const report = toReport(r);
    assert.deepEqual(report.steps, [
      { name: 'connect', ms: 5 },
      { name: 'config', ms: 2 },
    ]);
    assert.equal(report.error, 'target QEMU died');
    assert.deepEqual(report.cleanupErrors, ['remove target VM: agent unreachable']);
    assert.equal(report.downtimeMs, null);
    assert.deepEqual([...STEPS], ['connect', 'config', 'create', 'memory', 'disks', 'resume', 'network']);
  });

  it("maps QEMU's query-migrate into Ferry's progress", () => {
    const p = toTransferProgress({
      status: 'active',
      ram: {
        transferred: 1000,
        remaining: 500,
        total: 4096,
        duplicate: 0,
        normal: 1,
        'normal-bytes': 4096,
        'dirty-pages-rate': 10,
        mbps: 800,
        'dirty-sync-count': 3,
        'postcopy-requests': 0,
        'page-size': 4096,
        'multifd-bytes': 0,
        'pages-per-second': 0,
      },
      'cpu-throttle-percentage': 20,
    });
    assert.equal(p.status, 'active');
    assert.equal(p.dirtyRateBytesPerSec, 40960);
    assert.equal(p.throughputBytesPerSec, 100e6);
    assert.equal(p.rounds, 3);
    assert.equal(p.throttlePercent, 20);
    assert.equal(toTransferProgress({ status: 'postcopy-active' }).status, 'postcopy');
  });
});

describe('placement', () => {
  const node = (name: string, state: NodeRecord['state'], totalMiB: number): NodeRecord => ({
    name,
    url: 'http://x',
    migrationAddress: '127.0.1.1',
    state,
    capabilities: {
      accelerator: 'tcg',
      acceleratorReason: '',
      cpu: { vendor: 'v', model: 'm', features: [] },
      qemuVersion: '7.2',
      memoryTotalMiB: totalMiB,
      memoryFreeMiB: totalMiB,
    },
  });

  it('picks the up node with the most free memory and says why others were passed over', () => {
    const r = placeVm(512, [
      { node: node('node-1', 'up', 1024), committedMiB: 768, vmCount: 2 },
      { node: node('node-2', 'up', 1024), committedMiB: 256, vmCount: 1 },
      { node: node('node-3', 'maintenance', 4096), committedMiB: 0, vmCount: 0 },
      { node: node('node-4', 'down', 4096), committedMiB: 0, vmCount: 0 },
    ]);
    assert.equal(r.node, 'node-2');
    assert.deepEqual(
      r.blockers.map((b) => `${b.node}: ${b.reason}`),
      ['node-1: 256 MiB free, 512 MiB needed', 'node-3: node is maintenance', 'node-4: node is down'],
    );
  });

  it('finds no node when none has room', () => {
    const r = placeVm(2048, [{ node: node('node-1', 'up', 1024), committedMiB: 0, vmCount: 0 }]);
    assert.equal(r.node, undefined);
    assert.equal(r.blockers.length, 1);
  });
});

describe('migration queue and slots (R11)', () => {
  const rec = (
    id: string,
    from: string,
    to: string,
    status: MigrationRecord['status'],
    priority: MigrationRecord['priority'] = 'manual',
    at = 0,
  ): MigrationRecord => ({
    id,
    vm: id,
    mode: 'live',
    from,
    to,
    phase: status === 'running' ? 'memory' : 'queued',
    status,
    requestedAtMs: at,
    priority,
    steps: [],
    tuning: DEFAULT_TUNING,
  });

  it('starts two migrations on disjoint node pairs at one slot per node, and queues the rest', () => {
    const all = [
      rec('a', 'n1', 'n2', 'queued', 'manual', 1),
      rec('b', 'n1', 'n2', 'queued', 'manual', 2),
      rec('c', 'n3', 'n4', 'queued', 'manual', 3),
      rec('d', 'n3', 'n4', 'queued', 'manual', 4),
    ];
    assert.deepEqual(
      startable(all, 1).map((m) => m.id),
      ['a', 'c'],
    );
    assert.deepEqual(
      startable(all, 2).map((m) => m.id),
      ['a', 'b', 'c', 'd'],
    );
  });

  it('counts running migrations against both their nodes', () => {
    const all = [rec('r', 'n1', 'n3', 'running'), rec('q1', 'n2', 'n3', 'queued', 'manual', 1), rec('q2', 'n2', 'n4', 'queued', 'manual', 2)];
    assert.deepEqual(
      startable(all, 1).map((m) => m.id),
      ['q2'],
      'n3 is busy receiving; n2→n4 may go',
    );
  });

  it('orders drain before manual before rebalance, first come first served within one', () => {
    const all = [
      rec('bal', 'n1', 'n2', 'queued', 'rebalance', 1),
      rec('man2', 'n1', 'n2', 'queued', 'manual', 3),
      rec('man1', 'n1', 'n2', 'queued', 'manual', 2),
      rec('drain', 'n1', 'n2', 'queued', 'drain', 4),
    ];
    assert.deepEqual(
      queueOrder(all).map((m) => m.id),
      ['drain', 'man1', 'man2', 'bal'],
    );
    assert.deepEqual(
      startable(all, 1).map((m) => m.id),
      ['drain'],
    );
  });
});

/**
 * CPU compatibility pre-flight (R9) with real QEMU and nodes of different
 * CPU models (TCG emulates any): the guest's CPU travels with it, a target
 * that lacks features the guest uses is refused with them named, Intel and
 * AMD never mix, and --check lists every blocker at once without moving.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { MigrationReport } from '../../src/migration/record.js';
import { TestCluster } from '../helpers/cluster.js';

describe('CPU compatibility pre-flight', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 3, cpuModels: ['Westmere', 'Nehalem', 'Opteron_G2'], nodeMemoryMiB: 1024 });
  });
  after(async () => {
    await c?.stop();
  });

  it('reports each node its declared model with features from QEMU', async () => {
    const nodes = await c.ferryJson<{ name: string; capabilities: { cpu: { vendor: string; model: string; features: string[] } } }[]>(['node', 'list']);
    assert.deepEqual(nodes.map((n) => [n.name, n.capabilities.cpu.model, n.capabilities.cpu.vendor]), [
      ['node-1', 'Westmere', 'GenuineIntel'], ['node-2', 'Nehalem', 'GenuineIntel'], ['node-3', 'Opteron_G2', 'AuthenticAMD'],
    ]);
    assert.ok(nodes[0]!.capabilities.cpu.features.includes('aes'));
    assert.ok(!nodes[1]!.capabilities.cpu.features.includes('aes'));
  });

  it('moves an older-generation guest to a newer node and back, keeping its CPU model', async () => {
    await c.createAndStart('old', { node: 'node-2', memoryMiB: 128 });
    const up = await c.ferry(['vm', 'migrate', 'old', '--to', 'node-1', '--json']);
    assert.equal(up.code, 0, up.stderr);
    assert.equal((JSON.parse(up.stdout) as MigrationReport).status, 'completed');
    const onWestmere = (await c.agent('node-1').list()).find((i) => i.name === 'old')!;
    assert.match(fs.readFileSync(`/proc/${onWestmere.pid}/cmdline`, 'utf8').replace(/\0/g, ' '), /-cpu Nehalem /, 'the guest kept its Nehalem CPU on the Westmere node');
    const back = await c.ferry(['vm', 'migrate', 'old', '--to', 'node-2']);
    assert.equal(back.code, 0, back.stderr);
  });

  it('refuses a target that lacks features the guest uses, naming them, and never mixes vendors', async () => {
    await c.createAndStart('new', { node: 'node-1', memoryMiB: 128 });
    const down = await c.ferry(['vm', 'migrate', 'new', '--to', 'node-2']);
    assert.equal(down.code, 2);
    assert.match(down.stderr.trim(), /^error: node 'node-2' \(Nehalem\) lacks CPU features the VM uses: aes, arat, pclmuldq, pclmulqdq$/);
    const amd = await c.ferry(['vm', 'migrate', 'new', '--to', 'node-3']);
    assert.equal(amd.code, 2);
    assert.match(amd.stderr, /CPU vendor mismatch: the VM runs on GenuineIntel \(Westmere\), node 'node-3' is AuthenticAMD \(Opteron_G2\)/);
    assert.equal((await c.vm('new')).node, 'node-1');
  });

  it('--check prints every blocker at once and moves nothing', async () => {
    await c.createAndStart('amd', { node: 'node-3', memoryMiB: 384 });
    await c.createAndStart('fat', { node: 'node-1', memoryMiB: 768 });
    const r = await c.ferry(['vm', 'migrate', 'fat', '--to', 'node-3', '--check', '--json']);
    assert.equal(r.code, 1);
    const res = JSON.parse(r.stdout) as { ok: boolean; blockers: string[] };
    assert.equal(res.ok, false);
    assert.deepEqual(res.blockers, [
      "node 'node-3' has 640 MiB free, VM 'fat' needs 768 MiB",
      "CPU vendor mismatch: the VM runs on GenuineIntel (Westmere), node 'node-3' is AuthenticAMD (Opteron_G2)",
    ]);
    const refused = await c.ferry(['vm', 'migrate', 'fat', '--to', 'node-3']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr.trim(), /^error: node 'node-3' has 640 MiB free.*; CPU vendor mismatch/, 'a real request names every blocker too');
    const human = await c.ferry(['vm', 'migrate', 'new', '--to', 'node-3', '--check']);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /new cannot live-migrate to node-3:\n {2}- CPU vendor mismatch/);
    const fine = await c.ferry(['vm', 'migrate', 'old', '--to', 'node-1', '--check']);
    assert.equal(fine.code, 0);
    assert.match(fine.stdout, /old can live-migrate to node-1: no blockers/);
    assert.equal((await c.client.call<unknown[]>('GET', '/api/v1/migrations')).filter((m) => (m as { vm: string }).vm !== 'old').length, 0);
  });
});

/**
 * CPU compatibility pre-flight (R9) with real QEMU and nodes of different
 * CPU models (TCG emulates any): the guest's CPU travels with it, a target
 * that lacks features the guest uses is refused with them named, Intel and
 * AMD never mix, and --check lists every blocker at once without moving.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { MigrationReport } from '../../src/domain/migration.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { eventRoutes } from '../../src/api/routes/events.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';
import { vmRoutes } from '../../src/api/routes/vms.js';

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
    assert.deepEqual(
      nodes.map((n) => [n.name, n.capabilities.cpu.model, n.capabilities.cpu.vendor]),
      [
        ['node-1', 'Westmere', 'GenuineIntel'],
        ['node-2', 'Nehalem', 'GenuineIntel'],
        ['node-3', 'Opteron_G2', 'AuthenticAMD'],
      ],
    );
    assert.ok(nodes[0]!.capabilities.cpu.features.includes('aes'));
    assert.ok(!nodes[1]!.capabilities.cpu.features.includes('aes'));
  });

  it('moves an older-generation guest to a newer node and back, keeping its CPU model', async () => {
    await c.createAndStart('old', { node: 'node-2', memoryMiB: 128 });
    const up = await c.ferry(['vm', 'migrate', 'old', '--to', 'node-1', '--json']);
    assert.equal(up.code, 0, up.stderr);
    assert.equal((JSON.parse(up.stdout) as MigrationReport).status, 'completed');
    const onWestmere = (await c.agent('node-1').list()).find((i) => i.name === 'old')!;
    assert.match(
      fs.readFileSync(`/proc/${onWestmere.pid}/cmdline`, 'utf8').replace(/\0/g, ' '),
      /-cpu Nehalem /,
      'the guest kept its Nehalem CPU on the Westmere node',
    );
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
    assert.equal((await c.api.call(migrationRoutes.list, {})).filter((m) => (m as { vm: string }).vm !== 'old').length, 0);
  });

  it('runs a compat VM on the Intel baseline, moves it across generations, and never changes compat while it runs', async () => {
    assert.equal((await c.ferry(['vm', 'stop', 'fat'])).code, 0);
    const created = await c.ferry(['vm', 'create', 'cmp', '--compat', '--node', 'node-1', '--memory', '128', '--workload', 'memory:8']);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /processor compatibility mode on/);
    assert.equal((await c.ferry(['vm', 'start', 'cmp'])).code, 0);
    const shown = await c.ferryJson<{ settings: unknown; cpuBaselines: { vendor: string; nodes: string[]; model: string; features: string[] }[] }>([
      'cluster',
      'show',
    ]);
    const intel = shown.cpuBaselines.find((b) => b.vendor === 'GenuineIntel')!;
    assert.deepEqual(intel.nodes, ['node-1', 'node-2']);
    const nodes = await c.ferryJson<{ name: string; capabilities: { cpu: { features: string[] } } }[]>(['node', 'list']);
    const nehalem = nodes.find((n) => n.name === 'node-2')!.capabilities.cpu.features;
    assert.deepEqual(intel.features, nehalem, 'Westmere and Nehalem share exactly the Nehalem features');
    const vm = await c.vm('cmp');
    assert.equal(vm.node, 'node-1');
    assert.equal(vm.guestCpu?.model, intel.model);
    assert.ok(!vm.guestCpu?.features.includes('aes'), "the compat guest does not get the Westmere node's AES");
    const inst = (await c.agent('node-1').list()).find((i) => i.name === 'cmp')!;
    assert.match(fs.readFileSync(`/proc/${inst.pid}/cmdline`, 'utf8').replace(/\0/g, ' '), new RegExp(`-cpu ${intel.model} `));

    const refused = await c.ferry(['vm', 'set', 'cmp', '--compat', 'off']);
    assert.equal(refused.code, 2);
    assert.equal(refused.stderr.trim(), "error: VM 'cmp' is running: processor compatibility mode changes only while the VM is stopped");
    assert.equal((await c.vm('cmp')).compat, true);

    const move = await c.ferry(['vm', 'migrate', 'cmp', '--to', 'node-2', '--json']);
    assert.equal(move.code, 0, move.stderr);
    assert.equal((JSON.parse(move.stdout) as MigrationReport).status, 'completed', 'Westmere → Nehalem in compatibility mode');
    const ticks = c.console('cmp').ticks.length;
    await waitFor('cmp to keep ticking after the move', 20_000, () => c.console('cmp').ticks.length > ticks + 1);
    const amd = await c.ferry(['vm', 'migrate', 'cmp', '--to', 'node-3']);
    assert.equal(amd.code, 2);
    assert.match(amd.stderr, /CPU vendor mismatch: the VM runs on GenuineIntel \(Nehalem\), node 'node-3' is AuthenticAMD \(Opteron_G2\)/);
    const back = await c.ferry(['vm', 'migrate', 'cmp', '--to', 'node-1']);
    assert.equal(back.code, 0, back.stderr);
  });

  it("turns compat off only on a stopped VM, and the next start gets the node's full model", async () => {
    const bad = await c.ferry(['vm', 'set', 'cmp', '--compat', 'maybe']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim(), "error: compat must be on or off, got 'maybe'");
    assert.equal((await c.ferry(['vm', 'stop', 'cmp'])).code, 0);
    const off = await c.ferry(['vm', 'set', 'cmp', '--compat=off']);
    assert.equal(off.code, 0, off.stderr);
    assert.match(off.stdout, /compatibility mode off, switch default \(applies at its next start\)/);
    assert.equal((await c.ferry(['vm', 'start', 'cmp', '--node', 'node-1'])).code, 0);
    const vm = await c.vm('cmp');
    assert.equal(vm.compat, undefined);
    assert.equal(vm.guestCpu?.model, 'Westmere');
    const check = await c.ferry(['vm', 'migrate', 'cmp', '--to', 'node-2', '--check']);
    assert.equal(check.code, 1);
    assert.match(check.stdout, /lacks CPU features the VM uses: aes, arat, pclmuldq, pclmulqdq/);
  });

  it('recomputes the baseline when a node joins or leaves; compat VMs take it at their next start', async () => {
    type Shown = { cpuBaselines: { vendor: string; nodes: string[]; baseModel: string; features: string[] }[] };
    const intel = async () => (await c.ferryJson<Shown>(['cluster', 'show'])).cpuBaselines.find((b) => b.vendor === 'GenuineIntel')!;
    const joined = await c.ferry(['node', 'add', '--cpu-model', 'Penryn', '--memory', '512']);
    assert.equal(joined.code, 0, joined.stderr);
    assert.match(joined.stdout, /^node node-4 joined and is up \(GenuineIntel Penryn, migration address 127\.\d+\.1\.4\)/);
    const nodes = await c.ferryJson<{ name: string; capabilities: { cpu: { features: string[] } } }[]>(['node', 'list']);
    const penryn = nodes.find((n) => n.name === 'node-4')!.capabilities.cpu.features;
    const widened = await intel();
    assert.deepEqual([widened.nodes, widened.baseModel, widened.features], [['node-1', 'node-2', 'node-4'], 'Penryn', penryn]);
    const events = await c.api.call(eventRoutes.list, {});
    assert.ok(
      events.some((e) => e.type === 'cluster.cpu-baseline' && /GenuineIntel compatibility baseline: Nehalem .* → Penryn/.test(e.message)),
      'the change is an event',
    );

    await c.api.call(vmRoutes.create, { body: { name: 'late', compat: true, node: 'node-1', memoryMiB: 128 } });
    await c.api.call(vmRoutes.start, { params: { name: 'late' }, body: {} });
    assert.deepEqual((await c.vm('late')).guestCpu?.features, penryn, 'a compat VM started now gets the new baseline');
    await waitFor('late to boot', 60_000, () => c.console('late').ticks.length > 0);
    assert.equal((await c.ferry(['vm', 'migrate', 'late', '--to', 'node-4'])).code, 0, 'Westmere → Penryn in compatibility mode');

    const busy = await c.ferry(['node', 'remove', 'node-4']);
    assert.equal(busy.code, 2);
    assert.equal(busy.stderr.trim(), "error: node 'node-4' still runs VMs (late); drain it first: ferry node maintenance node-4 --drain live");
    assert.equal((await c.ferry(['vm', 'migrate', 'late', '--to', 'node-2'])).code, 0);
    const left = await c.ferry(['node', 'remove', 'node-4']);
    assert.equal(left.code, 0, left.stderr);
    assert.equal(left.stdout.trim(), 'node node-4 left the cluster');
    assert.ok(!(await c.ferryJson<{ name: string }[]>(['node', 'list'])).some((n) => n.name === 'node-4'));
    assert.equal((await intel()).baseModel, 'Nehalem', 'back to the features node-1 and node-2 share');
    assert.deepEqual((await c.vm('late')).guestCpu?.features, penryn, 'a running VM keeps its CPU');
    assert.equal((await c.ferry(['vm', 'stop', 'late'])).code, 0);
    assert.equal((await c.ferry(['vm', 'start', 'late'])).code, 0);
    assert.deepEqual((await c.vm('late')).guestCpu?.features, nehalemFeatures(nodes), 'the next start takes the new baseline');
  });
});

function nehalemFeatures(nodes: { name: string; capabilities: { cpu: { features: string[] } } }[]): string[] {
  return nodes.find((n) => n.name === 'node-2')!.capabilities.cpu.features;
}

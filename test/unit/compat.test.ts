/**
 * Processor compatibility (R9) on feature sets recorded from QEMU 10's
 * query-cpu-model-expansion (test/fixtures/qemu-cpu-models.json): the
 * baseline of a vendor's nodes and the rules a migration target must meet.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { cpuBaseline, cpuBlockers } from '../../src/domain/compat.js';
import type { CpuIdentity } from '../../src/domain/records.js';

const recorded = JSON.parse(fs.readFileSync(new URL('../../../test/fixtures/qemu-cpu-models.json', import.meta.url), 'utf8')) as {
  models: Record<string, { vendor: string; features: string[] }>;
};
const cpu = (model: string): CpuIdentity => ({ model, ...recorded.models[model]! });
const node = (name: string, model: string) => ({ node: name, cpu: cpu(model) });

describe('processor compatibility baseline', () => {
  it('is the features every node of the vendor shares, spelled from the closest model', () => {
    const b = cpuBaseline('GenuineIntel', [node('n1', 'Westmere'), node('n2', 'Nehalem'), node('n3', 'Opteron_G2')])!;
    assert.deepEqual(b.nodes, ['n1', 'n2'], 'AMD nodes do not count for an Intel baseline');
    assert.equal(b.baseModel, 'Nehalem', 'Nehalem needs nothing turned off');
    assert.deepEqual(b.disabled, []);
    assert.equal(b.model, 'Nehalem');
    assert.deepEqual(b.features, cpu('Nehalem').features);
  });

  it('turns off what the base model has beyond the shared set, aliases included', () => {
    const b = cpuBaseline('GenuineIntel', [node('n1', 'Westmere'), node('n2', 'Penryn')])!;
    assert.equal(b.baseModel, 'Penryn');
    const three = cpuBaseline('GenuineIntel', [node('a', 'Westmere'), node('b', 'Nehalem'), node('c', 'Penryn')])!;
    assert.deepEqual(three.features, cpu('Penryn').features);
    // Two models neither of which contains the other: the baseline is a model with features off.
    const mixed = cpuBaseline('GenuineIntel', [
      { node: 'x', cpu: { ...cpu('Westmere'), features: cpu('Westmere').features.filter((f) => f !== 'popcnt') } },
      node('y', 'Nehalem'),
    ])!;
    assert.equal(mixed.baseModel, 'Nehalem');
    assert.deepEqual(mixed.disabled, ['popcnt']);
    assert.equal(mixed.model, 'Nehalem,popcnt=off');
    assert.ok(!mixed.features.includes('popcnt') && mixed.features.includes('sse4.2'));
  });

  it('is recomputed from whichever nodes are members: a node leaving widens it, joining narrows it', () => {
    const two = cpuBaseline('GenuineIntel', [node('n1', 'Westmere'), node('n2', 'Nehalem')])!;
    const one = cpuBaseline('GenuineIntel', [node('n1', 'Westmere')])!;
    const withPenryn = cpuBaseline('GenuineIntel', [node('n1', 'Westmere'), node('n2', 'Nehalem'), node('n4', 'Penryn')])!;
    assert.ok(one.features.includes('aes') && !two.features.includes('aes'));
    assert.ok(two.features.includes('popcnt') && !withPenryn.features.includes('popcnt'));
    assert.equal(cpuBaseline('AuthenticAMD', [node('n1', 'Westmere')]), undefined, 'no node of the vendor, no baseline');
  });

  it('gives AMD nodes their own baseline', () => {
    const b = cpuBaseline('AuthenticAMD', [node('n1', 'Opteron_G2'), node('n2', 'Opteron_G1'), node('n3', 'Nehalem')])!;
    assert.deepEqual(b.nodes, ['n1', 'n2']);
    assert.equal(b.baseModel, 'Opteron_G1');
    assert.deepEqual(b.features, cpu('Opteron_G1').features);
  });
});

describe('compatibility rules on recorded feature sets', () => {
  it('names each feature a target lacks, with QEMU aliases, and never mixes vendors', () => {
    assert.deepEqual(cpuBlockers(cpu('Nehalem'), cpu('Westmere'), 'w'), []);
    assert.deepEqual(cpuBlockers(cpu('Westmere'), cpu('Nehalem'), 'n'), ["node 'n' (Nehalem) lacks CPU features the VM uses: aes, arat, pclmuldq, pclmulqdq"]);
    assert.deepEqual(cpuBlockers(cpu('Nehalem'), cpu('Penryn'), 'p'), ["node 'p' (Penryn) lacks CPU features the VM uses: popcnt, sse4-2, sse4.2"]);
    assert.deepEqual(cpuBlockers(cpu('Penryn'), cpu('Opteron_G2'), 'o'), [
      "CPU vendor mismatch: the VM runs on GenuineIntel (Penryn), node 'o' is AuthenticAMD (Opteron_G2)",
    ]);
  });

  it('lets a compat guest onto every node its baseline was computed from, and still never onto the other vendor', () => {
    const nodes = [node('w', 'Westmere'), node('n', 'Nehalem'), node('p', 'Penryn'), node('o', 'Opteron_G2')];
    const b = cpuBaseline('GenuineIntel', nodes)!;
    for (const n of nodes.filter((x) => x.cpu.vendor === 'GenuineIntel')) assert.deepEqual(cpuBlockers(b, n.cpu, n.node), []);
    assert.deepEqual(cpuBlockers(b, cpu('Opteron_G2'), 'o'), [
      "CPU vendor mismatch: the VM runs on GenuineIntel (Penryn), node 'o' is AuthenticAMD (Opteron_G2)",
    ]);
    const withOff = { ...b, model: 'Nehalem,popcnt=off' };
    assert.match(cpuBlockers(withOff, cpu('Opteron_G2'), 'o')[0]!, /GenuineIntel \(Nehalem compatibility baseline\)/);
  });
});

/**
 * Virtual switch tools (R8) with real QEMU: switches are cluster objects,
 * bindings decide which node interface carries which switch (and so where a
 * VM on that switch may run), switches are separate layer-2 domains, and
 * scrub removes what it is asked to, refusing running VMs unless forced.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { ScrubResult, SwitchView } from '../../src/domain/switches.js';
import type { MigrationReport } from '../../src/domain/migration.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';

describe('virtual switch tools', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 2, nodeMemoryMiB: 1024 });
  });
  after(async () => {
    await c?.stop();
  });

  const switches = () => c.ferryJson<SwitchView[]>(['switch', 'list']);
  const refused = async (args: string[], message: string) => {
    const r = await c.ferry(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}`);
    assert.equal(r.stderr.trim(), `error: ${message}`);
  };

  it('starts with the default switch bound on every node, and creates, binds and lists switches', async () => {
    assert.deepEqual(
      (await switches()).map((s) => [s.name, s.bindings]),
      [
        [
          'default',
          [
            { node: 'node-1', iface: 'eth0' },
            { node: 'node-2', iface: 'eth0' },
          ],
        ],
      ],
    );
    assert.equal((await c.ferry(['switch', 'create', 'backend', '--mac-ageing', '60'])).code, 0);
    const bound = await c.ferry(['switch', 'bind', 'node-2', 'eth1', '--switch', 'backend']);
    assert.equal(bound.code, 0, bound.stderr);
    assert.equal(bound.stdout.trim(), 'switch backend bound to node-2/eth1');
    assert.deepEqual(await c.ferryJson(['switch', 'bindings', 'node-2']), [
      { node: 'node-2', iface: 'eth0', switch: 'default' },
      { node: 'node-2', iface: 'eth1', switch: 'backend' },
    ]);
    assert.ok(fs.existsSync(c.layout.switchSocket('backend', 'node-2')), 'the switch daemon serves backend on node-2');
    assert.ok(!fs.existsSync(c.layout.switchSocket('backend', 'node-1')));
  });

  it('refuses bad bindings with one line', async () => {
    await refused(['switch', 'bind', 'node-2', 'eth0', '--switch', 'backend'], "interface node-2/eth0 already carries switch 'default'; unbind it first");
    await refused(['switch', 'bind', 'node-2', 'eth7', '--switch', 'backend'], "node 'node-2' has no interface 'eth7' (it has eth0, eth1)");
    await refused(['switch', 'bind', 'node-1', 'eth1', '--switch', 'nope'], "no virtual switch named 'nope' (see 'ferry switch list')");
    await refused(['switch', 'unbind', 'node-1', 'eth1'], 'interface node-1/eth1 carries no switch');
    await refused(['switch', 'create', 'backend'], "switch 'backend' already exists");
    await refused(['switch', 'create', 'Bad_Name'], "switch name 'Bad_Name' is malformed: use 1-32 lowercase letters, digits and '-', starting with a letter");
  });

  it('runs a VM on its switch only where that switch is bound, isolated from the other switch', async () => {
    assert.equal((await c.ferry(['vm', 'create', 'b', '--switch', 'backend', '--memory', '128', '--node', 'node-1'])).code, 0);
    await refused(['vm', 'start', 'b'], "cannot start VM 'b' on node-1: switch 'backend' is not bound on node-1");
    assert.equal((await c.ferry(['vm', 'stop', 'b'])).code, 0);
    assert.equal((await c.ferry(['vm', 'start', 'b', '--node', 'node-2'])).code, 0);
    await waitFor('b to boot', 60_000, () => c.console('b').ticks.length > 0);
    await c.createAndStart('d', { node: 'node-1', memoryMiB: 128 });
    const b = await c.vm('b');
    const ip = b.ip.split('/')[0]!;
    assert.equal((await c.switch.ping(ip, b.mac, 2000, 'backend')).answered, true, 'b answers on its own switch');
    assert.equal((await c.switch.ping(ip, b.mac, 1000, 'default')).answered, false, 'b is not on the default switch');
    const refusedMove = await c.ferry(['vm', 'migrate', 'b', '--to', 'node-1', '--check', '--json']);
    assert.deepEqual((JSON.parse(refusedMove.stdout) as { blockers: string[] }).blockers, [
      "switch 'backend' is not bound on node-1: VM 'b' would lose its network there",
    ]);
    const drain = await c.ferry(['node', 'maintenance', 'node-2', '--drain', 'live', '--dry-run']);
    assert.match(drain.stdout, /no up node carries switch 'backend' of VM 'b'/);
    await refused(['switch', 'unbind', 'node-2', 'eth1'], "switch 'backend' on node-2/eth1 has running VMs attached (b); stop or migrate them first");
    await refused(
      ['switch', 'delete', 'backend'],
      "switch 'backend' has VMs attached (b); move them to another switch or use 'ferry switch scrub --name backend --force'",
    );
  });

  it('moves a VM once its switch is bound on the target too, and unbinds when nothing runs there', async () => {
    assert.equal((await c.ferry(['switch', 'bind', 'node-1', 'eth1', '--switch', 'backend'])).code, 0);
    const r = await c.ferry(['vm', 'migrate', 'b', '--to', 'node-1', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as MigrationReport).status, 'completed');
    const mac = (await c.vm('b')).mac;
    const entry = (await c.switch.macs()).find((m) => m.mac === mac);
    assert.deepEqual([entry?.node, entry?.switch], ['node-1', 'backend']);
    const un = await c.ferry(['switch', 'unbind', 'node-2', 'eth1']);
    assert.equal(un.code, 0, un.stderr);
    assert.ok(!fs.existsSync(c.layout.switchSocket('backend', 'node-2')));
  });

  it('scrubs inactive switches and settings, and says what it removed', async () => {
    assert.equal((await c.ferry(['switch', 'create', 'spare'])).code, 0);
    assert.equal((await c.ferry(['switch', 'create', 'lab'])).code, 0);
    assert.equal((await c.ferry(['switch', 'bind', 'node-2', 'eth1', '--switch', 'lab'])).code, 0);
    await refused(['switch', 'scrub'], 'say what to scrub: --inactive, --settings and/or --name NAME');
    assert.equal((await c.ferry(['switch', 'create', 'gone'])).code, 0);
    const deleted = await c.ferry(['switch', 'delete', 'gone']);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.equal(deleted.stdout.trim(), 'switch gone deleted');
    assert.ok(!(await switches()).some((s) => s.name === 'gone'));
    const r = await c.ferryJson<ScrubResult>(['switch', 'scrub', '--inactive']);
    assert.deepEqual(r, { removedSwitches: ['spare'], removedBindings: [], resetSettings: [], disconnectedVms: [] }, 'lab has a binding, so it stays');
    assert.equal((await c.ferry(['switch', 'set', 'default', '--mac-ageing', '30'])).code, 0);
    const human = await c.ferryOk(['switch', 'scrub', '--settings']);
    assert.match(human, /settings reset: backend, default\n/);
    assert.deepEqual(
      (await switches()).map((s) => [s.name, s.settings.macAgeingS]),
      [
        ['backend', 300],
        ['default', 300],
        ['lab', 300],
      ],
    );
  });

  it('removes a named switch, refusing running VMs unless forced, which disconnects them and keeps them running', async () => {
    const named = await c.ferryJson<ScrubResult>(['switch', 'scrub', '--name', 'lab']);
    assert.deepEqual(named, { removedSwitches: ['lab'], removedBindings: ['node-2/eth1'], resetSettings: [], disconnectedVms: [] });
    await refused(['switch', 'scrub', '--name', 'backend'], "switch 'backend' has running VMs attached (b); add --force to disconnect them");
    assert.ok(
      (await switches()).some((s) => s.name === 'backend'),
      'a refused scrub leaves the switch',
    );
    const ticks = c.console('b').ticks.length;
    const forced = await c.ferryJson<ScrubResult>(['switch', 'scrub', '--name', 'backend', '--force']);
    assert.deepEqual(forced, { removedSwitches: ['backend'], removedBindings: ['node-1/eth1'], resetSettings: [], disconnectedVms: ['b'] });
    assert.ok(!fs.existsSync(c.layout.switchSocket('backend', 'node-1')));
    const b = await c.vm('b');
    assert.equal(b.state, 'running');
    assert.equal(b.switch, '');
    await waitFor('b to keep running', 10_000, () => c.console('b').ticks.length > ticks + 2);
    const ping = await c.ferry(['vm', 'ping', 'b']);
    assert.equal(ping.code, 1, 'a disconnected VM does not answer');
    // Re-attach once stopped.
    await refused(['vm', 'set', 'b', '--switch', 'default'], "VM 'b' is running: its switch changes only while the VM is stopped");
    assert.equal((await c.ferry(['vm', 'stop', 'b'])).code, 0);
    assert.equal((await c.ferry(['vm', 'set', 'b', '--switch', 'default'])).code, 0);
    assert.equal((await c.ferry(['vm', 'start', 'b'])).code, 0);
    await waitFor('b to answer on the default switch', 60_000, async () => (await c.ferry(['vm', 'ping', 'b'])).code === 0);
  });
});

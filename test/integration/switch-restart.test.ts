/**
 * The switch daemon dies and comes back, with real QEMU: the VMs' NICs
 * reconnect by themselves (QEMU's stream netdev retries every second), the
 * controller finds the switch at its new address, a NIC that is cut off is
 * shown as such (`network` in `vm show`, an event, a metric) while it is, and
 * a migration whose network step finds no switch fails naming that step.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { pidAlive } from '../../src/system/process.js';
import { eventRoutes } from '../../src/api/routes/events.js';
import { requestMigration } from '../../src/api/routes/vms.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { finalReport } from '../helpers/migration.js';

describe('a switch that restarts', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 2, nodeMemoryMiB: 1024 });
    await c.createAndStart('web', { node: 'node-1', workload: 'tcp' });
    await c.createAndStart('cli', { node: 'node-2', workload: 'tcp-client:web' });
    await waitFor('the client to read', 60_000, () => (c.console('cli').tcpClient?.received ?? 0) >= 100);
  });
  after(async () => {
    await c?.stop();
  });

  const received = () => c.console('cli').tcpClient?.received ?? 0;
  const network = async (vm: string) => (await c.ferryJson<{ network?: string }>(['vm', 'show', vm])).network;
  const killSwitch = async () => {
    const sw = readEndpoint(c.layout, 'switch')!;
    process.kill(sw.pid, 'SIGKILL');
    await waitFor('the switch to die', 5_000, () => !pidAlive(sw.pid));
    return sw;
  };
  const metric = async (vm: string) => {
    const res = await fetch(`${c.api.baseUrl}/metrics`, { headers: { authorization: `Bearer ${c.token}` } });
    const line = (await res.text()).split('\n').find((l) => l.startsWith('ferry_vm_network_connected{') && l.includes(`vm="${vm}"`));
    return line ? Number(line.split(' ').pop()) : undefined;
  };

  it('shows the NICs cut off while the switch is gone, and they come back with it: the TCP stream goes on', async () => {
    assert.equal(await network('web'), 'connected');
    const old = await killSwitch();
    // Each node reports its own NICs in its own heartbeat: wait for both, as each comes in.
    await waitFor(
      'web and cli to show their NICs cut off',
      10_000,
      async () => (await network('web')) === 'disconnected' && (await network('cli')) === 'disconnected',
    );
    assert.equal(await metric('web'), 0);
    const list = await c.ferryJson<{ name: string; state: string; network?: string }[]>(['vm', 'list']);
    assert.deepEqual(
      list.map((v) => [v.name, v.state, v.network]),
      [
        ['cli', 'running', 'disconnected'],
        ['web', 'running', 'disconnected'],
      ],
    );
    const stalled = received();

    const up = await c.ferry(['up']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /started switch\)/);
    assert.notEqual(readEndpoint(c.layout, 'switch')!.url, old.url, 'the new switch listens elsewhere');
    await waitFor('the NICs to reconnect', 15_000, async () => (await network('web')) === 'connected' && (await network('cli')) === 'connected');
    assert.equal(await metric('web'), 1);
    await waitFor('the stream to go on', 30_000, () => received() >= stalled + 200);
    const report = c.console('cli').tcpClient!;
    assert.equal(report.gaps, 0, 'no number was lost');
    assert.match(await c.ferryOk(['vm', 'ping', 'web']), /answered through the virtual switch/);

    const events = (await c.api.call(eventRoutes.list, {})).filter((e) => e.type === 'vm.network' && e.vm === 'web').map((e) => e.message);
    assert.deepEqual(events, [
      "VM web's NIC is cut off from switch default on node-1 (QEMU reconnects when the switch is back)",
      "VM web's NIC is connected to switch default on node-1 again",
    ]);
  });

  it('still reaches the VMs after the controller restarts too', async () => {
    const pid = readEndpoint(c.layout, 'controller')!.pid;
    process.kill(pid, 'SIGKILL');
    await waitFor('the controller to go', 5_000, () => !pidAlive(pid));
    await c.ferryOk(['up']);
    assert.match(await c.ferryOk(['vm', 'ping', 'web']), /answered through the virtual switch/);
    assert.match(await c.ferryOk(['vm', 'ping', 'cli']), /answered through the virtual switch/);
  });

  it('fails a migration whose network step finds no switch, naming the step; the VM runs on the target and gets its network back', async () => {
    const m = await requestMigration(c.api, 'web', { to: 'node-2', policy: { bandwidthMiBps: 12 } });
    await waitFor('the memory copy', 30_000, async () => (await c.ferryJson<{ phase: string }>(['migration', 'show', m.id])).phase === 'memory');
    await killSwitch();
    const { report } = await finalReport(c, m.id);
    assert.equal(report.status, 'failed');
    assert.match(report.error ?? '', /^network: the switch did not see 52:54:[0-9a-f:]+ on node-2 after the announce; the VM runs on node-2 without network$/);
    const vm = await c.vm('web');
    assert.deepEqual([vm.node, vm.state], ['node-2', 'running']);
    await c.ferryOk(['up']);
    await waitFor('web to reconnect on node-2', 15_000, async () => (await network('web')) === 'connected');
    assert.match(await c.ferryOk(['vm', 'ping', 'web']), /answered through the virtual switch/);
  });
});

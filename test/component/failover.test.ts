/**
 * Failover over the strict fake hypervisor, with fast time: host leases,
 * self-fencing, HA restarts by priority, lost VMs, in-place restarts of a
 * crashed QEMU, holding a VM whose restarts keep failing, and a failed host
 * rejoining without starting anything that runs elsewhere. Every 5 ms a
 * sampler looks at every host: no VM ever runs twice.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { eventRoutes } from '../../src/api/routes/events.js';
import { nodeRoutes } from '../../src/api/routes/nodes.js';
import { vmRoutes } from '../../src/api/routes/vms.js';
import type { VmRecord } from '../../src/domain/records.js';
import type { LivenessRecord } from '../../src/domain/ha.js';
import { ComponentCluster } from '../../src/testing/component.js';

for (const agentLeases of [false, true]) {
  describe(
    agentLeases ? 'failover, agents renewing their leases in the store (as on etcd)' : 'failover, leases renewed by heartbeats (the SQLite store)',
    () => {
      let c: ComponentCluster;
      let sampler: NodeJS.Timeout;
      const doubles: string[] = [];
      before(async () => {
        c = await ComponentCluster.start({ nodes: 3, agentLeases });
        sampler = setInterval(() => {
          const seen = new Map<string, string>();
          for (const [node, guests] of Object.entries(c.world.placement())) {
            for (const g of guests) {
              if (g.runState !== 'running') continue;
              if (seen.has(g.name)) doubles.push(`${g.name} on ${seen.get(g.name)} and ${node}`);
              seen.set(g.name, node);
            }
          }
        }, 5);
      });
      after(async () => {
        clearInterval(sampler);
        await c?.stop();
      });
      afterEach(() => {
        c.world.clearFaults();
        assert.deepEqual(doubles, [], 'no VM ran on two hosts at once');
        assert.deepEqual(c.world.violations, []);
      });

      const vm = (name: string) => c.api.call(vmRoutes.show, { params: { name } }) as Promise<VmRecord & { lost?: { node: string } }>;
      const set = (name: string, body: Record<string, unknown>) => c.api.call(vmRoutes.set, { params: { name }, body: body as never });
      const events = async (type: string) => (await c.api.call(eventRoutes.list, {})).filter((e) => e.type === type);

      it('shows HA in the record and refuses a priority out of range or without HA', async () => {
        await c.runVm('db', 'node-1');
        await c.runVm('web', 'node-1');
        await c.runVm('batch', 'node-1');
        assert.deepEqual((await set('db', { ha: 'on', haPriority: 500 })).ha, { priority: 500 });
        assert.deepEqual((await set('web', { ha: true })).ha, { priority: 100 });
        await assert.rejects(set('batch', { haPriority: 5 }), /VM 'batch' is not HA: --ha on first/);
        await assert.rejects(set('db', { ha: 'on', haPriority: 5000 }), /--ha-priority/);
        assert.equal((await vm('batch')).ha, undefined);
        assert.deepEqual((await vm('db')).ha, { priority: 500 }, 'a refused change changes nothing');
      });

      it('fences HA VMs on an isolated host before restarting them elsewhere, highest priority first; the rest are lost', async () => {
        // Wait until the agent has been told which of its VMs are HA.
        await c.until('node-1 to arm its HA VMs', () => JSON.stringify(c.agent('node-1')['fence']?.ha.sort()) === '["db","web"]');
        // Renewed by the agent, its lease's key names what it fences: the controller restarts only those.
        if (agentLeases)
          await c.until(
            'node-1 to name them in its lease',
            async () => JSON.stringify((await c.store.get<LivenessRecord>('liveness/node-1'))?.value.ha) === '["db","web"]',
          );
        c.isolate('node-1');
        await c.until(
          'db and web to run elsewhere',
          async () =>
            (await vm('db')).state === 'running' &&
            (await vm('web')).state === 'running' &&
            (await vm('db')).node !== 'node-1' &&
            (await vm('web')).node !== 'node-1',
          60_000,
        );
        // The isolated agent's watchdog killed them; the non-HA VM still runs there, unknown to the controller.
        assert.deepEqual(
          c
            .copiesOf('db')
            .map((x) => x.node)
            .includes('node-1'),
          false,
        );
        assert.deepEqual(c.copiesOf('batch'), [{ node: 'node-1', runState: 'running' }]);
        const batch = await vm('batch');
        assert.equal(batch.state, 'lost');
        assert.equal(batch.lost?.node, 'node-1');
        const failed = await events('node.failed');
        assert.equal(failed.length, 1);
        assert.equal(failed[0]!.node, 'node-1');
        const detection = failed[0]!.data!.detectionMs as number;
        assert.ok(detection >= 8000 && detection < 11_000, `detected after the TTL (8 s): ${detection} ms`);
        const restarts = await events('vm.failover');
        assert.deepEqual(
          restarts.map((e) => e.vm),
          ['db', 'web'],
          'priority 500 before 100',
        );
        for (const e of restarts) {
          assert.equal(e.data!.from, 'node-1');
          assert.equal(e.data!.detectionMs, detection);
          assert.ok((e.data!.sinceDetectionMs as number) >= 1000, 'not before the restart margin');
        }
        assert.deepEqual(
          (await events('vm.lost')).map((e) => e.vm),
          ['batch'],
        );
      });

      it('lets the failed host rejoin: the lost VM it still runs is running again, nothing is started twice', async () => {
        c.heal('node-1');
        await c.until('batch to be found', async () => (await vm('batch')).state === 'running');
        const batch = await vm('batch');
        assert.deepEqual([batch.node, batch.lost, batch.error], ['node-1', undefined, undefined]);
        await c.until('the agent to report fenced VMs', async () => (await events('vm.fenced')).length === 2);
        assert.deepEqual((await events('vm.fenced')).map((e) => e.vm).sort(), ['db', 'web']);
        assert.equal((await events('node.rejoined')).length, 1);
        assert.deepEqual(c.copiesOf('db').length, 1);
      });

      it('tells a fencing once, though a heartbeat whose answer the host never got names it again', async () => {
        const node = (await c.api.call(nodeRoutes.list, {})).find((n) => n.name === 'node-1')!;
        // What the agent sends again after a heartbeat that reached the controller but timed out on its way back.
        const again = async () =>
          c.api.call(nodeRoutes.heartbeat, {
            body: {
              name: 'node-1',
              url: node.url,
              clusterId: c.config.id,
              migrationAddress: node.migrationAddress,
              capabilities: node.capabilities!,
              vms: await c.hypervisor('node-1').list(),
              fenced: ['db', 'web'],
            },
          });
        await again();
        await again();
        assert.deepEqual((await events('vm.fenced')).map((e) => e.vm).sort(), ['db', 'web'], 'no second event for the same fencing');
      });

      it('restarts an HA VM whose QEMU died in place, and only HA VMs', async () => {
        const db = await vm('db');
        c.hypervisor(db.node).crash('db');
        await c.until('db to run again', async () => (await events('vm.restarted')).some((e) => e.vm === 'db'));
        assert.deepEqual(c.copiesOf('db'), [{ node: db.node, runState: 'running' }]);
        c.hypervisor('node-1').crash('batch');
        await c.until('batch to be stopped', async () => (await vm('batch')).state === 'stopped');
        await c.clock.sleep(5000);
        assert.equal((await vm('batch')).state, 'stopped', 'not HA: not restarted');
        // Both crashes are told, HA or not.
        assert.deepEqual(
          (await events('vm.crashed')).map((e) => e.message),
          [
            `VM db crashed on ${db.node}: its QEMU exited without being asked (HA: it starts again in place)`,
            'VM batch crashed on node-1: its QEMU exited without being asked',
          ],
        );
      });

      it('holds an HA VM whose restarts keep failing, with the reason, and vm start releases it', async () => {
        const web = await vm('web');
        c.world.fault({ op: 'launch', vm: 'web', message: 'Failed to get "write" lock' });
        c.hypervisor(web.node).crash('web');
        await c.until('web to be held', async () => (await vm('web')).haHeld !== undefined, 60_000);
        const held = await vm('web');
        assert.equal(held.state, 'stopped');
        assert.match(held.haHeld!.reason, /write" lock/);
        assert.equal(held.haFailures, 3);
        const heldEvents = await events('vm.ha-held');
        assert.equal(heldEvents.length, 1);
        await c.clock.sleep(40_000);
        assert.equal((await events('vm.ha-held')).length, 1, 'not retried forever');
        c.world.clearFaults();
        await c.api.call(vmRoutes.start, { params: { name: 'web' }, body: {} });
        const started = await vm('web');
        assert.deepEqual([started.state, started.haHeld, started.haFailures], ['running', undefined, undefined]);
      });

      it('restarts the HA VMs of a host that lost power on the others', async () => {
        const db = await vm('db');
        await c.crash(db.node);
        await c.until(
          'db to run on another host',
          async () => {
            const now = await vm('db');
            return now.state === 'running' && now.node !== db.node;
          },
          60_000,
        );
        assert.equal(c.copiesOf('db').length, 1);
      });

      it('counts failures, fencing, restarts and holds in /metrics, with detection and restart times', async () => {
        const text = await c.metrics();
        const value = (series: string) => {
          const line = text.split('\n').find((l) => l.startsWith(`${series} `));
          assert.ok(line, `${series} in /metrics`);
          return Number(line.split(' ')[1]);
        };
        // node-1 isolated, then the host that ran db lost power.
        assert.equal(value('ferry_node_failures_total{node="node-1"}'), 1);
        assert.equal(
          text
            .split('\n')
            .filter((l) => l.startsWith('ferry_node_failures_total{'))
            .reduce((s, l) => s + Number(l.split(' ')[1]), 0),
          2,
        );
        assert.equal(value('ferry_vm_fenced_total{node="node-1"}'), 2);
        assert.ok(value('ferry_ha_restarts_total{kind="failover"}') >= 3, 'db and web after the isolation, db after the power loss');
        assert.ok(value('ferry_ha_restarts_total{kind="in_place"}') >= 1);
        assert.equal(value('ferry_ha_holds_total'), 1);
        assert.equal(value('ferry_vms_ha_held'), 0, 'web was released');
        assert.equal(value('ferry_failover_detection_seconds_count'), 2);
        assert.ok(value('ferry_failover_detection_seconds_sum') >= 16, 'two detections of at least the 8 s TTL');
        assert.equal(value('ferry_failover_detection_seconds_bucket{le="5"}'), 0);
        assert.equal(value('ferry_failover_detection_seconds_bucket{le="15"}'), 2);
        assert.equal(value('ferry_failover_restart_seconds_count'), value('ferry_ha_restarts_total{kind="failover"}'));
        assert.equal(value('ferry_failover_restart_seconds_bucket{le="1"}'), 0, 'none before the 1 s margin');
        assert.ok(!text.includes('\nferry_controller_leadership{'), 'a controller that leads under no leadership shows none');
      });

      it('settles a start whose outcome the store did not take from what the host reports', async () => {
        const up = (await c.api.call(nodeRoutes.list, {})).find((n) => n.state === 'up')!.name;
        await c.runVm('solo', up);
        await c.api.call(vmRoutes.stop, { params: { name: 'solo' }, body: {} });
        c.failNextWrite((key, value) => key === 'vms/solo' && (value as VmRecord).state === 'running');
        await assert.rejects(c.api.call(vmRoutes.start, { params: { name: 'solo' }, body: {} }), /did not answer put vms\/solo/);
        assert.equal((await vm('solo')).state, 'starting', 'the QEMU runs, the record could not say so');
        await c.until('solo to be running', async () => (await vm('solo')).state === 'running');
        assert.deepEqual(c.copiesOf('solo'), [{ node: (await vm('solo')).node, runState: 'running' }]);
        assert.match((await events('vm.started')).at(-1)!.message, /its start had not recorded it/);
      });

      it(
        agentLeases
          ? 'fences nothing while no controller answers for three lease periods: the hosts renew their leases in the store'
          : 'fences the HA VMs of hosts that no controller answers for longer than a lease period (their leases renew through it)',
        async () => {
          const db = await vm('db');
          const upBefore = (await c.api.call(nodeRoutes.list, {})).filter((n) => n.state === 'up').map((n) => n.name);
          const fencedBefore = (await events('vm.fenced')).length;
          const failedBefore = (await events('node.failed')).length;
          c.controllerAway(true);
          try {
            await c.clock.sleep(agentLeases ? 24_000 : 12_000);
          } finally {
            c.controllerAway(false);
          }
          if (agentLeases) {
            assert.deepEqual(c.copiesOf('db'), [{ node: db.node, runState: 'running' }], 'db ran on where it was');
            assert.equal((await events('node.failed')).length, failedBefore, 'no host failed');
            await c.clock.sleep(2000);
            assert.equal((await events('vm.fenced')).length, fencedBefore, 'no agent fenced anything');
          } else {
            assert.deepEqual(c.copiesOf('db'), [], 'its agent fenced db when its lease ran out');
            // Every host failed at once, so its restarts found no host and it is held: started again by hand.
            const up = async () => (await c.api.call(nodeRoutes.list, {})).filter((n) => n.state === 'up').map((n) => n.name);
            await c.until('the hosts to be back', async () => JSON.stringify(await up()) === JSON.stringify(upBefore), 60_000);
            await c.until(
              'the failover to give up or start db',
              async () => (await vm('db')).haHeld !== undefined || (await vm('db')).state === 'running',
              60_000,
            );
            if ((await vm('db')).state !== 'running') await c.api.call(vmRoutes.start, { params: { name: 'db' }, body: {} });
            assert.deepEqual(c.copiesOf('db').length, 1);
          }
        },
      );

      // Only where agents renew their own leases: over SQLite the heartbeat answer is the renewal.
      if (agentLeases)
        it('has a restarted agent renew its lease where the one before it did, while no controller answers', async () => {
          const db = await vm('db');
          assert.ok(db.ha, 'db is HA');
          const failedBefore = (await events('node.failed')).length;
          const fencedBefore = (await events('vm.fenced')).length;
          c.controllerAway(true);
          try {
            await c.restartAgent(db.node);
            await c.clock.sleep(24_000);
          } finally {
            c.controllerAway(false);
          }
          assert.deepEqual(c.copiesOf('db'), [{ node: db.node, runState: 'running' }], 'db ran on where it was');
          assert.equal((await events('node.failed')).length, failedBefore, 'its host did not fail');
          await c.clock.sleep(2000);
          assert.equal((await events('vm.fenced')).length, fencedBefore, 'nothing was fenced');
        });

      it('lets an operator claim a VM lost with a host that stays off and start it elsewhere; refuses what is not lost', async () => {
        const claim = (name: string) => c.api.call(vmRoutes.claim, { params: { name }, body: {} });
        const start = (name: string) => c.api.call(vmRoutes.start, { params: { name }, body: {} });
        const up = (await c.api.call(nodeRoutes.list, {})).filter((n) => n.state === 'up').map((n) => n.name);
        assert.ok(up.length >= 2, `two hosts up: ${up.join(', ')}`);
        const [gone, other] = up as [string, string];
        await c.runVm('orphan', gone);
        await assert.rejects(claim('orphan'), {
          message: `VM 'orphan' is not lost (it is running on ${gone}): only a VM lost with a failed host can be claimed`,
        });
        await assert.rejects(claim('nobody'), { message: "unknown VM 'nobody'" });
        // Power loss: the host stays off; orphan is not HA, so nobody starts it by themselves.
        await c.crash(gone);
        await c.until('orphan to be lost', async () => (await vm('orphan')).state === 'lost', 60_000);
        await assert.rejects(start('orphan'), {
          message: `VM 'orphan' is lost with host ${gone}: it rejoins and settles it, or once that host is off for good 'ferry vm claim orphan' frees it to start elsewhere`,
        });
        const claimed = await claim('orphan');
        assert.deepEqual([claimed.state, claimed.node, claimed.lost], ['stopped', '', undefined]);
        assert.match(claimed.error ?? '', new RegExp(`^claimed from host ${gone}, failed since \\d{4}-`));
        const [event] = await events('vm.claimed');
        assert.equal(event?.vm, 'orphan');
        assert.equal(event?.data?.from, gone);
        const started = await start('orphan');
        assert.deepEqual([started.state, started.node], ['running', other]);
        assert.deepEqual(c.copiesOf('orphan'), [{ node: other, runState: 'running' }]);
        await assert.rejects(claim('orphan'), {
          message: `VM 'orphan' is not lost (it is running on ${other}): only a VM lost with a failed host can be claimed`,
        });
      });

      if (agentLeases)
        it('judges a host whose lease was gone before this controller started: its VMs are lost, none restarts', async () => {
          const [host] = (await c.api.call(nodeRoutes.list, {})).filter((n) => n.state === 'up').map((n) => n.name);
          assert.ok(host, 'a host is up');
          await c.runVm('late', host);
          await set('late', { ha: true });
          await c.until(`${host} to arm late`, () => c.agent(host)['fence']?.ha.includes('late') === true);
          // Power loss while no controller runs, for longer than the lease: the new one never sees its key.
          await c.restartController({
            meanwhile: async () => {
              await c.crash(host);
              await c.clock.sleep(12_000);
            },
          });
          await c.until('late to be lost', async () => (await vm('late')).state === 'lost', 60_000);
          const failed = (await events('node.failed')).filter((e) => e.node === host).at(-1)!;
          assert.match(
            failed.message,
            new RegExp(`^node ${host} failed: its lease was gone before this controller led, and not renewed since \\(it ran .*\\blate\\b`),
          );
          // Everything it ran is lost (HA or not): nothing said which of them its agent had fenced.
          for (const name of failed.data!.vms as string[]) {
            assert.equal((await vm(name)).state, 'lost', name);
            assert.deepEqual(c.copiesOf(name), [], name);
          }
          assert.equal(
            (await events('vm.lost')).find((e) => e.vm === 'late')?.message,
            `VM late is lost with ${host} (this controller never saw which VMs its agent fences)`,
          );
          assert.deepEqual(c.copiesOf('late'), []);
          assert.equal((await vm('late')).lost?.node, host);
        });
    },
  );
}

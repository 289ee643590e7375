/**
 * Component tests: agent calls fenced by the controller's leadership. On
 * etcd a controller leads under the revision that made it leader and sends
 * it with every call to an agent; an agent that has heard of a newer one
 * (from a call or a heartbeat answer) refuses the call of a deposed leader
 * that thawed late, and its VMs are left as they were.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { vmRoutes } from '../../src/api/routes/vms.js';
import { ErrorCode, isFerryError } from '../../src/domain/errors.js';
import { LEADER_KEY } from '../../src/domain/ha.js';
import { LEADERSHIP_HEADER } from '../../src/node/routes.js';
import { ComponentCluster } from '../../src/testing/component.js';

describe('agent calls fenced by the leadership', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 2, leadership: 5 });
    await c.runVm('web', 'node-1');
  });
  after(() => c?.stop());

  /** The error a call threw, or undefined when it went through. */
  const refusal = async (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (e: unknown) => e,
    );

  it("refuses a deposed leader's late call once a newer leadership called, and the VM runs on", async () => {
    const deposed = c.agentClient('node-1', undefined, () => 4);
    const e = await refusal(deposed.kill('web'));
    assert.ok(isFerryError(e), String(e));
    assert.equal(e.code, ErrorCode.NotLeader);
    assert.equal(e.message, 'refused: this call comes from a controller whose leadership (4) has ended; leadership 5 leads the cluster');
    assert.deepEqual(c.copiesOf('web'), [{ node: 'node-1', runState: 'running' }]);
    // The leader's own calls go on.
    assert.equal((await c.agentClient('node-1', undefined, () => 5).list()).length, 1);
  });

  it('learns a new leadership from heartbeat answers before any call carries it', async () => {
    const leads = async () => (await c.metrics()).split('\n').filter((l) => l.startsWith('ferry_controller_leadership'));
    assert.deepEqual(await leads(), [`ferry_controller_leadership{controller="${c.api.baseUrl}"} 5`]);
    c.leadership = 9;
    assert.deepEqual(await leads(), [`ferry_controller_leadership{controller="${c.api.baseUrl}"} 9`], 'a leader change shows in /metrics');
    const old = c.agentClient('node-2', undefined, () => 5);
    // node-2 runs nothing and is called by nobody: only its heartbeats can tell it of leadership 9.
    await c.until('node-2 to hear of leadership 9', async () => (await refusal(old.list())) !== undefined);
    const e = await refusal(old.list());
    assert.ok(isFerryError(e, ErrorCode.NotLeader), String(e));
    // The cluster goes on under the new leadership: a change through the controller reaches node-1.
    await c.api.call(vmRoutes.stop, { params: { name: 'web' }, body: { force: true } });
    assert.deepEqual(c.copiesOf('web'), []);
  });

  it('takes no claim that is not a whole number, and a call without one is a lone controller on SQLite', async () => {
    const agent = c.agentFetch('node-1');
    const ask = (claim?: string) =>
      agent('http://node-1.component/v1/vms', {
        headers: { authorization: 'Bearer component-token', ...(claim !== undefined ? { [LEADERSHIP_HEADER]: claim } : {}) },
      });
    const bad = await ask('5; drop');
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { message: string } }).error.message, `${LEADERSHIP_HEADER} must be a whole number, not '5; drop'`);
    assert.equal((await ask('0')).status, 400);
    assert.equal((await ask()).status, 200);
    assert.equal((await ask('9')).status, 200);
  });
});

describe('a restarted agent and the leadership (agents renew their own leases, as on etcd)', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 2, agentLeases: true });
    c.leadership = await c.store.put(LEADER_KEY, { name: 'controller-a', pid: 1, sinceMs: 0 });
    await c.runVm('web', 'node-1');
  });
  after(() => c?.stop());

  it('reads the leadership from the store before it answers: a leader deposed while it was away is refused from its first call', async () => {
    const deposed = c.leadership!;
    const old = c.strayClient('node-1', deposed);
    await c.until('node-1 to renew its own lease', async () => (await c.store.get(`liveness/node-1`)) !== undefined);
    await old.list();
    // node-1's agent stops; meanwhile another controller leads, and none answers node-1's heartbeats when it is back.
    await c.store.delete(LEADER_KEY);
    c.leadership = await c.store.put(LEADER_KEY, { name: 'controller-b', pid: 2, sinceMs: 0 });
    c.controllerAway(true);
    try {
      await c.restartAgent('node-1');
      const e = await old.kill('web').then(
        () => undefined,
        (err: unknown) => err,
      );
      assert.ok(isFerryError(e, ErrorCode.NotLeader), String(e));
      assert.equal(
        e.message,
        `refused: this call comes from a controller whose leadership (${deposed}) has ended; leadership ${c.leadership} leads the cluster`,
      );
      assert.deepEqual(c.copiesOf('web'), [{ node: 'node-1', runState: 'running' }], 'web runs on');
      // The new leader's calls go through.
      assert.equal((await c.strayClient('node-1', c.leadership).list()).length, 1);
    } finally {
      c.controllerAway(false);
    }
  });
});

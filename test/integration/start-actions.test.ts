/**
 * Shutting down and starting again, with real QEMU: `vm stop` and `ferry
 * down` ask the guest to shut down (the ACPI power button, which the
 * built-in guest answers by syncing and powering off) and power it off only
 * after the timeout; `ferry up` after a `ferry down` starts each VM its start
 * action names (always; if-running, the default, when it was running;
 * never).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { vmRoutes } from '../../src/api/routes/vms.js';
import { eventRoutes } from '../../src/api/routes/events.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';

describe('shutdown and start actions', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 2 });
  });
  after(async () => {
    await c?.stop();
  });

  const shutdownLines = (vm: string) => c.consoleText(vm).match(/^ferry-shutdown reason=power-button/gm)?.length ?? 0;

  it('stops a VM by asking its guest, and powers off one that does not answer within the timeout', async () => {
    await c.createAndStart('polite', { node: 'node-1' });
    const out = await c.ferryOk(['vm', 'stop', 'polite']);
    assert.match(out, /^VM polite shut down \(the guest powered off in \d+ ms\)$/m);
    assert.equal(shutdownLines('polite'), 1, 'the guest saw the power button');
    assert.equal((await c.vm('polite')).state, 'stopped');

    // A guest that ignores the button (its watcher killed from the console) is powered off after --timeout.
    await c.createAndStart('deaf', { node: 'node-2' });
    await c.api.call(vmRoutes.consoleInput, { params: { name: 'deaf' }, body: { data: 'killall ferry-guest; echo ferry-deaf\n' } });
    await waitFor('the watcher to go', 10_000, () => c.consoleText('deaf').includes('\nferry-deaf'));
    const started = Date.now();
    const r = await c.ferryJson<{ state: string; shutdown: { by: string; ms: number } }>(['vm', 'stop', 'deaf', '--timeout', '2']);
    assert.equal(r.state, 'stopped');
    assert.equal(r.shutdown.by, 'force');
    assert.ok(Date.now() - started >= 2000, 'waited the timeout first');
    assert.equal(shutdownLines('deaf'), 0);

    // --force does not ask.
    await c.ferryOk(['vm', 'start', 'polite']);
    await waitFor(
      'polite to boot again',
      60_000,
      () => (c.consoleText('polite').match(/^ferry-boot /gm)?.length ?? 0) >= 2 && c.console('polite').ticks.length > 0,
    );
    assert.match(await c.ferryOk(['vm', 'stop', 'polite', '--force']), /^VM polite powered off$/m);
    assert.equal(shutdownLines('polite'), 1, 'no second power button');
  });

  it('refuses a start action it does not know', async () => {
    const r = await c.ferry(['vm', 'set', 'polite', '--start-action', 'sometimes']);
    assert.equal(r.code, 2);
    assert.equal(r.stderr, "error: --start-action must be one of always, never, if-running, got 'sometimes'\n");
  });

  it('shuts every guest down on ferry down, and ferry up starts what the start actions say', async () => {
    // keep: running, if-running (the default); always: stopped, always; never: running, never; idle: stopped, if-running.
    await c.createAndStart('keep', { node: 'node-1' });
    await c.createAndStart('never', { node: 'node-2' });
    await c.ferryOk(['vm', 'create', 'always']);
    await c.ferryOk(['vm', 'create', 'idle']);
    assert.match(await c.ferryOk(['vm', 'set', 'always', '--start-action', 'always']), /^VM always: start action always$/m);
    await c.ferryOk(['vm', 'set', 'never', '--start-action', 'never']);
    const bootsBefore = (vm: string) => c.consoleText(vm).match(/^ferry-boot /gm)?.length ?? 0;
    const keepBoots = bootsBefore('keep');

    const down = await c.ferry(['down']);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /^cluster down: shut down 2 VM\(s\) and stopped 4 daemon\(s\)$/m);
    assert.equal(shutdownLines('keep'), 1, 'keep shut down cleanly');
    assert.equal(shutdownLines('never'), 1, 'never shut down cleanly');

    const up = await c.ferry(['up']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /^start actions: started always, keep$/m);
    const states = Object.fromEntries((await c.ferryJson<{ name: string; state: string }[]>(['vm', 'list'])).map((v) => [v.name, v.state]));
    assert.deepEqual(states, { always: 'running', deaf: 'stopped', idle: 'stopped', keep: 'running', never: 'stopped', polite: 'stopped' });
    await waitFor('keep to boot again', 60_000, () => bootsBefore('keep') > keepBoots && c.console('keep').ticks.length > 0);
    await waitFor('always to boot', 60_000, () => c.console('always').ticks.length > 0);
    const events = await c.api.call(eventRoutes.list, {});
    assert.deepEqual(
      events.filter((e) => e.type === 'vm.start-action').map((e) => e.message),
      ['VM always started by its start action (always)', 'VM keep started by its start action (if-running)'],
    );

    // A second up (nothing was down) starts nothing; a VM stopped by hand stays stopped after the next down and up.
    assert.doesNotMatch((await c.ferry(['up'])).stdout, /start actions/);
    await c.ferryOk(['vm', 'stop', 'keep']);
    await c.ferry(['down']);
    const again = await c.ferry(['up']);
    assert.match(again.stdout, /^start actions: started always$/m);
    assert.equal((await c.vm('keep')).state, 'stopped');
  });
});

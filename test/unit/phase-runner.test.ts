/** The phase runner: phases saved before they act, undo in reverse, cleanup errors beside the cause, the commit, restarts. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Phase, PhaseRunner } from '../../src/controller/core/phase-runner.js';
import { ManualClock } from '../../src/domain/clock.js';
import type { PhasedRecord } from '../../src/domain/phases.js';

function rig(phases: Phase[], undoFails: string[] = [], start: PhasedRecord = { phase: 'new' }) {
  let record: PhasedRecord = start;
  const saved: string[] = [];
  const undone: string[] = [];
  const runner = new PhaseRunner<PhasedRecord>({
    phases,
    record: {
      load: async () => record,
      save: async (change) => {
        record = change(record);
        saved.push(record.phase);
        return record;
      },
    },
    undo: {
      remove: async ({ what }: { what: string }) => {
        if (undoFails.includes(what)) throw new Error(`cannot remove ${what}`);
        undone.push(what);
      },
    },
    rollingBackPhase: 'rolling-back',
    latePrefix: 'after handover',
    clock: new ManualClock(),
  });
  return { runner, undone, saved, record: () => record };
}

const make = (name: string, log: string[], opts: { fail?: boolean; resource?: boolean; commit?: boolean; onRestart?: Phase['onRestart'] } = {}): Phase => ({
  name,
  ...(opts.onRestart ? { onRestart: opts.onRestart } : {}),
  run: async (ctx) => {
    log.push(name);
    if (opts.resource) await ctx.onUndo({ action: 'remove', args: { what: name } });
    if (opts.commit) await ctx.commit();
    if (opts.fail) throw new Error(`${name} broke`);
  },
});

describe('phase runner', () => {
  it('saves each phase before it runs and clears the undo steps on success', async () => {
    const log: string[] = [];
    const r = rig([make('a', log, { resource: true }), make('b', log)]);
    const out = await r.runner.run(new AbortController().signal);
    assert.deepEqual(out, { ok: true, cancelled: false, warnings: [] });
    assert.deepEqual(log, ['a', 'b']);
    assert.ok(r.saved.indexOf('a') < r.saved.indexOf('b'));
    assert.deepEqual(r.record().undo, []);
    assert.deepEqual(r.undone, []);
  });

  for (const failing of ['a', 'b', 'c']) {
    it(`undoes what exists, newest first, when ${failing} fails`, async () => {
      const log: string[] = [];
      const r = rig(['a', 'b', 'c'].map((n) => make(n, log, { resource: true, fail: n === failing })));
      const out = await r.runner.run(new AbortController().signal);
      assert.equal(out.ok, false);
      assert.equal(out.error?.message, `${failing} broke`);
      const created = ['a', 'b', 'c'].slice(0, ['a', 'b', 'c'].indexOf(failing) + 1);
      assert.deepEqual(r.undone, [...created].reverse());
      assert.equal(r.record().phase, 'rolling-back');
    });
  }

  it('keeps a cleanup error beside the cause, never instead of it, and undoes the rest', async () => {
    const log: string[] = [];
    const r = rig(
      ['a', 'b', 'c'].map((n) => make(n, log, { resource: true, fail: n === 'c' })),
      ['b'],
    );
    const out = await r.runner.run(new AbortController().signal);
    assert.equal(out.error?.message, 'c broke');
    assert.deepEqual(r.undone, ['c', 'a']);
    assert.deepEqual(r.record().cleanupErrors, ['remove: cannot remove b']);
  });

  it('undoes nothing past the commit: a later failure is a warning', async () => {
    const log: string[] = [];
    const r = rig([make('a', log, { resource: true }), make('hand', log, { commit: true }), make('z', log, { fail: true })]);
    const out = await r.runner.run(new AbortController().signal);
    assert.deepEqual([out.ok, out.warnings], [true, ['after handover: z broke']]);
    assert.deepEqual(r.undone, []);
  });

  it('a cancel undoes like a failure and says it was a cancel', async () => {
    const log: string[] = [];
    const ac = new AbortController();
    const r = rig([make('a', log, { resource: true }), { name: 'b', run: async () => ac.abort() }, make('c', log)]);
    const out = await r.runner.run(ac.signal);
    assert.deepEqual([out.ok, out.cancelled], [false, true]);
    assert.deepEqual(r.undone, ['a']);
  });

  it('after a restart: undoes from a saved phase, or carries on with the next or the same one', async () => {
    for (const [onRestart, runs, undone] of [
      ['undo', [], ['a']],
      ['next', ['c'], []],
      ['rerun', ['b', 'c'], []],
    ] as const) {
      const log: string[] = [];
      // A controller ran a (which made a resource) and died in b: that is what the record says.
      const crashed = rig([make('a', log, { resource: true }), make('b', log, { onRestart }), make('c', log)], [], {
        phase: 'b',
        undo: [{ action: 'remove', args: { what: 'a' } }],
      });
      const out = await crashed.runner.recover(new AbortController().signal);
      assert.equal(out.action, onRestart);
      assert.deepEqual(log, runs);
      assert.deepEqual(crashed.undone, undone);
      assert.equal(out.ok, onRestart !== 'undo');
    }
  });
});

/**
 * The Hypervisor contract: one suite the QEMU hypervisor and the strict
 * fake both pass, so the fake the component tests use cannot drift from
 * what QEMU does. Two hosts (a, b), one guest moved between them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isFerryError } from '../domain/errors.js';
import { RunState, type VmSpec } from '../domain/records.js';
import { DEFAULT_TUNING } from '../domain/tuning.js';
import type { Hypervisor } from '../ports/hypervisor.js';

export interface HypervisorsUnderTest {
  a: Hypervisor;
  b: Hypervisor;
  /** A spec whose disk image exists, for a guest named `name`. */
  spec(name: string): Promise<VmSpec>;
  /** An address both hosts reach (the migration network). */
  address: string;
  /** A path on the shared volume for a saved state or an overlay. */
  file(name: string): string;
  cpuModel: string;
  /** Waits for `check` to hold (real QEMU takes real time). */
  until(what: string, check: () => Promise<boolean>): Promise<void>;
  dispose(): Promise<void>;
}

export function hypervisorContract(name: string, make: () => Promise<HypervisorsUnderTest>): void {
  describe(`Hypervisor contract: ${name}`, () => {
    let t: HypervisorsUnderTest;
    before(async () => {
      t = await make();
    });
    after(() => t?.dispose());
    const none = { kind: 'none' } as const;
    const finished = async (hv: Hypervisor, vm: string) => {
      await t.until(`the transfer of ${vm} to end`, async () => ['completed', 'failed', 'cancelled'].includes((await hv.transferProgress(vm)).status));
      return hv.transferProgress(vm);
    };

    it('launches, pauses, resumes and stops a guest, reporting Ferry run states', async () => {
      const spec = await t.spec('c1');
      const g = await t.a.launch(spec, { incoming: false, nic: none, cpuModel: t.cpuModel });
      assert.deepEqual([g.name, g.incoming], ['c1', false]);
      assert.ok(t.a.has('c1'));
      assert.ok((await t.a.list()).some((x) => x.name === 'c1'));
      assert.equal(t.a.spec('c1').diskPath, spec.diskPath);
      await t.a.pause('c1');
      assert.equal((await t.a.get('c1')).runState, RunState.Paused);
      await t.a.resume('c1');
      assert.equal((await t.a.get('c1')).runState, RunState.Running);
      await assert.rejects(t.a.launch(spec, { incoming: false, nic: none, cpuModel: t.cpuModel }), (e: unknown) => isFerryError(e, 'already-exists'));
      await t.a.stop('c1');
      assert.equal(t.a.has('c1'), false);
      await assert.rejects(t.a.get('c1'), (e: unknown) => isFerryError(e, 'vm-not-found'));
      await assert.rejects(t.a.pause('c1'), (e: unknown) => isFerryError(e, 'vm-not-found'));
    });

    it('kills only the process it is told to', async () => {
      const g = await t.a.launch(await t.spec('c2'), { incoming: false, nic: none, cpuModel: t.cpuModel });
      assert.equal(await t.a.kill('c2', g.pid + 100000), false);
      assert.equal(await t.a.kill('c2', g.pid), true);
      assert.equal(await t.a.kill('c2'), false);
    });

    it("moves a running guest's state to another host", async () => {
      const spec = await t.spec('c3');
      await t.a.launch(spec, { incoming: false, nic: none, cpuModel: t.cpuModel });
      const target = await t.b.launch(spec, { incoming: true, nic: none, cpuModel: t.cpuModel });
      assert.equal((await t.b.get('c3')).runState, RunState.Incoming);
      assert.equal(target.incoming, true);
      const endpoint = await t.b.listenIncoming('c3', DEFAULT_TUNING, t.address);
      assert.equal(endpoint.address, t.address);
      assert.ok(endpoint.port > 0);
      await t.a.sendTo('c3', endpoint, DEFAULT_TUNING);
      const sent = await finished(t.a, 'c3');
      assert.equal(sent.status, 'completed', sent.error);
      assert.equal(sent.remainingBytes, 0);
      assert.ok(sent.transferredBytes > 0);
      await t.until('the target to have the state', async () => (await t.b.transferProgress('c3')).status === 'completed');
      assert.equal((await t.a.get('c3')).runState, RunState.Migrated, 'the source stops once its state went');
      await t.until('the target to be paused or running', async () =>
        ([RunState.Paused, RunState.Running] as RunState[]).includes((await t.b.get('c3')).runState),
      );
      await t.b.resume('c3');
      assert.equal((await t.b.get('c3')).runState, RunState.Running);
      await t.a.kill('c3');
      await t.b.kill('c3');
    });

    it('saves a paused guest to a file and restores it on another host', async () => {
      const spec = await t.spec('c4');
      const file = t.file('c4.state');
      await t.a.launch(spec, { incoming: false, nic: none, cpuModel: t.cpuModel });
      await t.a.pause('c4');
      await t.a.sendTo('c4', { file }, DEFAULT_TUNING);
      assert.equal((await finished(t.a, 'c4')).status, 'completed');
      await t.a.kill('c4');
      await t.b.launch(spec, { incoming: true, nic: none, cpuModel: t.cpuModel });
      await t.b.restoreFrom('c4', file, DEFAULT_TUNING);
      await t.until('the restore to complete', async () => (await t.b.transferProgress('c4')).status === 'completed');
      await t.b.resume('c4');
      assert.equal((await t.b.get('c4')).runState, RunState.Running);
      await t.b.kill('c4');
    });

    it('freezes a disk under an overlay once, and merges it back', async () => {
      const spec = await t.spec('c5');
      await t.a.launch(spec, { incoming: false, nic: none, cpuModel: t.cpuModel });
      const overlay = t.file('c5-overlay.qcow2');
      const frozen = await t.a.freezeDisk('c5', overlay, 'full');
      // The built-in guest has no agent: the point in time is crash-consistent, and says why.
      assert.deepEqual(frozen, { base: spec.diskPath, overlay, quiesced: false, quiesceNote: "Ferry's built-in guest has no guest agent" });
      assert.equal(t.a.spec('c5').diskPath, overlay, 'the guest writes into the overlay');
      await assert.rejects(t.a.freezeDisk('c5', t.file('c5-again.qcow2'), 'full'), (e: unknown) => isFerryError(e, 'invalid-state'));
      const merged = await t.a.mergeOverlay('c5', true);
      assert.deepEqual(merged, { base: spec.diskPath, overlay });
      assert.equal(t.a.spec('c5').diskPath, spec.diskPath);
      await assert.rejects(t.a.mergeOverlay('c5', true), (e: unknown) => isFerryError(e, 'invalid-state'));
      await t.a.kill('c5');
    });

    it("refuses a second guest on a disk a running one holds (QEMU's image lock, failover's backstop)", async () => {
      const spec = await t.spec('c6');
      await t.a.launch(spec, { incoming: false, nic: none, cpuModel: t.cpuModel });
      await assert.rejects(t.b.launch(spec, { incoming: false, nic: none, cpuModel: t.cpuModel }), (e: unknown) => {
        assert.ok(isFerryError(e), String(e));
        assert.match(e.message, /Failed to get "write" lock/);
        return true;
      });
      assert.equal(t.b.has('c6'), false, 'nothing half-started on b');
      assert.equal((await t.a.get('c6')).runState, RunState.Running, 'the holder runs on');
      // Once the holder is gone, the disk opens elsewhere.
      await t.a.kill('c6');
      await t.b.launch(spec, { incoming: false, nic: none, cpuModel: t.cpuModel });
      await t.b.kill('c6');
    });
  });
}

/**
 * A full disk, with real QEMU: the cluster's state directory is a small ext4
 * file system of its own (a loop mount), a guest writes to its disk, and the
 * file system is filled. QEMU pauses the guest on the I/O error; Ferry shows
 * it (vm show, vm list, status, an event, a metric) and no daemon dies,
 * though logs, consoles and the store cannot be written; once there is room
 * again the guest goes on by itself and Ferry says so. `vm resume` refuses
 * while the disk is still full.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventRoutes } from '../../src/api/routes/events.js';
import { vmRoutes } from '../../src/api/routes/vms.js';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { pidAlive } from '../../src/system/process.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';

describe('a full disk under the state directory', () => {
  let c: TestCluster;
  let root = '';
  let mnt = '';
  const fillers = () => path.join(mnt, 'fillers');

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-fullfs-'));
    mnt = path.join(root, 'mnt');
    fs.mkdirSync(mnt);
    execFileSync('truncate', ['-s', '600M', path.join(root, 'fs.img')]);
    execFileSync('mkfs.ext4', ['-q', '-F', path.join(root, 'fs.img')]);
    execFileSync('mount', ['-o', 'loop', path.join(root, 'fs.img'), mnt]);
    const state = path.join(mnt, 'state');
    fs.mkdirSync(state, { mode: 0o700 });
    c = await TestCluster.start({ nodes: 1, dir: state });
    await c.createAndStart('dw', { workload: 'disk:20', memoryMiB: 128 });
    await c.createAndStart('talker', { memoryMiB: 128 });
    await waitFor('dw to write', 30_000, () => (c.console('dw').diskAcked ?? 0) >= 20);
  });
  after(async () => {
    try {
      await c?.stop();
    } finally {
      if (mnt) execFileSync('umount', ['-l', mnt]);
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  /** Takes every free block (root may use the reserved ones too), in a few files. */
  const fill = () => {
    fs.mkdirSync(fillers(), { recursive: true });
    for (let i = 0; i < 20; i++) {
      const st = fs.statfsSync(mnt);
      const free = st.bfree * st.bsize;
      if (free < 64 << 10) return;
      try {
        execFileSync('fallocate', ['-l', String(free), path.join(fillers(), `f${i}`)], { stdio: 'ignore' });
      } catch {
        /* ENOSPC with part of it allocated: the next round takes the rest */
      }
    }
  };
  const makeRoom = () => fs.rmSync(fillers(), { recursive: true, force: true });
  const show = (vm: string) => c.ferryJson<{ state: string; runState?: string }>(['vm', 'show', vm]);
  const pids = () => ['controller', 'switch', 'node-1'].map((d) => readEndpoint(c.layout, d)!.pid);
  const metric = async (vm: string, runState: string) => {
    const res = await fetch(`${c.api.baseUrl}/metrics`, { headers: { authorization: `Bearer ${c.token}` } });
    return (await res.text()).split('\n').some((l) => l.startsWith('ferry_vm_run_state{') && l.includes(`vm="${vm}"`) && l.includes(`run_state="${runState}"`));
  };

  it('shows the guest paused on the I/O error, keeps every daemon, resumes it by itself when there is room, and says so', async () => {
    const daemons = pids();
    fill();
    await waitFor('dw to stop on the I/O error', 30_000, async () => (await show('dw')).runState === 'io-error');
    assert.equal((await show('dw')).state, 'running', 'the record still places it there');
    const list = await c.ferry(['vm', 'list']);
    assert.match(list.stdout, /^dw\s+io-error\s+node-1/m);
    assert.match(await c.ferryOk(['status']), /VMs: 1\/2 running \(dw: io-error\)/);
    assert.ok(await metric('dw', 'io-error'));
    assert.match(await c.ferryOk(['vm', 'show', 'dw']), /run state\s+paused by an I\/O error on its disk \(full\?\)/);
    await waitFor('the event', 10_000, async () =>
      (await c.api.call(eventRoutes.list, {})).some(
        (e) =>
          e.type === 'vm.run-state' &&
          e.message === 'VM dw is paused by an I/O error on its disk (full?) on node-1; it goes on by itself once the disk has room (or: ferry vm resume dw)',
      ),
    );
    // Resuming by hand while the disk is still full: QEMU stops it again at once, and Ferry says why.
    const resume = await c.ferry(['vm', 'resume', 'dw']);
    assert.equal(resume.code, 2, resume.stdout);
    assert.equal(resume.stderr, "error: VM 'dw' stopped again at once: its disk still has an I/O error (is its file system full?)\n");
    // A while with a full disk: consoles and logs cannot be written, and no daemon minds. The talker prints a lot meanwhile.
    await c.api.call(vmRoutes.consoleInput, { params: { name: 'talker' }, body: { data: 'yes ferry-noise-line | head -n 4000\n' } });
    await new Promise((r) => setTimeout(r, 4000));
    assert.deepEqual(
      pids().map((p) => pidAlive(p)),
      [true, true, true],
      'every daemon is alive',
    );
    assert.deepEqual(pids(), daemons, 'and none was restarted');
    const acked = c.console('dw').diskAcked ?? 0;

    makeRoom();
    await waitFor('dw to go on by itself', 30_000, async () => (await show('dw')).runState === 'running');
    await waitFor('dw to write again', 30_000, () => (c.console('dw').diskAcked ?? 0) > acked + 20);
    await waitFor('the event saying so', 10_000, async () =>
      (await c.api.call(eventRoutes.list, {})).some(
        (e) => e.type === 'vm.run-state' && e.message === 'VM dw runs again: node-1 resumed it once its disk had room',
      ),
    );
    // What the talker printed while its console log could not be written was dropped and counted.
    await waitFor('the drop note', 10_000, () =>
      /\[ferry: \d+ bytes of console output dropped since .* \(ENOSPC\): the log could not be written\]/.test(c.consoleText('talker')),
    );
    assert.match(await c.ferryOk(['status']), /VMs: 2\/2 running/);
    assert.deepEqual(pids(), daemons);
  });

  it('fills up again without losing a daemon, and `vm resume` resumes once there is room', async () => {
    fill();
    await waitFor('dw to stop again', 30_000, async () => (await show('dw')).runState === 'io-error');
    await new Promise((r) => setTimeout(r, 2000));
    assert.deepEqual(
      pids().map((p) => pidAlive(p)),
      [true, true, true],
    );
    // Room comes back: resuming by hand at once (before the agent's own look) works as well.
    makeRoom();
    const r = await c.ferry(['vm', 'resume', 'dw']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^VM dw running on node-1$/m);
    await waitFor('dw to write again', 30_000, async () => (await show('dw')).runState === 'running');
  });
});

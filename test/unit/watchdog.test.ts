/**
 * The watchdog's one look (watchOnce) over real files and real processes:
 * nothing before the lease lapses, every HA VM's process after, never a
 * process whose pid merely matches a stale pid file.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FenceFiles, watchOnce } from '../../src/node/watchdog.js';

/** A process standing in for a VM's QEMU: its command line names the pid file, as QEMU's `-pidfile` does. */
function fakeQemu(pidFile: string): ChildProcess {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', '--', '-pidfile', pidFile], { stdio: 'ignore' });
  fs.writeFileSync(pidFile, String(child.pid));
  return child;
}

const exited = (child: ChildProcess) =>
  new Promise<NodeJS.Signals | null>((resolve) =>
    child.exitCode !== null || child.signalCode ? resolve(child.signalCode) : child.once('exit', (_c, s) => resolve(s)),
  );

describe('the watchdog', () => {
  let dir: string;
  let files: FenceFiles;
  const children: ChildProcess[] = [];
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-watchdog-'));
    files = new FenceFiles(dir);
  });
  after(() => {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('guards nothing without a fence file', () => {
    assert.deepEqual(watchOnce(files, Date.now()), { killed: [], guarding: false });
  });

  it('kills nothing while the lease holds, and says whether an HA VM runs', async () => {
    const db = fakeQemu(path.join(dir, 'db.pid'));
    children.push(db);
    files.write({ validUntilMs: Date.now() + 60_000, ha: ['db', 'web'] });
    assert.deepEqual(watchOnce(files, Date.now()), { killed: [], guarding: true });
    assert.deepEqual(watchOnce(files, Date.now(), false), { killed: [], guarding: true });
    assert.equal(db.exitCode, null);
  });

  it('kills every running HA VM once the lease has lapsed, and notes each for the next heartbeat', async () => {
    const db = children[0]!;
    files.write({ validUntilMs: Date.now() - 1, ha: ['db', 'web'] });
    assert.deepEqual(watchOnce(files, Date.now()), { killed: ['db'], guarding: false });
    assert.equal(await exited(db), 'SIGKILL');
    assert.deepEqual(files.takeFenced(), ['db']);
    assert.deepEqual(files.takeFenced(), [], 'taken once');
    assert.deepEqual(watchOnce(files, Date.now()), { killed: [], guarding: false }, 'nothing left to guard');
  });

  it('leaves alone a live process whose pid a stale pid file names', async () => {
    // Another process got the pid: its command line does not name web's pid file.
    const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    children.push(other);
    fs.writeFileSync(path.join(dir, 'web.pid'), String(other.pid));
    files.write({ validUntilMs: Date.now() - 1, ha: ['web'] });
    assert.deepEqual(watchOnce(files, Date.now()), { killed: [], guarding: false });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(other.exitCode, null);
    assert.equal(other.signalCode, null);
  });

  it('knows its own pid file only while it names a live watchdog', () => {
    assert.equal(files.watchdogPid(), undefined, 'no pid file');
    const notWatchdog = children[1]!;
    fs.writeFileSync(files.pidFile, String(notWatchdog.pid));
    assert.equal(files.watchdogPid(), undefined, 'a live process that is not a watchdog');
  });
});

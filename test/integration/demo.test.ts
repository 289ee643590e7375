/**
 * `ferry demo --json` end to end: what `npm run demo` runs. As root (CI) it
 * runs on a lab of three hosts with a real Linux client; `--single` runs it
 * on the single-machine cluster, as it runs without root.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { projectRoot } from '../../src/config/paths.js';
import { STEPS } from '../../src/domain/migration.js';
import type { StreamCheck } from '../../src/lab/stream-check.js';

interface DemoReport {
  status: string;
  mode: string;
  where: 'lab' | 'single-machine';
  from: string;
  to: string;
  tcpStreamIntact: boolean;
  steps: { name: string }[];
  guestBlackoutMs?: number;
  client?: { pings: number; lost: number; stream: StreamCheck };
  lanPort?: string;
  targetLanPort?: string;
}

function demo(args: string[]): DemoReport {
  const r = spawnSync(process.execPath, [path.join(projectRoot(), 'dist/src/cli/main.js'), 'demo', '--json', ...args], { encoding: 'utf8', timeout: 240_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as DemoReport;
}

describe('ferry demo', () => {
  it(
    'on the lab (root): migrates a loaded VM host to host while a real client pings it and reads its TCP stream, and cleans up',
    { skip: process.getuid?.() !== 0 ? 'needs root' : false },
    () => {
      const before = fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : [];
      const report = demo([]);
      assert.equal(report.where, 'lab');
      assert.equal(report.status, 'completed');
      assert.deepEqual([report.mode, report.from, report.to], ['live', 'host-1', 'host-3']);
      assert.deepEqual(
        report.steps.map((s) => s.name),
        [...STEPS],
      );
      assert.equal(report.tcpStreamIntact, true);
      assert.equal(report.client!.stream.gaps, 0);
      assert.equal(report.client!.stream.reconnects, 0);
      assert.ok(report.client!.pings > 5000, `pinged every 2 ms: ${report.client!.pings}`);
      assert.ok(report.client!.lost < 100, `${report.client!.lost} pings lost`);
      assert.equal(report.lanPort, report.targetLanPort, "the LAN switch forwards the VM's MAC to host-3");
      assert.deepEqual(fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : [], before, 'the lab is gone');
    },
  );

  it('on the single-machine cluster: migrates a loaded VM, keeps the TCP stream intact, reports it, and cleans up', () => {
    const report = demo(process.getuid?.() === 0 ? ['--single'] : []);
    assert.equal(report.where, 'single-machine');
    assert.equal(report.status, 'completed');
    assert.equal(report.mode, 'live');
    assert.deepEqual([report.from, report.to], ['node-1', 'node-3']);
    assert.equal(report.tcpStreamIntact, true);
    assert.deepEqual(
      report.steps.map((s) => s.name),
      [...STEPS],
    );
    assert.ok(report.guestBlackoutMs! > 0);
  });
});

/**
 * `ferry demo --json` end to end: what `npm run demo` runs.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { projectRoot } from '../../src/config/paths.js';
import { STEPS } from '../../src/domain/migration.js';

describe('ferry demo', () => {
  it('migrates a loaded VM, keeps the TCP stream intact, reports it, and cleans up', () => {
    const r = spawnSync(process.execPath, [path.join(projectRoot(), 'dist/src/cli/main.js'), 'demo', '--json'], { encoding: 'utf8', timeout: 180_000 });
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as {
      status: string;
      mode: string;
      from: string;
      to: string;
      tcpStreamIntact: boolean;
      steps: { name: string }[];
      guestBlackoutMs: number;
    };
    assert.equal(report.status, 'completed');
    assert.equal(report.mode, 'live');
    assert.deepEqual([report.from, report.to], ['node-1', 'node-3']);
    assert.equal(report.tcpStreamIntact, true);
    assert.deepEqual(
      report.steps.map((s) => s.name),
      [...STEPS],
    );
    assert.ok(report.guestBlackoutMs > 0);
  });
});

/** The systemd units Ferry ships: valid for systemd, one per daemon role, guests outliving their agent. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { projectRoot } from '../../src/config/paths.js';

const dir = path.join(projectRoot(), 'deploy', 'systemd');
const unit = (name: string) => fs.readFileSync(path.join(dir, name), 'utf8');

describe('the systemd units', () => {
  it('start each daemon role in the foreground on /var/lib/ferry', () => {
    for (const role of ['switch', 'controller', 'agent']) {
      assert.match(
        unit(`ferry-${role}.service`),
        new RegExp(`^ExecStart=/usr/bin/node /opt/ferry/dist/src/daemon/main\\.js ${role} --state /var/lib/ferry$`, 'm'),
      );
      assert.match(unit(`ferry-${role}.service`), /^Type=simple$/m);
    }
  });

  it("leave an agent's guests running when the agent stops", () => {
    assert.match(unit('ferry-agent.service'), /^KillMode=process$/m);
  });

  it('pass systemd-analyze verify', { skip: spawnSync('systemd-analyze', ['--version']).status !== 0 ? 'no systemd-analyze' : false }, () => {
    const r = spawnSync('systemd-analyze', ['verify', ...fs.readdirSync(dir).map((f) => path.join(dir, f))], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '');
  });
});

/**
 * Entry point of Ferry's daemons; `ferry up` starts one process per role:
 *
 *   node dist/src/daemon/main.js switch     --state DIR
 *   node dist/src/daemon/main.js controller --state DIR
 *   node dist/src/daemon/main.js agent      --state DIR --node NAME
 *   node dist/src/daemon/main.js watchdog   --state DIR --node NAME --agent PID   (started by the agent)
 *
 * Each role's composition root builds the daemon; this file only picks it
 * (and loads only that role's code: a watchdog or switch starts in a
 * fraction of the controller's time), and removes the daemon's endpoint file
 * on SIGTERM/SIGINT.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { readEndpoint } from '../config/cluster-config.js';
import { systemClock } from '../domain/clock.js';
import type { StateLayout } from '../domain/layout.js';
import { openLayout, readHostConfig } from '../config/host-config.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function waitForEndpoint(layout: StateLayout, name: string, timeoutMs = 20_000): Promise<string> {
  const deadline = systemClock.nowMs() + timeoutMs;
  for (;;) {
    const e = readEndpoint(layout, name);
    if (e) return e.url;
    if (systemClock.nowMs() > deadline) throw new Error(`${name} did not start within ${timeoutMs} ms`);
    await systemClock.sleep(50);
  }
}

function onExit(file: string, close: () => Promise<void>): void {
  let exiting = false;
  const handler = () => {
    if (exiting) return;
    exiting = true;
    fs.rmSync(file, { force: true });
    void close().finally(() => process.exit(0));
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

async function main(): Promise<void> {
  // What a daemon creates (disks, consoles, logs, the store, sockets) and what its QEMU and qemu-img children create is for its owner only.
  process.umask(0o077);
  const role = process.argv[2];
  const stateDir = arg('state');
  if (!stateDir) throw new Error('--state DIR is required');
  const layout = openLayout(stateDir);
  if (role === 'switch') {
    const { runSwitch } = await import('../switch/main.js');
    const d = await runSwitch({ stateDir });
    onExit(layout.daemonFile('switch'), d.close);
  } else if (role === 'controller') {
    const loading = import('../controller/app.js');
    const switchUrl = await waitForEndpoint(layout, 'switch');
    const { runController } = await loading;
    const d = await runController({
      stateDir,
      switchUrl,
      // Started again after losing the lead: etcd may still be away, so wait for it rather than fail.
      waitForStore: process.argv.includes('--again'),
      // A controller that lost the lead stops acting at once (it exits), and a new one stands by in its place.
      onDeposed: () => {
        const args = process.argv.slice(1).filter((a) => a !== '--again');
        spawn(process.execPath, [...args, '--again'], { detached: true, stdio: 'inherit', env: process.env }).unref();
        process.exit(75);
      },
    });
    onExit(layout.daemonFile('controller'), d.close);
  } else if (role === 'agent') {
    const node = arg('node');
    // On the single-machine cluster the agent finds its controller's endpoint file; a real host knows it from host.json.
    const loading = import('../node/main.js');
    if (!readHostConfig(layout)) await waitForEndpoint(layout, 'controller');
    const { runAgent } = await loading;
    const d = await runAgent({ stateDir, ...(node ? { node } : {}) });
    onExit(layout.daemonFile(d.node), d.close);
  } else if (role === 'watchdog') {
    const node = arg('node');
    const agentPid = Number(arg('agent'));
    if (!node || !agentPid) throw new Error('watchdog needs --node NAME --agent PID');
    const { runWatchdog } = await import('../node/watchdog.js');
    await runWatchdog({
      runDir: layout.nodeRun(node),
      agentPid,
      clock: systemClock,
      say: (line) => process.stderr.write(`${new Date().toISOString()} watchdog ${node}: ${line}\n`),
    });
    process.exit(0);
  } else {
    throw new Error(`unknown daemon role '${role}' (switch, controller, agent or watchdog)`);
  }
}

// A full or failing disk is weather, not a bug: whatever write it broke is dropped, and the daemon goes on
// (its VMs keep running; the operations that needed the disk fail and say so). Anything else still ends it.
process.on('uncaughtException', (e: NodeJS.ErrnoException) => {
  if (e.code === 'ENOSPC' || e.code === 'EIO' || e.code === 'EDQUOT') {
    try {
      process.stderr.write(`ferry ${process.argv[2]}: ${e.message} (dropped; the daemon goes on)\n`);
    } catch {
      /* the disk is full */
    }
    return;
  }
  try {
    process.stderr.write(`ferry ${process.argv[2]}: ${e.stack ?? e.message}\n`);
  } finally {
    process.exit(1);
  }
});

main().catch((e: unknown) => {
  process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});

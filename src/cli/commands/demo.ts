/**
 * `ferry demo`: a self-contained tour. It starts a three-node cluster in a
 * temporary state directory, runs a memory-busy web VM serving a TCP stream
 * and a client VM reading it, live-migrates the web VM and shows that the
 * stream went on without a gap; then tears everything down.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { vmRoutes } from '../../api/routes/vms.js';
import { systemClock } from '../../domain/clock.js';
import type { MigrationRecord, MigrationReport } from '../../domain/migration.js';
import { StateLayout } from '../../domain/layout.js';
import { parseConsole } from '../../guest/console.js';
import { Cluster, followMigration } from '../context.js';
import { down, up } from '../daemons.js';
import { Progress, bytes, ms } from '../output.js';

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = systemClock.nowMs() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (systemClock.nowMs() > deadline) throw new Error(`timed out waiting for ${what}`);
    await systemClock.sleep(250);
  }
}

export async function runDemo(opts: { json: boolean }): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-demo-'));
  const layout = new StateLayout(dir);
  const say = (line: string) => {
    if (!opts.json) process.stdout.write(line + '\n');
  };
  const progress = new Progress();
  try {
    say(`ferry demo: state in ${dir}`);
    const res = await up(layout, { nodes: 3, port: 0, progress: (l) => progress.update(l) });
    progress.done();
    const c = Cluster.connect(layout);
    say(`cluster up: ${res.config.nodes.map((n) => n.name).join(', ')}`);

    await c.api.call(vmRoutes.create, { body: { name: 'web', memoryMiB: 256, workload: 'memory:16+tcp', node: 'node-1' } });
    await c.api.call(vmRoutes.create, { body: { name: 'client', memoryMiB: 128, workload: 'tcp-client:web', node: 'node-2' } });
    await c.api.call(vmRoutes.start, { params: { name: 'web' }, body: {} });
    say('web: running on node-1, rewriting 16 MiB/s of memory and serving a TCP counter stream on port 7000');
    await c.api.call(vmRoutes.start, { params: { name: 'client' }, body: {} });
    say('client: running on node-2, connecting to web:7000');
    const before = await waitFor('the client to receive the stream', 60_000, async () => {
      const r = parseConsole(await consoleText(c, 'client')).tcpClient;
      return r && r.connected && r.received > 100 ? r : undefined;
    });
    say(`client: connected, ${before.received} lines received in order so far`);

    say('live-migrating web: node-1 → node-3');
    const started = (await c.api.call(vmRoutes.migrate, { params: { name: 'web' }, body: { to: 'node-3' } })) as MigrationRecord;
    const final = await followMigration(
      c.api,
      started.id,
      (m) => {
        const p = m.progress;
        progress.update(
          `  ${m.phase}${m.phase === 'memory' && p ? `: round ${p.rounds}, ${bytes(p.transferredBytes)} sent, ${bytes(p.remainingBytes)} left, dirty ${bytes(p.dirtyRateBytesPerSec)}/s` : ''}`,
        );
      },
      (t) => systemClock.sleep(t),
    );
    progress.done();
    const report: MigrationReport = final.report;
    say(
      `migration ${report.status}: total ${ms(report.totalMs)}, QEMU downtime ${ms(report.downtimeMs)}, guest blackout ${ms(report.guestBlackoutMs)}, ${bytes(report.transferredBytes)} in ${report.rounds} rounds`,
    );
    say(`  steps: ${report.steps.map((s) => `${s.name} ${ms(s.ms)}`).join(' → ')}`);

    // Let the stream run on from the new host, then check it end to end.
    const lastBefore = parseConsole(await consoleText(c, 'client')).tcpClient?.received ?? 0;
    const after = await waitFor('the stream to continue after the migration', 30_000, async () => {
      const r = parseConsole(await consoleText(c, 'client')).tcpClient;
      return r && r.received > lastBefore + 200 ? r : undefined;
    });
    const web = await c.api.call(vmRoutes.show, { params: { name: 'web' } });
    const intact = report.status === 'completed' && after.gaps === 0 && after.reconnects === 0 && after.connected;
    say(
      `web now runs on ${web.node}; client received ${after.received} lines, gaps ${after.gaps}, reconnects ${after.reconnects}: TCP stream ${intact ? 'intact' : 'BROKEN'}`,
    );
    if (opts.json) process.stdout.write(JSON.stringify({ ...report, tcpStreamIntact: intact }, null, 2) + '\n');
    return report.status === 'completed' && intact ? 0 : 1;
  } finally {
    progress.done();
    say('tearing down');
    await down(layout).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function consoleText(c: Cluster, vm: string): Promise<string> {
  return (await c.api.open(vmRoutes.console, { params: { name: vm }, query: {} })).text();
}

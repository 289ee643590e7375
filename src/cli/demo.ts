/**
 * `ferry demo`: a self-contained tour in a temporary state directory.
 * A 3-node cluster; `web` rewrites memory and serves the tcp counter stream;
 * `client` on another node holds a tcp-client connection to it; `web` is
 * live-migrated to the third node while both run; the report and the proof
 * that the TCP stream continued with nothing missing; teardown.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseConsole } from '../guest/console.js';
import type { MigrationReport } from '../domain/migration.js';
import type { VmRecord } from '../domain/records.js';
import { StateLayout } from '../config/paths.js';
import { down, up } from './daemons.js';
import { Client, followMigration } from './main.js';
import { Progress, bytes, ms } from './output.js';

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
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
    const res = await up(layout, { nodes: 3, progress: (l) => progress.update(l) });
    progress.done();
    const c = Client.connect(layout);
    say(`cluster up: ${res.config.nodes.map((n) => n.name).join(', ')}`);

    await c.call('POST', '/api/v1/vms', { name: 'web', memoryMiB: 256, workload: 'memory:16+tcp', node: 'node-1' });
    await c.call('POST', '/api/v1/vms', { name: 'client', memoryMiB: 128, workload: 'tcp-client:web', node: 'node-2' });
    await c.call('POST', '/api/v1/vms/web/start', {});
    say('web: running on node-1, rewriting 16 MiB/s of memory and serving a TCP counter stream on port 7000');
    await c.call('POST', '/api/v1/vms/client/start', {});
    say('client: running on node-2, connecting to web:7000');
    const before = await waitFor('the client to receive the stream', 60_000, async () => {
      const r = parseConsole(await consoleText(c, 'client')).tcpClient;
      return r && r.connected && r.received > 100 ? r : undefined;
    });
    say(`client: connected, ${before.received} lines received in order so far`);

    say('live-migrating web: node-1 → node-3');
    const started = await c.call<{ id: string }>('POST', '/api/v1/vms/web/migrate', { to: 'node-3' });
    const final = await followMigration(c, started.id, (m) => {
      const p = m.progress;
      progress.update(`  ${m.phase}${m.phase === 'memory' && p ? `: round ${p.rounds}, ${bytes(p.transferredBytes)} sent, ${bytes(p.remainingBytes)} left, dirty ${bytes(p.dirtyRateBytesPerSec)}/s` : ''}`);
    });
    progress.done();
    const report: MigrationReport = final.report;
    say(`migration ${report.status}: total ${ms(report.totalMs)}, QEMU downtime ${ms(report.downtimeMs)}, guest blackout ${ms(report.guestBlackoutMs)}, ${bytes(report.transferredBytes)} in ${report.rounds} rounds`);
    say(`  steps: ${report.steps.map((s) => `${s.name} ${ms(s.ms)}`).join(' → ')}`);

    // Let the stream run on from the new host, then check it end to end.
    const lastBefore = parseConsole(await consoleText(c, 'client')).tcpClient?.received ?? 0;
    const after = await waitFor('the stream to continue after the migration', 30_000, async () => {
      const r = parseConsole(await consoleText(c, 'client')).tcpClient;
      return r && r.received > lastBefore + 200 ? r : undefined;
    });
    const web = await c.call<VmRecord>('GET', '/api/v1/vms/web');
    const intact = report.status === 'completed' && after.gaps === 0 && after.reconnects === 0 && after.connected;
    say(`web now runs on ${web.node}; client received ${after.received} lines, gaps ${after.gaps}, reconnects ${after.reconnects}: TCP stream ${intact ? 'intact' : 'BROKEN'}`);
    if (opts.json) process.stdout.write(JSON.stringify({ ...report, tcpStreamIntact: intact }, null, 2) + '\n');
    return report.status === 'completed' && intact ? 0 : 1;
  } finally {
    progress.done();
    say('tearing down');
    await down(layout).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function consoleText(c: Client, vm: string): Promise<string> {
  const res = await fetch(`${c.baseUrl}/api/v1/vms/${vm}/console`, { headers: { authorization: `Bearer ${c.authToken}` } });
  return res.text();
}

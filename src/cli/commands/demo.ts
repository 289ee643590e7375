/**
 * `ferry demo`: a self-contained tour: a memory-busy web VM serving a TCP
 * counter stream is live-migrated while a client reads the stream, and the
 * demo shows that it went on without a gap; then it tears everything down.
 *
 * As root it runs on a lab of three hosts (network namespaces, bridges, etcd;
 * `ferry lab`): the client is a real Linux client on the LAN that also pings
 * the VM every 2 ms, and the LAN switch's forwarding table shows the move.
 * Otherwise (or with `--single`) it runs on the single-machine cluster, the
 * client being a second VM. It says which.
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
import { labTakeDown, labUpWithCluster } from '../lab-cluster.js';
import { type Lab, labLanPortOf, labRun } from '../../lab/lab.js';
import type { StreamCheck } from '../../lab/stream-check.js';
import { projectRoot } from '../../config/paths.js';
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

export async function runDemo(opts: { json: boolean; single?: boolean }): Promise<number> {
  if (!opts.single && process.getuid?.() === 0) return runLabDemo(opts);
  return runSingleDemo(opts);
}

/** A demo's stage: a fresh state directory, a line printer (quiet under --json), a progress line. */
function stage(opts: { json: boolean }): { dir: string; layout: StateLayout; say: (line: string) => void; progress: Progress } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-demo-'));
  return {
    dir,
    layout: new StateLayout(dir),
    say: (line) => {
      if (!opts.json) process.stdout.write(line + '\n');
    },
    progress: new Progress(),
  };
}

async function runSingleDemo(opts: { json: boolean }): Promise<number> {
  const { dir, layout, say, progress } = stage(opts);
  try {
    say(`ferry demo: on the single-machine cluster (${process.getuid?.() === 0 ? 'asked for with --single' : 'the lab needs root'}); state in ${dir}`);
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
    const report = await migrateShowingProgress(c, 'web', 'node-3', progress);
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
    if (opts.json) process.stdout.write(JSON.stringify({ ...report, where: 'single-machine', tcpStreamIntact: intact }, null, 2) + '\n');
    return report.status === 'completed' && intact ? 0 : 1;
  } finally {
    progress.done();
    say('tearing down');
    await down(layout).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Live-migrates a VM, showing each step (and the memory rounds) on the progress line; resolves with the report. */
async function migrateShowingProgress(c: Cluster, vm: string, to: string, progress: Progress): Promise<MigrationReport> {
  const started = (await c.api.call(vmRoutes.migrate, { params: { name: vm }, body: { to } })) as MigrationRecord;
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
  return final.report;
}

async function consoleText(c: Cluster, vm: string): Promise<string> {
  return (await c.api.open(vmRoutes.console, { params: { name: vm }, query: {} })).text();
}

/** Runs a command in a lab namespace; resolves with what it printed. */
/** What a command in the lab's client prints (stdout and stderr). */
async function inClient(lab: Lab, argv: string[]): Promise<string> {
  const r = await labRun(lab.client, argv);
  return r.stdout + r.stderr;
}

async function runLabDemo(opts: { json: boolean }): Promise<number> {
  const { dir, layout, say, progress } = stage(opts);
  try {
    say(`ferry demo: on a lab of 3 hosts (network namespaces on this machine, etcd, Linux bridges; running as root); state in ${dir}`);
    const { lab } = await labUpWithCluster(layout, { hosts: 3, cluster: true }, (l) => progress.update(l));
    progress.done();
    const c = Cluster.connect(layout);
    const hostOf = (name: string) => lab.hosts.find((h) => h.name === name)!;
    say(`lab up: ${lab.hosts.map((h) => `${h.name} (${h.lan})`).join(', ')}; a Linux client at ${lab.client.lan}`);

    await c.api.call(vmRoutes.create, { body: { name: 'web', memoryMiB: 256, workload: 'memory:16+tcp', node: 'host-1' } });
    const web = await c.api.call(vmRoutes.start, { params: { name: 'web' }, body: {} });
    const ip = web.ip.split('/')[0]!;
    say(`web: running on host-1, rewriting 16 MiB/s of memory and serving a TCP counter stream on ${ip}:7000`);
    await waitFor('the client to reach web', 60_000, async () =>
      (await inClient(lab, ['ping', '-c', '1', '-W', '1', ip])).includes('1 received') ? true : undefined,
    );
    say(`client: pinging ${ip} every 2 ms and reading its TCP stream`);
    const seconds = 25;
    const stream = inClient(lab, [process.execPath, path.join(projectRoot(), 'dist', 'src', 'lab', 'stream-check.js'), ip, '7000', String(seconds)]);
    const pings = inClient(lab, ['ping', '-q', '-i', '0.002', '-W', '1', '-w', String(seconds), ip]);
    await systemClock.sleep(3000);

    say('live-migrating web: host-1 → host-3 (over the migration network)');
    const report = await migrateShowingProgress(c, 'web', 'host-3', progress);
    say(
      `migration ${report.status}: total ${ms(report.totalMs)}, QEMU downtime ${ms(report.downtimeMs)}, ${bytes(report.transferredBytes)} in ${report.rounds} rounds`,
    );
    say(`  steps: ${report.steps.map((s) => `${s.name} ${ms(s.ms)}`).join(' → ')}`);
    if (report.network) say(`  network: ${report.network.name} (${report.network.sourceAddress} → ${report.network.targetAddress})`);
    const port = labLanPortOf(lab, web.mac);
    const seenOnTarget = port === hostOf('host-3').lanPort;
    say(`LAN switch: ${web.mac} is behind ${port ?? 'no port'}${seenOnTarget ? ", host-3's port" : ''}`);

    progress.update('the client reads on for a few seconds');
    const got = JSON.parse((await stream).trim().split('\n').at(-1) ?? '{}') as StreamCheck;
    const stats = /(\d+) packets transmitted, (\d+) received/.exec(await pings);
    progress.done();
    const sent = Number(stats?.[1] ?? 0);
    const lost = sent - Number(stats?.[2] ?? 0);
    const intact = report.status === 'completed' && got.gaps === 0 && got.reconnects === 0 && got.received > 0;
    say(
      `client: ${sent} pings, ${lost} lost (about ${lost * 2} ms without answers); TCP stream: ${got.received} lines, gaps ${got.gaps}, reconnects ${got.reconnects}: ${intact ? 'intact' : 'BROKEN'}`,
    );
    if (opts.json) {
      process.stdout.write(
        JSON.stringify(
          {
            ...report,
            where: 'lab',
            tcpStreamIntact: intact,
            client: { pings: sent, lost, stream: got },
            lanPort: port,
            targetLanPort: hostOf('host-3').lanPort,
          },
          null,
          2,
        ) + '\n',
      );
    }
    return intact && seenOnTarget ? 0 : 1;
  } finally {
    progress.done();
    say('tearing down the lab');
    await labTakeDown(layout).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

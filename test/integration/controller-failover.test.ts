/**
 * Controller failover in the lab (root): host-1 and host-2 each run a
 * controller (`lab up --controllers 2`, host-2 joined with `--controller`),
 * the store in etcd. One leads, through a leader key on a short lease; the
 * other stands by and answers the API by forwarding to the leader. Killing the leader during a live
 * migration, the standby takes over within the lease, carries the migration
 * on from its saved phase and ends it with the VM on exactly one host; the
 * CLI that follows the migration turns to it by itself, and the HA VM is
 * not fenced: the agents' heartbeats reach the new leader in time. A leader
 * that is frozen past its lease is deposed; thawed, it steps down and
 * stands by again. With every controller frozen for longer than the host
 * lease, nothing is fenced: the agents renew their leases in etcd
 * themselves.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { LEADER_TTL_MS } from '../../src/controller/app.js';
import type { ClusterEvent as Event } from '../../src/domain/events.js';
import type { MigrationReport } from '../../src/domain/migration.js';
import { projectRoot } from '../../src/config/paths.js';
import { labRun } from '../../src/lab/lab.js';
import { pidAlive } from '../../src/system/process.js';
import { StateLayout } from '../../src/domain/layout.js';
import { runFerry, TestCluster, waitFor } from '../helpers/cluster.js';

describe('controller failover in the lab', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.lab(['--hosts', '3', '--controllers', '2', '--node-memory', '1024']);
  });
  after(async () => {
    await c?.stop();
  });

  const events = () => c.ferryJson<Event[]>(['events']);
  const leaders = async (since = 0) => (await events()).filter((e) => e.type === 'controller.leader' && e.atMs >= since);
  const controllerPid = (host: string) => readEndpoint(c.hostLayout(host), 'controller')?.pid;
  const controllerLog = (host: string) => fs.readFileSync(path.join(c.hostLayout(host).logs, 'controller.log'), 'utf8');
  const whereQemuRuns = (vm: string) => c.whereQemuRuns(vm);
  const host = (name: string) => c.labbed!.hosts.find((h) => h.name === name)!;
  /** `ferry up` inside a host: it starts whichever of that host's daemons is not running. */
  const upIn = (name: string) =>
    labRun(host(name), [process.execPath, path.join(projectRoot(), 'dist/src/cli/main.js'), '--state', c.hostLayout(name).dir, 'up']);

  it('runs a controller on host-1 and on host-2: host-1 leads, host-2 stands by and answers by forwarding to it', async () => {
    const [first] = await leaders();
    assert.match(first!.message, /^host-1 leads the cluster \(leadership \d+\)$/);
    assert.match(controllerLog('host-2'), /"msg":"standby: host-1 leads \(pid \d+\); this controller takes over when its lease runs out"/);
    const standbyUrl = `https://${host('host-2').lan}:8470`;
    assert.deepEqual(
      { ...readEndpoint(c.hostLayout('host-2'), 'controller'), pid: 0 },
      { pid: 0, url: standbyUrl, standby: true },
      'a standby listens at its own address',
    );
    assert.ok((await events()).some((e) => e.type === 'controller.joined' && e.node === 'host-2'));
    // The CLI knows both; so does every agent (from the heartbeat answers).
    const client = JSON.parse(fs.readFileSync(c.layout.clientConfig, 'utf8')) as { controllers?: string[]; url: string };
    assert.deepEqual(client.controllers, [`https://${host('host-1').lan}:8470`, standbyUrl]);
    // A CLI that knows only the standby reads and writes through it: the leader answers.
    const viaStandby = path.join(c.dir, 'via-host-2');
    fs.mkdirSync(viaStandby);
    fs.writeFileSync(new StateLayout(viaStandby).clientConfig, JSON.stringify({ ...client, url: standbyUrl, controllers: [standbyUrl] }), { mode: 0o600 });
    const ferryVia = async (args: string[]) => {
      const r = await runFerry(viaStandby, args);
      assert.equal(r.code, 0, `ferry ${args.join(' ')} through the standby: ${r.stderr}`);
      return r.stdout;
    };
    const status = await ferryVia(['status']);
    assert.match(status, new RegExp(`^console: https://${host('host-1').lan.replace(/\./g, '\\.')}:8470/`, 'm'));
    const leadership = /^host-1 leads the cluster \(leadership (\d+)\)$/.exec(first!.message)![1];
    assert.match(status, new RegExp(`^controllers: host-1 \\(leads, leadership ${leadership}\\), host-2$`, 'm'), 'status names the leader');
    await ferryVia(['vm', 'create', 'probe', '--memory', '128']);
    assert.equal((await c.vm('probe')).state, 'stopped', 'the leader made it');
    await ferryVia(['vm', 'delete', 'probe']);
    assert.equal((await c.ferry(['vm', 'show', 'probe'])).code, 2);
  });

  it('kills the leading controller during a live migration: the standby leads within the lease, ends the migration, the VM on one host', async () => {
    await c.ferryOk(['node', 'maintenance', 'host-1']);
    await c.ferryOk(['vm', 'create', 'web', '--node', 'host-3', '--memory', '256', '--workload', 'tcp']);
    await c.ferryOk(['vm', 'set', 'web', '--ha', 'on']);
    await c.ferryOk(['vm', 'start', 'web']);
    const ticks = () => c.console('web').ticks.length;
    await waitFor('web to tick', 60_000, () => ticks() > 2);
    // Capped, so the memory step lasts while the leader dies; the CLI follows the migration to its end.
    const migrating = c.ferry(['vm', 'migrate', 'web', '--to', 'host-2', '--bandwidth', '8', '--json'], { timeoutMs: 120_000 });
    await waitFor('the memory step', 30_000, async () => /^migration +\S+: host-3 → host-2, step memory$/m.test(await c.ferryOk(['vm', 'show', 'web'])));
    const killedAt = Date.now();
    process.kill(controllerPid('host-1')!, 'SIGKILL');
    const r = await migrating;
    const report = JSON.parse(r.stdout) as MigrationReport;
    // Completed by the new leader (the transfer went on meanwhile), or undone by it: either way the VM runs once.
    assert.ok(
      (r.code === 0 && report.status === 'completed') || (r.code === 1 && report.status === 'failed'),
      `the CLI followed the migration through the leader change: ${r.code} ${r.stdout.slice(0, 400)} ${r.stderr}`,
    );
    const [took] = await leaders(killedAt);
    assert.match(took!.message, /^host-2 leads the cluster \(leadership \d+\), after host-1 \(pid \d+\) stopped renewing$/);
    assert.ok(took!.atMs - killedAt <= LEADER_TTL_MS + 3000, `host-2 led ${took!.atMs - killedAt} ms after the leader was killed`);
    const to = report.status === 'completed' ? 'host-2' : 'host-3';
    await waitFor(`web to run on ${to} only`, 30_000, async () => {
      const where = await whereQemuRuns('web');
      return where.length === 1 && where[0] === host(to).netns;
    });
    const shown = await c.vm('web');
    assert.deepEqual([shown.state, shown.node], ['running', to]);
    const t = ticks();
    await waitFor('the guest to keep ticking', 20_000, () => ticks() > t + 3);
    assert.equal(c.console('web').boots.length, 1, 'no reboot');
    // The agents' heartbeats found the new leader before their leases ran out: nothing was fenced, no host failed.
    const since = (await events()).filter((e) => e.atMs >= killedAt);
    assert.deepEqual(
      since.filter((e) => ['vm.fenced', 'node.failed'].includes(e.type)).map((e) => e.message),
      [],
    );
    // The new leader serves the API at its own address, and says it leads.
    const status = await c.ferryOk(['status']);
    assert.match(status, new RegExp(`^console: https://${host('host-2').lan.replace(/\./g, '\\.')}:8470/`, 'm'));
    assert.match(status, /^controllers: host-1, host-2 \(leads, leadership \d+\)$/m, 'status names the new leader');
  });

  it('deposes a leader frozen past its lease; thawed, it steps down and stands by again', async () => {
    // host-1's controller comes back (systemd's part on a real host): as the standby now. host-1 is in
    // maintenance, and `ferry up` is done once the controller hears it so.
    const up = await upIn('host-1');
    assert.deepEqual([up.code, up.stdout], [0, 'host-1: started controller\n'], up.stderr);
    await waitFor('host-1 to stand by', 20_000, () => /standby: host-2 leads/.test(controllerLog('host-1')));
    const frozen = controllerPid('host-2')!;
    const since = Date.now();
    process.kill(frozen, 'SIGSTOP');
    try {
      await waitFor('host-1 to lead', LEADER_TTL_MS + 10_000, async () => (await leaders(since)).some((e) => e.message.startsWith('host-1 leads')));
    } finally {
      process.kill(frozen, 'SIGCONT');
    }
    // Thawed, it finds its lease gone by its own clock, steps down (exits) and a new standby takes its place.
    await waitFor('the old leader to step down', 10_000, () =>
      /"msg":"stepping down: no renewal of the leader lease for \d+ ms"/.test(controllerLog('host-2')),
    );
    await waitFor('it to stand by again', 20_000, () => {
      const e = readEndpoint(c.hostLayout('host-2'), 'controller');
      return e !== undefined && e.pid !== frozen && e.standby === true;
    });
    assert.equal(pidAlive(frozen), false, 'the deposed process is gone');
    // The VM ran on through it all, once.
    const shown = await c.vm('web');
    assert.equal(shown.state, 'running');
    assert.deepEqual(await whereQemuRuns('web'), [host(shown.node).netns]);
  });

  it('fences nothing while no controller answers for longer than the host lease: each agent renews its own lease in etcd', async () => {
    const { node } = await c.vm('web');
    assert.match(
      fs.readFileSync(c.hostLayout(node).daemonLog(node), 'utf8'),
      /this host renews its own lease in the cluster store/,
      "the agent renews its host's lease itself",
    );
    const pidOf = async () => (await c.instances([node])).get(node)!.find((i) => i.name === 'web')?.pid;
    const pid = await pidOf();
    assert.ok(pid, 'web runs');
    const since = Date.now();
    const frozen = ['host-1', 'host-2'].map((h) => controllerPid(h)!);
    for (const p of frozen) process.kill(p, 'SIGSTOP');
    try {
      // Longer than the host lease (8 s) and the restart margin: heartbeats go unanswered all along.
      await new Promise((r) => setTimeout(r, 12_000));
    } finally {
      for (const p of frozen) process.kill(p, 'SIGCONT');
    }
    await waitFor('a controller to lead again and answer', 30_000, async () => (await c.ferry(['status'])).code === 0);
    const t = c.console('web').ticks.length;
    await waitFor('the guest to keep ticking', 20_000, () => c.console('web').ticks.length > t + 3);
    assert.equal(await pidOf(), pid, 'the same QEMU runs web');
    assert.equal(c.console('web').boots.length, 1, 'no reboot');
    assert.deepEqual(
      (await events()).filter((e) => e.atMs >= since && ['vm.fenced', 'node.failed', 'vm.failover', 'vm.restarted'].includes(e.type)).map((e) => e.message),
      [],
    );
  });
});

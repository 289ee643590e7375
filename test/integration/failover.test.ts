/**
 * Failover in the lab (root), with real QEMU: an HA VM writing numbered
 * disk records and an HA VM serving TCP run on host-2 (the controller and
 * etcd are on host-1, which is in maintenance: it takes no VMs). A sampler reads every QEMU process in every host's
 * namespace every 20 ms and never finds one VM twice.
 *
 * - `lab freeze host-2` (its agent stopped longer than the lease): the
 *   host's independent watchdog fences both VMs, then the controller starts
 *   them on host-3; host-2 rejoins without starting anything.
 * - `lab isolate host-3` (its LAN cable pulled): it fences both before they
 *   start on host-2; after `lab heal` it rejoins and reports the fencing.
 * - `lab crash host-2` (power loss): both start on host-3; the disk
 *   workload goes on after its last acknowledged record, none lost, none
 *   written twice; the events carry the detection and restart times.
 * - etcd has three members (host-1..3). `lab boot host-2` brings the crashed
 *   host back; then one member dies and nothing changes; then a second one
 *   dies and, without quorum, nothing is restarted anywhere (host-3 fences
 *   its HA VMs, as it cannot renew its lease); with quorum back they run
 *   again, once each, the disk records intact.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConsole } from '../../src/guest/console.js';
import { labStartEtcd, readLab } from '../../src/lab/lab.js';
import { netnsByInode, qemuCopies } from '../../src/lab/qemu-copies.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { readRecords } from '../helpers/disk.js';
import type { ClusterEvent as Event } from '../../src/domain/events.js';

describe('failover in the lab', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  let c: TestCluster;
  let sampler: NodeJS.Timeout;
  const doubles: string[] = [];
  /** Each change of where a VM's QEMU runs (netns names, '' for nowhere). */
  const history: { atMs: number; vm: string; where: string }[] = [];
  /** Where a VM's QEMU was last seen ('' for nowhere). */
  const lastSeen = (vm: string) => history.filter((h) => h.vm === vm).at(-1)?.where;
  let samples = 0;
  const VMS = ['db', 'web'];
  before(async () => {
    c = await TestCluster.lab(['--hosts', '3', '--node-memory', '1024', '--etcd', '3']);
    const spaces = netnsByInode(`fl-${c.labbed!.id}-`);
    sampler = setInterval(() => {
      samples++;
      for (const [vm, where] of qemuCopies(VMS, spaces)) {
        if (where.length > 1) doubles.push(`${vm} in ${where.join(' and ')}`);
        const now = where.sort().join(',');
        if (lastSeen(vm) !== now) history.push({ atMs: Date.now(), vm, where: now });
      }
    }, 20);
    // host-1 carries the controller and etcd's first member: it takes no VMs, so the failures below leave them standing.
    await c.ferryOk(['node', 'maintenance', 'host-1']);
    await c.ferryOk(['vm', 'create', 'db', '--node', 'host-2', '--memory', '128', '--workload', 'disk:20']);
    await c.ferryOk(['vm', 'create', 'web', '--node', 'host-2', '--memory', '128', '--workload', 'tcp']);
    assert.equal(await c.ferryOk(['vm', 'set', 'db', '--ha', 'on', '--ha-priority', '200']), 'VM db: high availability on (priority 200)\n');
    assert.equal(await c.ferryOk(['vm', 'set', 'web', '--ha', 'on']), 'VM web: high availability on (priority 100)\n');
    for (const vm of VMS) await c.ferryOk(['vm', 'start', vm]);
    await waitFor('db to write records', 60_000, () => (c.console('db').diskAcked ?? 0) >= 20);
  });
  after(async () => {
    clearInterval(sampler);
    await c?.stop();
  });

  // Polled through the API: the CLI's own output is other tests' subject.
  const vm = (name: string) => c.vm(name);
  const events = () => c.events();
  const runsOn = async (name: string, node: string) => {
    const v = await vm(name);
    return v.state === 'running' && v.node === node;
  };
  /** Waits for both VMs to run on `node`; a timeout says where they are and what happened since `since`. */
  const bothRunOn = (node: string, since: number) =>
    telling(since, () => waitFor(`db and web to run on ${node}`, 60_000, async () => (await runsOn('db', node)) && (await runsOn('web', node))));
  /** Runs a wait; a timeout says where the VMs are, the events since `since` and the controller's warnings. */
  const telling = async <T>(since: number, wait: () => Promise<T>): Promise<T> => {
    try {
      return await wait();
    } catch (e) {
      const where = await Promise.all(
        VMS.map(async (n) => {
          const v = await vm(n).catch(() => undefined);
          return `${n}: ${v?.state} on ${v?.node}${v?.error ? ` (${v.error})` : ''}`;
        }),
      );
      const seen = (await events().catch(() => [] as Event[])).filter((ev) => ev.atMs >= since);
      // The controller's warnings and errors since then, from its log in host-1.
      const log = fs.existsSync(path.join(c.hostLayout('host-1').logs, 'controller.log'))
        ? fs
            .readFileSync(path.join(c.hostLayout('host-1').logs, 'controller.log'), 'utf8')
            .split('\n')
            .filter((l) => /"level":(4|5)0/.test(l) && Number(/"time":(\d+)/.exec(l)?.[1] ?? 0) >= since)
            .slice(-30)
        : [];
      throw new Error(
        `${(e as Error).message}\nVMs: ${where.join('; ')}\nevents since:\n${seen.map((ev) => `${new Date(ev.atMs).toISOString()} ${ev.type} ${ev.message}`).join('\n')}\ncontroller warnings:\n${log.join('\n')}`,
        { cause: e },
      );
    }
  };

  it('shows HA in vm show and vm list', async () => {
    assert.match(await c.ferryOk(['vm', 'show', 'db']), /^ha +on \(priority 200\)$/m);
    const list = await c.ferryOk(['vm', 'list']);
    assert.match(list, /^NAME +STATE +NODE +MEMORY +CPUS +IP +WORKLOAD +HA$/m);
    assert.match(list, /^db +running +host-2 +128 MiB +1 +\S+ +disk:20 +on 200$/m);
    assert.match(list, /^web +running +host-2 +128 MiB +1 +\S+ +tcp +on 100$/m);
  });

  it('fences the VMs of a host whose agent is frozen past its lease, then restarts them elsewhere, never twice', async () => {
    const since = Date.now();
    assert.match(await c.ferryOk(['lab', 'freeze', 'host-2']), /^host-2's agent is frozen \(pid \d+\); 'ferry lab heal host-2' thaws it\n$/);
    await bothRunOn('host-3', since);
    const all = await events();
    const failed = all.find((e) => e.type === 'node.failed' && e.node === 'host-2' && e.atMs >= since)!;
    assert.ok(failed, 'host-2 failed');
    const restarts = all.filter((e) => e.type === 'vm.failover' && e.atMs >= since);
    assert.deepEqual(
      restarts.map((e) => [e.vm, e.data!.from, e.data!.to]),
      [
        ['db', 'host-2', 'host-3'],
        ['web', 'host-2', 'host-3'],
      ],
      'priority 200 first',
    );
    // The watchdog, not the frozen agent, killed them: before the new copies started.
    const log = (fs.readdirSync(c.dir, { recursive: true }) as string[]).find((f) => f.endsWith('host-2-watchdog.log'));
    assert.ok(log, "host-2's watchdog log");
    assert.match(fs.readFileSync(`${c.dir}/${log}`, 'utf8'), /fenced HA VM 'db'/);
    assert.equal(await c.ferryOk(['lab', 'heal', 'host-2']), 'host-2 healed: LAN link up, agent thawed\n');
    await waitFor('host-2 to rejoin', 30_000, async () => (await events()).some((e) => e.type === 'node.rejoined' && e.node === 'host-2'));
    await waitFor('the fencing to be reported', 15_000, async () => (await events()).filter((e) => e.type === 'vm.fenced').length === 2);
    assert.deepEqual(doubles, [], 'no VM ran twice');
  });

  it('fences the VMs of an isolated host (its LAN cable pulled) before they start elsewhere', async () => {
    const since = Date.now();
    const ns = (host: string) => c.labbed!.hosts.find((h) => h.name === host)!.netns;
    assert.equal(await c.ferryOk(['lab', 'isolate', 'host-3']), 'host-3 is isolated: its LAN link is down\n');
    await bothRunOn('host-2', since);
    for (const name of VMS) {
      const seen = history.filter((h) => h.vm === name && h.atMs >= since);
      const gone = seen.find((h) => !h.where.includes(ns('host-3')));
      const back = seen.find((h) => h.where.includes(ns('host-2')));
      assert.ok(gone && back && gone.atMs <= back.atMs, `${name} was fenced on host-3 before it started on host-2: ${JSON.stringify(seen)}`);
    }
    assert.ok((await events()).some((e) => e.type === 'node.failed' && e.node === 'host-3' && e.atMs >= since));
    assert.match(await c.ferryOk(['lab', 'heal', 'host-3']), /LAN link up/);
    await telling(since, () =>
      waitFor('host-3 to rejoin and report its fencing', 30_000, async () => {
        const after = (await events()).filter((e) => e.atMs >= since);
        return (
          after.some((e) => e.type === 'node.rejoined' && e.node === 'host-3') &&
          after.filter((e) => e.type === 'vm.fenced' && e.node === 'host-3').length === 2
        );
      }),
    );
    assert.deepEqual(doubles, [], 'no VM ran twice');
  });

  it('restarts them on the remaining host after a power loss; the disk records go on after the last acknowledged one', async () => {
    const since = Date.now();
    assert.match(await c.ferryOk(['lab', 'crash', 'host-2']), /^host-2 crashed: killed [2-9]\d* process\(es\)\n$/);
    const host2 = c.labbed!.hosts.find((h) => h.name === 'host-2')!.netns;
    assert.equal(execFileSync('ip', ['netns', 'pids', host2], { encoding: 'utf8' }).trim(), '', 'no process left on host-2');
    // Read once the old QEMU is dead: its last report, and where the new boot's lines begin.
    const acked = c.console('db').diskAcked!;
    const from = c.consoleText('db').length;
    const fresh = () => parseConsole(c.consoleText('db').slice(from));
    await bothRunOn('host-3', since);
    await waitFor('db to boot again and write', 60_000, () => fresh().boots.length === 1 && (fresh().diskAcked ?? 0) > acked + 5);
    const start = fresh().diskStart!;
    assert.ok(start >= acked, `the new boot found every acknowledged record (${acked}) and goes on after the last one on the disk: ${start}`);
    const all = (await events()).filter((e) => e.atMs >= since);
    const failed = all.find((e) => e.type === 'node.failed' && e.node === 'host-2')!;
    const detectionMs = failed.data!.detectionMs as number;
    assert.ok(detectionMs <= 10_000, `detected within 10 s: ${detectionMs} ms`);
    for (const e of all.filter((x) => x.type === 'vm.failover')) {
      assert.equal(e.data!.detectionMs, detectionMs);
      assert.ok((e.data!.sinceDetectionMs as number) <= 20_000, `restarted within 20 s of detection: ${String(e.data!.sinceDetectionMs)} ms`);
    }
    await c.ferryOk(['vm', 'stop', 'db', '--force']);
    const records = readRecords((await vm('db')).diskPath);
    assert.deepEqual(records.holes, [], 'no record missing in between');
    assert.ok(records.last >= c.console('db').diskAcked!, 'every acknowledged record is on the disk');
    assert.deepEqual(doubles, [], 'no VM ran twice');
    assert.ok(samples > 100, `the sampler ran (${samples} samples)`);
  });

  it('changes nothing when one of three etcd members dies, and restarts nothing anywhere while quorum is lost', async () => {
    // db (stopped to read its disk) runs again on host-3, the one host up; then host-2 is powered on and rejoins.
    await c.ferryOk(['vm', 'start', 'db']);
    assert.equal((await vm('db')).node, 'host-3');
    const writing = c.console('db').diskAcked ?? 0;
    await waitFor('db to write', 60_000, () => (c.console('db').diskAcked ?? 0) > writing + 20);
    const booted = Date.now();
    assert.equal(await c.ferryOk(['lab', 'boot', 'host-2']), 'host-2 booted: started etcd-2, host-2\n');
    await waitFor('host-2 to rejoin', 30_000, async () => (await events()).some((e) => e.type === 'node.rejoined' && e.node === 'host-2' && e.atMs >= booted));
    const ns = (host: string) => c.labbed!.hosts.find((h) => h.name === host)!.netns;
    const member = (name: string) => readLab(c.dir)!.etcd.find((m) => m.name === name)!.pid!;
    const pids = async () =>
      (await c.instances(['host-3']))
        .get('host-3')!
        .map((i) => `${i.name}:${i.pid}`)
        .sort();
    const failoverEvents = async (sinceMs: number) =>
      (await events()).filter((e) => e.atMs >= sinceMs && ['node.failed', 'vm.fenced', 'vm.failover', 'vm.restarted', 'vm.lost'].includes(e.type));

    // One of three members gone: etcd keeps its quorum and the cluster goes on as it was.
    const before = await waitFor('host-3 to list db and web', 15_000, async () => ((await pids()).length === 2 ? pids() : undefined));
    const acked = c.console('db').diskAcked!;
    const oneGone = Date.now();
    process.kill(member('etcd-2'), 'SIGKILL');
    await new Promise((r) => setTimeout(r, 11_000)); // longer than the lease (8 s) and the restart margin
    assert.deepEqual(await failoverEvents(oneGone), [], 'no failure, fencing or restart');
    assert.deepEqual(await pids(), before, 'the same QEMUs run on host-3');
    assert.ok(c.console('db').diskAcked! > acked + 50, 'db kept writing');

    // Two gone: no quorum, no write. host-3 cannot renew its lease and fences its HA VMs; nobody starts them elsewhere.
    const quorumLost = Date.now();
    process.kill(member('etcd-3'), 'SIGKILL');
    await waitFor('host-3 to fence db and web', 20_000, () => VMS.every((vm) => lastSeen(vm) === ''));
    await new Promise((r) => setTimeout(r, 10_000)); // past the lease and the margin once more
    const started = history.filter((h) => h.atMs >= quorumLost && h.where !== '');
    assert.deepEqual(started, [], `nothing started anywhere without quorum (host-2 is ${ns('host-2')})`);

    // Quorum back: each starts again once, and db's guest finds every record it had acknowledged before it was fenced.
    const lastAcked = c.console('db').diskAcked!;
    const from = c.consoleText('db').length;
    const fresh = () => parseConsole(c.consoleText('db').slice(from));
    assert.deepEqual((await labStartEtcd(readLab(c.dir)!, ['etcd-2', 'etcd-3'])).sort(), ['etcd-2', 'etcd-3']);
    await waitFor('db and web to run again', 60_000, async () => (await vm('db')).state === 'running' && (await vm('web')).state === 'running');
    await waitFor('db to boot again and write', 60_000, () => fresh().boots.length === 1 && fresh().diskStart !== undefined && (fresh().diskAcked ?? 0) > 0);
    assert.ok(fresh().diskStart! >= lastAcked, `every acknowledged record was there: ${fresh().diskStart} >= ${lastAcked}`);
    assert.deepEqual(doubles, [], 'no VM ran twice');
  });
});

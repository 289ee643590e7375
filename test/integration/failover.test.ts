/**
 * Failover in the lab (root), with real QEMU: an HA VM writing numbered
 * disk records and an HA VM serving TCP run on host-2 (the controller and
 * etcd are on host-1, which is in maintenance: it takes no VMs). A sampler reads every QEMU process in every host's
 * namespace every 20 ms and never finds one VM twice.
 *
 * - `lab freeze host-2` (its agent stopped longer than the lease): the
 *   host's independent watchdog fences both VMs, then the controller starts
 *   them on host-3; host-2 rejoins without starting anything.
 * - `lab crash host-3` (power loss): both start on host-2; the disk
 *   workload goes on after its last acknowledged record, none lost, none
 *   written twice; the events carry the detection and restart times.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { VmRecord } from '../../src/domain/records.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { readRecords } from '../helpers/disk.js';

interface Event {
  type: string;
  vm?: string;
  node?: string;
  atMs: number;
  data?: Record<string, unknown>;
}

/** Every QEMU of these VMs in the lab's namespaces, as netns names, by VM: read from /proc. */
function qemuCopies(vms: string[], spaces: Map<number, string>): Map<string, string[]> {
  const out = new Map<string, string[]>(vms.map((v) => [v, []]));
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (!args[0]?.includes('qemu-system')) continue;
      const name = args[args.indexOf('-name') + 1]?.split(',')[0];
      if (!name || !out.has(name)) continue;
      if (/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))) continue;
      out.get(name)!.push(spaces.get(fs.statSync(`/proc/${pid}/ns/net`).ino) ?? '?');
    } catch {
      /* it ended meanwhile */
    }
  }
  return out;
}

describe('failover in the lab', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  let c: TestCluster;
  let sampler: NodeJS.Timeout;
  const doubles: string[] = [];
  let samples = 0;
  const VMS = ['db', 'web'];
  before(async () => {
    c = await TestCluster.lab(['--hosts', '3', '--node-memory', '1024']);
    const spaces = new Map(fs.readdirSync('/run/netns').map((n) => [fs.statSync(`/run/netns/${n}`).ino, n]));
    sampler = setInterval(() => {
      samples++;
      for (const [vm, where] of qemuCopies(VMS, spaces)) if (where.length > 1) doubles.push(`${vm} in ${where.join(' and ')}`);
    }, 20);
    // host-1 carries the controller and etcd: it takes no VMs, so the failures below leave them standing.
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

  const vm = (name: string) => c.ferryJson<VmRecord>(['vm', 'show', name]);
  const events = () => c.ferryJson<Event[]>(['events']);
  const runsOn = async (name: string, node: string) => {
    const v = await vm(name);
    return v.state === 'running' && v.node === node;
  };

  it('shows HA in vm show', async () => {
    assert.match(await c.ferryOk(['vm', 'show', 'db']), /^ha +on \(priority 200\)$/m);
  });

  it('fences the VMs of a host whose agent is frozen past its lease, then restarts them elsewhere, never twice', async () => {
    const since = Date.now();
    assert.match(await c.ferryOk(['lab', 'freeze', 'host-2']), /frozen/);
    await waitFor('db and web to run on host-3', 60_000, async () => (await runsOn('db', 'host-3')) && (await runsOn('web', 'host-3')));
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
    assert.match(await c.ferryOk(['lab', 'heal', 'host-2']), /thawed/);
    await waitFor('host-2 to rejoin', 30_000, async () => (await events()).some((e) => e.type === 'node.rejoined' && e.node === 'host-2'));
    await waitFor('the fencing to be reported', 15_000, async () => (await events()).filter((e) => e.type === 'vm.fenced').length === 2);
    assert.deepEqual(doubles, [], 'no VM ran twice');
  });

  it('restarts them on the remaining host after a power loss; the disk records go on after the last acknowledged one', async () => {
    const acked = c.console('db').diskAcked!;
    const boots = c.console('db').boots.length;
    const since = Date.now();
    await c.ferryOk(['lab', 'crash', 'host-3']);
    await waitFor('db and web to run on host-2', 60_000, async () => (await runsOn('db', 'host-2')) && (await runsOn('web', 'host-2')));
    await waitFor('db to boot again and write', 60_000, () => c.console('db').boots.length > boots && (c.console('db').diskAcked ?? 0) > acked + 5);
    const start = c.console('db').diskStart!;
    assert.ok(start >= acked, `the new boot found every acknowledged record (${acked}) and goes on after the last one on the disk: ${start}`);
    const all = (await events()).filter((e) => e.atMs >= since);
    const failed = all.find((e) => e.type === 'node.failed' && e.node === 'host-3')!;
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
});

/**
 * A Ferry cluster in the lab (root): three hosts as network namespaces, the
 * store in etcd inside host-1, the controller on host-1's LAN address, an
 * agent in every host, VM NICs as taps on each host's vmbr0 (over eth0, on
 * the LAN). VMs move host to host over the migration network (eth1), with
 * real QEMU, while the real Linux client in the `client` namespace pings one
 * every 2 ms and reads its TCP counter stream; each move ends with the VM's
 * QEMU in the target host's namespace only and the LAN switch (the root
 * bridge) forwarding its MAC to the target host's port.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { projectRoot } from '../../src/config/paths.js';
import type { StreamCheck } from '../../src/lab/stream-check.js';
import { labLanPortOf, labRun } from '../../src/lab/lab.js';
import { after, before, describe, it } from 'node:test';
import type { MigrationReport } from '../../src/domain/migration.js';
import type { NetworkView } from '../../src/controller/network/networks.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';

describe('a cluster in the lab', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.lab(['--hosts', '3', '--link-mbit', '1000', '--node-memory', '1024']);
  });
  after(async () => {
    await c?.stop();
  });

  const whereQemuRuns = (vm: string) => c.whereQemuRuns(vm);
  const host = (name: string) => c.labbed!.hosts.find((h) => h.name === name)!;
  const lanPortOf = (mac: string) => labLanPortOf(c.labbed!, mac);
  /** Runs a command in the lab client namespace; resolves with its output once it ends. */
  const inClient = async (argv: string[]): Promise<string> => {
    const r = await labRun(c.labbed!.client, argv);
    return r.stdout + r.stderr;
  };

  it('runs its daemons in the hosts: nodes on their own addresses, the store in etcd', async () => {
    const nodes = await c.ferryJson<{ name: string; state: string; url: string; migrationAddress: string }[]>(['node', 'list']);
    assert.deepEqual(
      nodes.map((n) => [n.name, n.state, n.migrationAddress]),
      ['host-1', 'host-2', 'host-3'].map((h) => [h, 'up', host(h).migration]),
    );
    for (const n of nodes) assert.equal(new URL(n.url).hostname, host(n.name).lan, `${n.name}'s agent listens on its LAN address`);
    // Cluster networks are real subnets on real interfaces: net list shows each host's, as its kernel reports it.
    await waitFor('every host to report its links', 15_000, async () => {
      const nets = await c.ferryJson<NetworkView[]>(['net', 'list']);
      return nets.every((n) => n.nodes.every((x) => x.link)) ? nets : undefined;
    }).then((nets) => {
      for (const [network, iface] of [
        ['management', 'vmbr0'],
        ['migration', 'eth1'],
      ] as const) {
        const n = nets.find((x) => x.name === network)!;
        assert.equal(n.state, 'up');
        for (const x of n.nodes) {
          assert.equal(x.address, network === 'management' ? host(x.node).lan : host(x.node).migration);
          assert.deepEqual([x.link?.iface, x.link?.operState, x.link?.mtu], [iface, 'up', 1500], `${x.node} on ${network}`);
        }
      }
      // eth1 is a veth: the kernel says 10000 Mbit/s (tc shapes it to the lab's --link-mbit).
      assert.equal(nets.find((x) => x.name === 'migration')!.nodes[0]!.link?.speedMbit, 10000);
    });
    assert.match(await c.ferryOk(['net', 'list']), /^migration +host-2 +eth1 +\S+ +up +10000 Mbit\/s +1500$/m);
    const status = await c.ferryOk(['status']);
    assert.match(status, new RegExp(`^store: etcd at ${c.labbed!.etcd[0]!.clientUrl}$`, 'm'));
  });

  it('live-migrates a VM host to host and back while the real client pings it every 2 ms and reads its TCP stream', async () => {
    const web = await c.createAndStart('web', { node: 'host-1', workload: 'tcp', memoryMiB: 128 });
    await c.createAndStart('cli', { node: 'host-3', workload: 'tcp-client:web', memoryMiB: 128 });
    assert.deepEqual(await whereQemuRuns('web'), [host('host-1').netns]);
    await waitFor('the stream to flow', 30_000, () => (c.console('cli').tcpClient?.received ?? 0) > 200);
    const ip = web.ip.split('/')[0]!;
    await waitFor('the client to reach web on the LAN', 20_000, async () => /1 received/.test(await inClient(['ping', '-c', '1', '-W', '1', ip])));
    assert.equal(lanPortOf(web.mac), host('host-1').lanPort, "the LAN switch forwards web's MAC to host-1");
    // The client reads the stream and pings for as long as both migrations take.
    const seconds = 22;
    const stream = inClient([process.execPath, path.join(projectRoot(), 'dist/src/lab/stream-check.js'), ip, '7000', String(seconds)]);
    const pings = inClient(['ping', '-i', '0.002', '-W', '1', '-w', String(seconds), ip]);
    // What the LAN hears of web's announce after each move: QEMU's RARP with its MAC, and the guest's own gratuitous ARP.
    const announces = inClient(['timeout', String(seconds), 'tcpdump', '-i', 'eth0', '-n', '-e', '-l', 'arp or rarp']);
    await new Promise((r) => setTimeout(r, 2000));
    for (const [from, to] of [
      ['host-1', 'host-2'],
      ['host-2', 'host-1'],
    ] as const) {
      const before = c.console('cli').tcpClient!;
      const report = await c.ferryJson<MigrationReport>(['vm', 'migrate', 'web', '--to', to]);
      assert.equal(report.status, 'completed', JSON.stringify(report));
      assert.equal(report.from, from);
      assert.equal(report.to, to);
      assert.deepEqual(report.network && [report.network.name, report.network.sourceAddress, report.network.targetAddress], [
        'migration',
        host(from).migration,
        host(to).migration,
      ]);
      assert.deepEqual(await whereQemuRuns('web'), [host(to).netns], `web's QEMU runs in ${to} only`);
      assert.equal(lanPortOf(web.mac), host(to).lanPort, `the LAN switch forwards web's MAC to ${to} now`);
      const after = await waitFor('the stream to continue', 30_000, () => {
        const t = c.console('cli').tcpClient;
        return t && t.received > before.received + 200 ? t : undefined;
      });
      assert.equal(after.gaps, 0, `no gap: ${c.console('cli').tcpGaps.join('; ')}`);
      assert.equal(after.reconnects, 0, 'the same connection');
    }
    const seen = JSON.parse(await stream) as StreamCheck;
    assert.equal(seen.gaps, 0, `the client's stream had no gap: ${JSON.stringify(seen)}`);
    assert.equal(seen.reconnects, 0, 'the client kept its connection');
    assert.ok(seen.received > (seconds - 5) * 100 * 0.9, `the client read the stream all along: ${JSON.stringify(seen)}`);
    const stats = /(\d+) packets transmitted, (\d+) received/.exec(await pings);
    assert.ok(stats, 'ping reported');
    const lost = Number(stats[1]) - Number(stats[2]);
    // Every 2 ms for 22 s, with two moves: the pings lost add up to well under 200 ms of blackout.
    assert.ok(Number(stats[1]) > 5000, `pinged every 2 ms: ${stats[0]}`);
    assert.ok(lost < 100, `${lost} pings lost of ${stats[1]}`);
    const heard = await announces;
    assert.match(heard, new RegExp(`^\\S+ ${web.mac} > ff:ff:ff:ff:ff:ff, ethertype Reverse ARP .* who-is ${web.mac} tell ${web.mac}`, 'm'), heard);
    assert.match(
      heard,
      new RegExp(`^\\S+ ${web.mac} > ff:ff:ff:ff:ff:ff, ethertype ARP .* who-has ${ip.replaceAll('.', '\\.')} tell ${ip.replaceAll('.', '\\.')},`, 'm'),
      heard,
    );
  });

  it('quick-migrates, drains and balances across lab hosts', async () => {
    const quick = await c.ferryJson<MigrationReport>(['vm', 'migrate', 'web', '--to', 'host-3', '--quick']);
    assert.equal(quick.status, 'completed', JSON.stringify(quick));
    assert.deepEqual(await whereQemuRuns('web'), [host('host-3').netns]);
    // host-3 holds web and cli now (two vCPUs on a 2-CPU host: 100%, the others 0%): balancing moves cli, which
    // has not moved yet (web just did), live to the least loaded host.
    const balanced = await c.ferryOk(['cluster', 'balance']);
    assert.match(balanced, /^load now: host-1 0%, host-2 0%, host-3 100% \(threshold 20 points\)$/m);
    assert.match(balanced, /^ {2}cli \(128 MiB\): host-3 → host-1$/m);
    assert.match(balanced, /^ {2}cli: completed$/m);
    assert.deepEqual(await whereQemuRuns('cli'), [host('host-1').netns]);
    // A drain moves web off host-3, live.
    await c.ferryOk(['node', 'maintenance', 'host-3']);
    await waitFor('host-3 to be empty', 120_000, async () => (await c.instances(['host-3'])).get('host-3')!.length === 0);
    for (const vm of ['web', 'cli']) {
      const where = await whereQemuRuns(vm);
      assert.equal(where.length, 1);
      assert.ok([host('host-1').netns, host('host-2').netns].includes(where[0]!), `${vm} runs on host-1 or host-2`);
    }
    const t = c.console('cli').tcpClient!;
    await waitFor('the stream after the drain', 30_000, () => (c.console('cli').tcpClient?.received ?? 0) > t.received + 100);
    await c.ferryOk(['node', 'resume', 'host-3']);
  });

  it('marks a host that does not see the shared volume and gives it no VMs, until it sees it again', async () => {
    // host-3 "loses its NFS mount": an empty directory bound over the shared volume in its agent's mount namespace.
    const agentPid = readEndpoint(c.hostLayout('host-3'), 'host-3')!.pid;
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-not-the-volume-'));
    const inAgent = (args: string[]) => execFileSync('nsenter', ['-t', String(agentPid), '-m', '--', ...args]);
    inAgent(['mount', '--bind', empty, c.layout.shared]);
    try {
      const seen = await waitFor('host-3 to be marked', 15_000, async () => {
        const n = (await c.nodes()).find((x) => x.name === 'host-3')!;
        return n.volume?.ok === false ? n : undefined;
      });
      assert.equal(seen.volume!.error, `${path.join(c.layout.shared, '.ferry-volume')} does not exist (is the shared volume mounted at ${c.layout.shared}?)`);
      assert.match(await c.ferryOk(['node', 'list']), /^host-3 +up .* NOT SEEN: /m);
      const r = await c.ferry(['vm', 'migrate', 'web', '--to', 'host-3']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^error: node 'host-3' does not see the cluster's shared volume: \S+ does not exist \(is the shared volume mounted at \S+\?\)\n$/);
      const start = await c.ferry(['vm', 'create', 'blind', '--memory', '128', '--node', 'host-3']);
      assert.equal(start.code, 0, start.stderr);
      const s = await c.ferry(['vm', 'start', 'blind']);
      assert.equal(s.code, 2, s.stderr);
      assert.match(s.stderr, /^error: node 'host-3' does not see the cluster's shared volume: /);
      assert.equal((await c.instances(['host-3'])).get('host-3')!.length, 0, 'nothing started there');
      const events = await c.ferryJson<{ type: string; node?: string }[]>(['events']);
      assert.ok(events.some((e) => e.type === 'node.volume-lost' && e.node === 'host-3'));
    } finally {
      inAgent(['umount', c.layout.shared]);
      fs.rmSync(empty, { recursive: true, force: true });
    }
    await waitFor('host-3 to see the volume again', 15_000, async () => (await c.nodes()).find((x) => x.name === 'host-3')!.volume?.ok === true);
    await c.ferryOk(['vm', 'start', 'blind']);
    assert.deepEqual(await whereQemuRuns('blind'), [host('host-3').netns]);
    // The CLI on a joined host speaks to the controller too; it will not take its host down under a running VM.
    const onHost3 = (args: string[]) =>
      labRun(host('host-3'), [process.execPath, path.join(projectRoot(), 'dist/src/cli/main.js'), '--state', c.hostLayout('host-3').dir, ...args]);
    assert.match((await onHost3(['vm', 'list'])).stdout, /^blind +running +host-3 /m);
    const down = await onHost3(['down']);
    assert.deepEqual(
      [down.code, down.stderr],
      [2, 'error: host-3 still runs VMs (blind): drain it first (ferry node maintenance host-3 --drain live), or --force to power them off\n'],
    );
    assert.deepEqual(await whereQemuRuns('blind'), [host('host-3').netns], 'blind still runs, and host-3 still reports it');
  });

  it("keeps a VM where it was when the target host's management link goes down during its migration", async () => {
    const shown = () => c.ferryJson<{ state: string; node: string; migration?: { phase?: string } }>(['vm', 'show', 'web']);
    const vm = await c.vm('web');
    const from = vm.node;
    // Not host-1: the controller lives there, and cutting its link would cut the test off too.
    const to = from === 'host-2' ? 'host-3' : 'host-2';
    const ticks = c.console('web').ticks.length;
    // A capped migration lasts long enough to cut the target's LAN leg (eth0) while memory flows over eth1.
    const migrating = c.ferry(['vm', 'migrate', 'web', '--to', to, '--bandwidth', '2', '--json'], { timeoutMs: 180_000 });
    await waitFor('the memory step', 30_000, async () => (await shown()).migration?.phase === 'memory');
    // `ferry lab isolate`: the target's LAN cable pulled at the switch.
    assert.equal(await c.ferryOk(['lab', 'isolate', to]), `${to} is isolated: its LAN link is down\n`);
    assert.match(execFileSync('ip', ['-n', host(to).netns, 'link', 'show', 'eth0'], { encoding: 'utf8' }), /NO-CARRIER/);
    let r: Awaited<typeof migrating>;
    try {
      r = await migrating;
    } finally {
      assert.equal(await c.ferryOk(['lab', 'heal', to]), `${to} healed: LAN link up\n`);
    }
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.notEqual(report.status, 'completed');
    assert.ok(report.error, 'the report says what failed');
    const after = await waitFor('the VM to settle on its host', 60_000, async () => {
      const v = await shown();
      return v.state === 'running' && !v.migration ? v : undefined;
    });
    assert.equal(after.node, from, 'the VM stays where it was');
    await waitFor('only one QEMU of web, in the source host', 60_000, async () => {
      const where = await whereQemuRuns('web');
      return where.length === 1 && where[0] === host(from).netns ? true : undefined;
    });
    await waitFor('the guest to keep ticking', 20_000, () => c.console('web').ticks.length > ticks + 3);
    assert.equal(c.console('web').boots.length, 1, 'no reboot');
    await waitFor(`${to} to be up again`, 20_000, async () => (await nodeState(to)) === 'up');
  });

  const nodeState = async (name: string) => (await c.nodes()).find((n) => n.name === name)?.state;

  // Freezing past the lease, healing and crashing a host are failover.test's; here the timed freeze and the refusals.
  it('fakes a pause on a host for a while (lab freeze --for) and refuses a fault on the client', async () => {
    const since = Date.now();
    assert.equal(await c.ferryOk(['lab', 'freeze', 'host-2', '--for', '1']), "host-2's agent was frozen for 1 s\n");
    assert.ok(Date.now() - since >= 1000);
    const agent = readEndpoint(c.hostLayout('host-2'), 'host-2')!.pid;
    assert.notEqual(/^State:\s+(\S)/m.exec(fs.readFileSync(`/proc/${agent}/status`, 'utf8'))?.[1], 'T', 'the agent runs again');
    await waitFor('host-2 to be up', 15_000, async () => (await nodeState('host-2')) === 'up');
    const bad = await c.ferry(['lab', 'crash', 'client']);
    assert.deepEqual([bad.code, bad.stderr], [2, "error: the lab has no host 'client' (it has host-1, host-2, host-3)\n"]);
  });
});

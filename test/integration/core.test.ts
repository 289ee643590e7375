/**
 * The core with real QEMU: a cluster comes up and goes down without leaving
 * anything, VMs boot the built-in guest, answer through the switch, talk TCP
 * to each other, stop and go away; the CLI refuses bad input cleanly.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { pidAlive } from '../../src/qemu/qemu-vm.js';
import { projectRoot } from '../../src/config/paths.js';
import { TestCluster, processesMentioning, socketsUnder, waitFor } from '../helpers/cluster.js';

describe('core: a local cluster with real QEMU', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({ nodes: 2 });
  });
  after(async () => {
    await c?.stop();
  });

  it('reports its nodes with the accelerator that works and the CPU QEMU gives', async () => {
    const nodes = await c.ferryJson<
      { name: string; state: string; capabilities: { accelerator: string; cpu: { vendor: string; model: string; features: string[] }; qemuVersion: string } }[]
    >(['node', 'list']);
    assert.deepEqual(
      nodes.map((n) => [n.name, n.state]),
      [
        ['node-1', 'up'],
        ['node-2', 'up'],
      ],
    );
    for (const n of nodes) {
      assert.ok(['kvm', 'tcg'].includes(n.capabilities.accelerator));
      assert.match(n.capabilities.cpu.vendor, /GenuineIntel|AuthenticAMD/);
      assert.ok(n.capabilities.cpu.features.includes('sse2'), 'features come from query-cpu-model-expansion');
      assert.match(n.capabilities.qemuVersion, /^\d+\.\d+/);
    }
    const table = await c.ferryOk(['node', 'list']);
    assert.match(table.split('\n')[0]!, /NAME\s+STATE\s+ACCEL/);
    const again = await c.ferry(['up']);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /already running/);
  });

  it('boots the built-in guest, which answers ping through the switch, then stops and deletes it', async () => {
    await c.ferryOk(['vm', 'create', 'pinger', '--memory', '128', '--node', 'node-1']);
    await c.ferryOk(['vm', 'start', 'pinger']);
    const vm = await c.ferryJson<{
      name: string;
      state: string;
      node: string;
      memoryMiB: number;
      cpus: number;
      mac: string;
      ip: string;
      workload: string;
      disk: string;
    }>(['vm', 'show', 'pinger']);
    assert.deepEqual([vm.state, vm.node, vm.memoryMiB, vm.cpus, vm.workload], ['running', 'node-1', 128, 1, 'idle']);
    assert.ok(fs.existsSync(vm.disk), 'the disk is a qcow2 on the shared volume');
    const boot = await waitFor('the guest to boot', 60_000, () => c.console('pinger').boots[0]);
    assert.equal(boot.mac, vm.mac, 'the guest took its MAC from Ferry');
    assert.equal(boot.ip, vm.ip, 'the guest took its IP from the kernel command line');
    const ping = await waitFor('a ping answer', 30_000, async () => {
      const r = await c.ferry(['vm', 'ping', 'pinger', '--json']);
      return r.code === 0 ? (JSON.parse(r.stdout) as { answered: boolean; rttMs: number }) : undefined;
    });
    assert.equal(ping.answered, true);
    const macs = await c.ferryJson<{ mac: string; node: string; vm: string | null }[]>(['switch', 'show']);
    assert.ok(
      macs.some((m) => m.mac === vm.mac && m.node === 'node-1' && m.vm === 'pinger'),
      'the switch learnt the MAC on node-1',
    );
    // QMP sockets are private: 0600 in a 0700 directory.
    const runDir = c.layout.nodeRun('node-1');
    assert.equal(fs.statSync(runDir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(`${runDir}/pinger.qmp`).mode & 0o777, 0o600);

    await c.ferryOk(['vm', 'stop', 'pinger']);
    assert.deepEqual(await c.agent('node-1').list(), []);
    assert.equal((await c.vm('pinger')).state, 'stopped');
    await c.ferryOk(['vm', 'delete', 'pinger']);
    assert.equal(fs.existsSync(vm.disk), false);
    const gone = await c.ferry(['vm', 'show', 'pinger']);
    assert.equal(gone.code, 2);
    assert.equal(gone.stderr.trim(), "error: unknown VM 'pinger'");
  });

  it('carries a TCP counter stream from one VM to another across nodes', async () => {
    await c.createAndStart('server', { node: 'node-1', workload: 'tcp', memoryMiB: 128 });
    await c.createAndStart('reader', { node: 'node-2', workload: 'tcp-client:server', memoryMiB: 128 });
    const report = await waitFor('the client to read the counter', 60_000, () => {
      const r = c.console('reader').tcpClient;
      return r && r.received >= 200 ? r : undefined;
    });
    assert.equal(report.gaps, 0);
    assert.equal(report.reconnects, 0);
    assert.equal(report.last, report.received, 'every number from 1 arrived once, in order');
    await c.ferryOk(['vm', 'stop', 'reader']);
    await c.ferryOk(['vm', 'stop', 'server']);
  });

  it('creates every file for its owner alone: disks, consoles, logs, the store, the token', async () => {
    const mode = (p: string) => (fs.statSync(p).mode & 0o777).toString(8);
    const disk = (await c.vm('server')).diskPath;
    const files = [
      disk,
      c.layout.consoleLog('server'),
      c.layout.store,
      c.layout.token,
      c.layout.cluster,
      ...fs.readdirSync(c.layout.logs).map((f) => path.join(c.layout.logs, f)),
    ];
    for (const f of files) assert.equal(mode(f), '600', f);
    for (const d of [c.dir, c.layout.shared, c.layout.disks, c.layout.consoles, c.layout.logs, c.layout.run]) assert.equal(mode(d), '700', d);
  });

  it('refuses bad input with one error line, exit 2, and nothing created', async () => {
    const before = await c.ferryJson<unknown[]>(['vm', 'list']);
    const disks = fs.readdirSync(c.layout.disks);
    const cases: [string[], RegExp][] = [
      [['vm', 'create', 'Bad_Name'], /^error: VM name 'Bad_Name' is malformed/],
      [['vm', 'create', 'big', '--memory', '999999'], /^error: memory \(MiB\) must be a whole number from 64 to 65536, got '999999'/],
      [['vm', 'create', 'many', '--cpus', '0'], /^error: CPUs must be a whole number from 1 to 64/],
      [['vm', 'create', 'w', '--workload', 'memory:lots'], /^error: workload 'memory:lots' does not parse/],
      [['vm', 'create', 'n', '--node', 'node-9'], /^error: unknown node 'node-9'/],
      [['vm', 'start', 'ghost'], /^error: unknown VM 'ghost'/],
      [['vm', 'create'], /^error: 'vm create' needs a VM name/],
      [['vm', 'create', 'x', '--colour', 'red'], /^error: 'vm create' does not take --colour/],
      [['vm', 'frobnicate'], /^error: unknown command 'vm frobnicate'/],
      [['vm', 'create', 'server'], /^error: VM 'server' already exists/],
    ];
    for (const [args, pattern] of cases) {
      const r = await c.ferry(args);
      assert.equal(r.code, 2, `ferry ${args.join(' ')} should exit 2, got ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, pattern, `ferry ${args.join(' ')}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    }
    assert.deepEqual(await c.ferryJson<unknown[]>(['vm', 'list']), before);
    assert.deepEqual(fs.readdirSync(c.layout.disks), disks, 'no disk left from a refused create');
  });
});

describe('core: up and down leave nothing behind', () => {
  it('starts daemons on demand, restarts a missing one, and tears everything down', async () => {
    const c = await TestCluster.start({ nodes: 1 });
    try {
      await c.createAndStart('lone', { memoryMiB: 128 });
      assert.ok(processesMentioning(c.dir).length >= 4, 'switch, controller, agent and QEMU run');
      const status = await c.ferryJson<{ nodes: { up: number }; vms: { running: number } }>(['status']);
      assert.deepEqual([status.nodes.up, status.vms.running], [1, 1]);
      // An agent that dies leaves its QEMU running; `ferry up` starts a new agent that adopts it.
      const agentPid = readEndpoint(c.layout, 'node-1')!.pid;
      const qemuPid = (await c.agent('node-1').list())[0]!.pid;
      process.kill(agentPid, 'SIGKILL');
      await waitFor('the agent to die', 5000, () => !pidAlive(agentPid));
      const again = await c.ferry(['up']);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /started node-1/);
      const adopted = await c.agent('node-1').list();
      assert.deepEqual(
        adopted.map((i) => [i.name, i.pid, i.runState]),
        [['lone', qemuPid, 'running']],
      );
      const ticks = c.console('lone').ticks.length;
      await waitFor('the guest to keep ticking', 10_000, () => c.console('lone').ticks.length > ticks + 1);
    } finally {
      await c.stop();
    }
    assert.deepEqual(processesMentioning(c.dir), []);
    assert.deepEqual(socketsUnder(c.dir), []);
  });

  it('says so when no cluster runs', async () => {
    const c = await TestCluster.start({ nodes: 1 });
    await c.ferryOk(['down']);
    const r = await c.ferry(['vm', 'list']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^error: no cluster is running in .* \(start one with 'ferry up'\)/);
    await c.stop();
  });
});

describe('core: console', () => {
  it('attaches to the serial console: input reaches the guest shell, output comes back', async () => {
    const c = await TestCluster.start({ nodes: 1 });
    try {
      await c.createAndStart('talk', { memoryMiB: 128 });
      const out = await new Promise<{ code: number; stdout: string }>((resolve, reject) => {
        const child = spawn(process.execPath, [path.join(projectRoot(), 'dist/src/cli/main.js'), '--state', c.dir, 'vm', 'console', 'talk'], {
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.on('error', reject);
        child.on('exit', (code) => resolve({ code: code ?? -1, stdout }));
        setTimeout(() => child.stdin.end('echo ferry-$((6*7))\n'), 1000);
      });
      assert.equal(out.code, 0);
      assert.match(out.stdout, /ferry-42/, 'the guest shell ran the command and the answer came back');
      assert.match(c.consoleText('talk'), /ferry-42/, 'and the console log kept it');
    } finally {
      await c.stop();
    }
  });
});

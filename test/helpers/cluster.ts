/**
 * Integration-test rig: a real local cluster (switch, controller, agents,
 * QEMU) in its own temporary state directory, driven through the real CLI
 * and API. `stop()` tears it down and proves nothing was left behind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { AgentClient } from '../../src/node/client.js';
import { SwitchClient } from '../../src/switch/client.js';
import type { ApiClient } from '../../src/api/client.js';
import { readConfig, readEndpoint, readToken } from '../../src/config/cluster-config.js';
import { down, up, type UpOptions } from '../../src/cli/daemons.js';
import { Cluster } from '../../src/cli/context.js';
import { type GuestConsole, parseConsole } from '../../src/guest/console.js';
import type { NodeRecord, VmInstance, VmRecord } from '../../src/domain/records.js';
import type { ClusterEvent } from '../../src/domain/events.js';
import { nodeRoutes } from '../../src/api/routes/nodes.js';
import { StateLayout, projectRoot } from '../../src/config/paths.js';
import { type Lab, readLab } from '../../src/lab/lab.js';
import { clientTls, openLayout, readClientConfig } from '../../src/config/host-config.js';
import { labHostDir } from '../../src/cli/lab-cluster.js';
import { tlsFetch } from '../../src/api/tls.js';
import { eventRoutes } from '../../src/api/routes/events.js';
import { vmRoutes } from '../../src/api/routes/vms.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  stepMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Runs the real `ferry` CLI with `--state state`, for tests without a TestCluster (the lab, init). */
export function runFerry(state: string, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(projectRoot(), 'dist/src/cli/main.js'), '--state', state, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Every process whose command line mentions `needle` (the state directory). */
export function processesMentioning(needle: string): string[] {
  const found: string[] = [];
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (cmd.includes(needle) && !/^\d+ \(.*\) Z/.test(stat)) found.push(`${pid}: ${cmd.slice(0, 120)}`);
    } catch {
      /* gone */
    }
  }
  return found;
}

export function socketsUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    if (!fs.existsSync(d)) return;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isSocket()) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** A TCP port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export class TestCluster {
  readonly layout: StateLayout;
  client!: Cluster;

  private constructor(
    readonly dir: string,
    /** The test made the directory (a file system of its own): it takes it away, not stop(). */
    private readonly ownDir = true,
  ) {
    this.layout = new StateLayout(dir);
  }

  /** A cluster in a fresh temporary directory, or in `dir` (an empty directory the test provides and removes). */
  static async start(opts: UpOptions & { dir?: string } = {}): Promise<TestCluster> {
    const { dir: given, ...upOpts } = opts;
    const dir = given ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-test-'));
    const c = new TestCluster(dir, given === undefined);
    opts = upOpts;
    try {
      // Each test cluster's controller on a port chosen now, so clusters never collide.
      await up(c.layout, { port: await freePort(), ...opts });
      c.client = Cluster.connect(c.layout);
      return c;
    } catch (e) {
      await c.stop().catch(() => {});
      throw e;
    }
  }

  /** The lab this cluster runs in, if `TestCluster.lab` made it. */
  labbed: Lab | undefined;

  /** A cluster in a lab (root): `ferry lab up --hosts N …` in a fresh directory; stop() runs `ferry lab down` and checks it left nothing. */
  static async lab(args: string[]): Promise<TestCluster> {
    const c = new TestCluster(fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lab-')));
    try {
      const r = await c.ferry(['lab', 'up', ...args, '--json'], { timeoutMs: 180_000 });
      assert.equal(r.code, 0, `lab up failed: ${r.stderr}`);
      c.labbed = JSON.parse(r.stdout) as Lab;
      c.client = Cluster.connect(c.layout);
      return c;
    } catch (e) {
      await c.stop().catch(() => {});
      throw e;
    }
  }

  /** Which lab namespace a process runs in ('' for the root namespace). */
  static netnsOf(pid: number): string {
    const inode = (p: string) => fs.statSync(p).ino;
    const mine = inode(`/proc/${pid}/ns/net`);
    const names = fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : [];
    return names.find((n) => inode(`/run/netns/${n}`) === mine) ?? '';
  }

  /** The typed client of this cluster's controller. */
  get api(): ApiClient {
    return this.client.api;
  }

  get token(): string {
    return readToken(this.layout) ?? readClientConfig(this.layout)!.token;
  }

  /** A host's own state directory: in a lab, each host has one (LAB/hosts/NAME); otherwise the cluster's. */
  hostLayout(node: string): StateLayout {
    return this.labbed ? openLayout(labHostDir(this.dir, node)) : this.layout;
  }

  /** Runs the real `ferry` CLI against this cluster. */
  ferry(args: string[], opts: { timeoutMs?: number; onSpawn?: (pid: number) => void } = {}): Promise<CliResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(projectRoot(), 'dist/src/cli/main.js'), '--state', this.dir, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      if (child.pid) opts.onSpawn?.(child.pid);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`ferry ${args.join(' ')} timed out; stderr: ${stderr}`));
      }, opts.timeoutMs ?? 120_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr });
      });
    });
  }

  async ferryOk(args: string[]): Promise<string> {
    const r = await this.ferry(args);
    assert.equal(r.code, 0, `ferry ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  }

  async ferryJson<T>(args: string[]): Promise<T> {
    return JSON.parse(await this.ferryOk([...args, '--json'])) as T;
  }

  vm(name: string): Promise<VmRecord> {
    return this.api.call(vmRoutes.show, { params: { name: name } });
  }

  /** The event log, through the API: a poll costs no CLI process (each takes a third of a core for a moment). */
  events(): Promise<ClusterEvent[]> {
    return this.api.call(eventRoutes.list, {});
  }

  nodes(): Promise<NodeRecord[]> {
    return this.api.call(nodeRoutes.list, {});
  }

  agent(node: string): AgentClient {
    const e = readEndpoint(this.hostLayout(node), node);
    if (!e) throw new Error(`agent ${node} has no endpoint`);
    if (!this.labbed) return new AgentClient(node, e.url, this.token);
    // Lab agents answer only the cluster's controllers: the test calls with the controller's certificate.
    this.agentFetch ??= tlsFetch(clientTls(this.hostLayout(this.labbed.hosts[0]!.name), 'controller')!);
    return new AgentClient(node, e.url, '', this.agentFetch);
  }

  private agentFetch: ReturnType<typeof tlsFetch> | undefined;

  get switch(): SwitchClient {
    return new SwitchClient(readEndpoint(this.layout, 'switch')!.url, this.token);
  }

  /** The lab namespaces a VM's QEMU processes run in, as the lab hosts' agents report them. */
  async whereQemuRuns(vm: string): Promise<string[]> {
    const all = await this.instances(this.labbed!.hosts.map((h) => h.name));
    return [...all.values()].flat().flatMap((i) => (i.name === vm && i.pid ? [TestCluster.netnsOf(i.pid)] : []));
  }

  /** What every node's agent says runs there, keyed by node. */
  async instances(nodes: string[]): Promise<Map<string, VmInstance[]>> {
    const out = new Map<string, VmInstance[]>();
    // A node whose agent is down reports nothing (its QEMU may still run: see processesMentioning).
    await Promise.all(
      nodes.map(async (n) =>
        out.set(
          n,
          await Promise.resolve()
            .then(() => this.agent(n).list({ timeoutMs: 3000 }))
            .catch(() => []),
        ),
      ),
    );
    return out;
  }

  consoleText(vm: string): string {
    const p = this.layout.consoleLog(vm);
    return fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : '';
  }

  console(vm: string): GuestConsole {
    return parseConsole(this.consoleText(vm));
  }

  async createAndStart(name: string, opts: { node?: string; memoryMiB?: number; workload?: string } = {}): Promise<VmRecord> {
    await this.api.call(vmRoutes.create, { body: { name, ...opts } });
    await this.api.call(vmRoutes.start, { params: { name: name }, body: {} });
    await waitFor(`${name} to boot`, 60_000, () => this.console(name).ticks.length > 0);
    return this.vm(name);
  }

  /** Tears everything down and asserts nothing was left behind. */
  async stop(): Promise<void> {
    if (process.env.FERRY_TEST_KEEP) {
      // Debugging aid: keep the events, logs and consoles of the run.
      const keep = `${process.env.FERRY_TEST_KEEP}/${path.basename(this.dir)}`;
      fs.mkdirSync(keep, { recursive: true });
      await this.api
        ?.call(eventRoutes.list, {})
        .then((e) => fs.writeFileSync(`${keep}/events.json`, JSON.stringify(e, null, 1)))
        .catch(() => {});
      if (fs.existsSync(this.layout.logs)) fs.cpSync(this.layout.logs, `${keep}/logs`, { recursive: true });
      if (fs.existsSync(this.layout.consoles)) fs.cpSync(this.layout.consoles, `${keep}/consoles`, { recursive: true });
      // A lab's hosts each keep their daemons' logs in their own state directory.
      const hosts = path.join(this.dir, 'hosts');
      for (const h of fs.existsSync(hosts) ? fs.readdirSync(hosts) : []) {
        const logs = this.hostLayout(h).logs;
        if (fs.existsSync(logs)) fs.cpSync(logs, `${keep}/hosts/${h}`, { recursive: true });
      }
    }
    const clusterId = readConfig(this.layout)?.id;
    const lab = this.labbed ?? readLab(this.dir);
    await this.agentFetch?.close();
    try {
      if (lab) {
        const r = await this.ferry(['lab', 'down']);
        assert.equal(r.code, 0, `lab down failed: ${r.stderr}`);
        assert.deepEqual(
          fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns').filter((n) => n.startsWith(`fl-${lab.id}-`)) : [],
          [],
          'namespaces left behind',
        );
        assert.deepEqual(
          fs.readdirSync('/sys/class/net').filter((l) => l.startsWith(`fl${lab.id}`)),
          [],
          'lab links left behind',
        );
      } else await down(this.layout);
      const leftovers = processesMentioning(this.dir);
      assert.deepEqual(leftovers, [], 'processes left behind');
      assert.deepEqual(socketsUnder(this.dir), [], 'sockets left behind');
      // Tap nodes' bridges and taps are named fy<hash of the cluster id>…
      const prefix = clusterId ? `fy${createHash('sha1').update(clusterId).digest('hex').slice(0, 4)}` : undefined;
      assert.deepEqual(prefix ? fs.readdirSync('/sys/class/net').filter((l) => l.startsWith(prefix)) : [], [], 'network interfaces left behind');
    } finally {
      for (const p of processesMentioning(this.dir)) {
        try {
          process.kill(Number(p.split(':')[0]), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      if (this.ownDir) fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/**
 * Where a browser test puts its screenshots: docs/screenshots/ only when asked (FERRY_SCREENSHOTS=docs, to
 * refresh the README's pictures), else the test's own state directory, so a test run leaves the work tree as it was.
 */
export function screenshotDir(stateDir: string): string {
  return process.env.FERRY_SCREENSHOTS === 'docs' ? path.join(projectRoot(), 'docs', 'screenshots') : stateDir;
}

/**
 * The lab: a cluster of hosts made of network namespaces on this machine,
 * wired like a small data centre (root only).
 *
 *   root namespace: bridge fl<id>lan (the LAN switch, 10.X.1.1/24, the root
 *                   CLI's way in) and bridge fl<id>mig (the migration switch)
 *   host-i:         eth0 on the LAN as the port of the host's bridge vmbr0,
 *                   which holds 10.X.1.(10+i) (the usual Proxmox layout: VM
 *                   taps join vmbr0, so VMs are on the LAN), eth1
 *                   10.X.2.(10+i) on the migration network; each a veth into
 *                   its root bridge, both ends shaped by htb to --link-mbit
 *   client:         eth0 10.X.1.200 on the LAN and an address in the VMs'
 *                   subnet (10.99.255.254/16): a real Linux client of the VMs
 *   etcd:           one member on host-1, or three on host-1..3, listening on
 *                   their LAN addresses
 *
 * Everything is named after the lab's id (fl<id>…) and recorded in
 * STATE/lab/lab.json before it is made, so `down` removes exactly what `up`
 * made, also after an `up` that failed halfway.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { writeFileAtomic } from '../system/json-file.js';
import path from 'node:path';
import { promisify } from 'node:util';
import { systemClock } from '../domain/clock.js';
import { ErrorCode, FerryError, errors } from '../domain/errors.js';
import { EtcdMember } from '../system/etcd.js';
import { pidAlive } from '../system/process.js';

const run = promisify(execFile);

export interface LabOptions {
  hosts: number;
  /** Rate of every host link in Mbit/s (absent: unshaped). */
  linkMbit?: number;
  /** etcd members: 1 (on host-1) or 3 (host-1..3). */
  etcd?: 1 | 3;
}

export interface LabHost {
  name: string;
  netns: string;
  /** Address on the LAN (eth0) and on the migration network (eth1). */
  lan: string;
  migration: string;
  /** The veths' ends in the root namespace, on the LAN and migration bridges. */
  lanPort: string;
  migrationPort: string;
}

export interface LabEtcd {
  name: string;
  host: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  logFile: string;
  pid?: number;
}

export interface Lab {
  id: string;
  dir: string;
  /** 10.X: the LAN is 10.X.1.0/24, the migration network 10.X.2.0/24. */
  net: string;
  bridges: { lan: string; migration: string };
  /** The root namespace's address on the LAN. */
  gateway: string;
  hosts: LabHost[];
  client: LabHost;
  linkMbit?: number;
  etcd: LabEtcd[];
  /** Whether `lab up` made a cluster in the state directory (its daemons run in the hosts). */
  cluster?: boolean;
  createdAtMs: number;
}

export const LAB_MAX_HOSTS = 16;

/** The client's address in the VMs' subnet (the cluster's vmSubnet, 10.99.0.0/16): VMs answer it on the LAN. */
export const LAB_CLIENT_VM_ADDRESS = '10.99.255.254/16';

function labFile(stateDir: string): string {
  return path.join(stateDir, 'lab', 'lab.json');
}

export function readLab(stateDir: string): Lab | undefined {
  try {
    return JSON.parse(fs.readFileSync(labFile(stateDir), 'utf8')) as Lab;
  } catch {
    return undefined;
  }
}

export function saveLab(lab: Lab): void {
  fs.mkdirSync(lab.dir, { recursive: true, mode: 0o700 });
  const f = path.join(lab.dir, 'lab.json');
  writeFileAtomic(f, JSON.stringify(lab, null, 2) + '\n', 0o600);
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw errors.invalidState('the lab needs root (it makes network namespaces, bridges and links)');
}

/** Runs a command; a failure is one line naming it and what it said. */
async function sh(cmd: string, args: string[]): Promise<string> {
  try {
    return (await run(cmd, args)).stdout;
  } catch (e) {
    const msg = ((e as { stderr?: string }).stderr ?? String(e)).trim().split('\n')[0];
    throw new FerryError(ErrorCode.Internal, `${cmd} ${args.join(' ')}: ${msg}`);
  }
}

const linkExists = (name: string) => fs.existsSync(`/sys/class/net/${name}`);
const netnsExists = (name: string) => fs.existsSync(`/run/netns/${name}`);

/** Where labs claim their 10.X blocks: labs brought up at the same time (by hand, or by tests side by side) never pick the same one. */
const BLOCK_CLAIMS = '/run/ferry-lab-blocks';

/**
 * Whether a claim's lab is gone: its state directory holds no lab, or one on another block (a lab that crashed
 * before `lab down`). A claim younger than a minute is never stale: its lab may be about to save its plan.
 */
function claimStale(file: string, net: string): boolean {
  try {
    if (systemClock.nowMs() - fs.statSync(file).mtimeMs < 60_000) return false;
    const dir = fs.readFileSync(file, 'utf8').trim();
    return readLab(dir)?.net !== net;
  } catch {
    return true;
  }
}

/**
 * A 10.X block no address or route of the root namespace uses, claimed for
 * `stateDir` by a file made exclusively (released by labDown); a claim whose
 * lab is gone is taken over.
 */
async function freeBlock(stateDir: string): Promise<string> {
  const used = (await sh('ip', ['-4', 'route', 'show', 'table', 'all'])) + (await sh('ip', ['-4', 'addr', 'show']));
  fs.mkdirSync(BLOCK_CLAIMS, { recursive: true, mode: 0o700 });
  for (let tries = 0; tries < 200; tries++) {
    const x = 100 + Math.floor(Math.random() * 150);
    if (new RegExp(`\\b10\\.${x}\\.`).test(used)) continue;
    const file = path.join(BLOCK_CLAIMS, `10.${x}`);
    try {
      fs.writeFileSync(file, path.resolve(stateDir) + '\n', { flag: 'wx', mode: 0o600 });
      return `10.${x}`;
    } catch {
      // Claimed: by a lab that is up (try another), or by one that is gone (take it over, then check it is ours).
      if (!claimStale(file, `10.${x}`)) continue;
      fs.writeFileSync(file + `.${process.pid}`, path.resolve(stateDir) + '\n', { mode: 0o600 });
      fs.renameSync(file + `.${process.pid}`, file);
      if (fs.readFileSync(file, 'utf8').trim() === path.resolve(stateDir)) return `10.${x}`;
    }
  }
  throw errors.invalidState('no free 10.X.0.0/16 block for the lab');
}

/** Lets the lab's block go (only if the claim is still this lab's). */
function releaseBlock(lab: Lab): void {
  const file = path.join(BLOCK_CLAIMS, lab.net);
  try {
    if (fs.readFileSync(file, 'utf8').trim() === path.resolve(path.dirname(lab.dir))) fs.rmSync(file, { force: true });
  } catch {
    /* no claim (a lab made before claims) */
  }
}

/** Plans the lab's names and addresses (nothing is made yet). */
function plan(stateDir: string, o: LabOptions, net: string): Lab {
  const id = randomBytes(2).toString('hex');
  const host = (name: string, i: number, octet: number): LabHost => ({
    name,
    netns: `fl-${id}-${name}`,
    lan: `${net}.1.${octet}`,
    migration: `${net}.2.${octet}`,
    lanPort: `fl${id}${i === 0 ? 'c' : `h${i}`}l`,
    migrationPort: `fl${id}${i === 0 ? 'c' : `h${i}`}m`,
  });
  const hosts = Array.from({ length: o.hosts }, (_, k) => host(`host-${k + 1}`, k + 1, 11 + k));
  const dir = path.join(stateDir, 'lab');
  const etcd = hosts.slice(0, o.etcd ?? 1).map((h, k) => ({
    name: `etcd-${k + 1}`,
    host: h.name,
    clientUrl: `http://${h.lan}:2379`,
    peerUrl: `http://${h.lan}:2380`,
    dataDir: path.join(dir, 'etcd', `etcd-${k + 1}`),
    logFile: path.join(dir, 'logs', `etcd-${k + 1}.log`),
  }));
  return {
    id,
    dir,
    net,
    bridges: { lan: `fl${id}lan`, migration: `fl${id}mig` },
    gateway: `${net}.1.1`,
    hosts,
    client: host('client', 0, 200),
    ...(o.linkMbit ? { linkMbit: o.linkMbit } : {}),
    etcd,
    createdAtMs: Date.now(),
  };
}

async function shape(netns: string | undefined, dev: string, mbit: number): Promise<void> {
  const pre = netns ? ['netns', 'exec', netns, 'tc'] : [];
  const tc = (args: string[]) => (netns ? sh('ip', [...pre, ...args]) : sh('tc', args));
  await tc(['qdisc', 'replace', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10', 'r2q', '1000']);
  await tc(['class', 'replace', 'dev', dev, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', `${mbit}mbit`, 'ceil', `${mbit}mbit`]);
}

/** Puts one namespace on the bridges: eth0 on the LAN, eth1 (hosts only) on the migration network. */
async function wire(lab: Lab, h: LabHost, withMigration: boolean): Promise<void> {
  await sh('ip', ['netns', 'add', h.netns]);
  await sh('ip', ['-n', h.netns, 'link', 'set', 'lo', 'up']);
  const isHost = withMigration;
  const legs: [string, string, string, string][] = [['eth0', h.lanPort, lab.bridges.lan, h.lan]];
  if (isHost) legs.push(['eth1', h.migrationPort, lab.bridges.migration, h.migration]);
  if (isHost) {
    await sh('ip', ['-n', h.netns, 'link', 'add', 'vmbr0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await sh('ip', ['-n', h.netns, 'link', 'set', 'vmbr0', 'up']);
  }
  for (const [inside, port, bridge, address] of legs) {
    await sh('ip', ['link', 'add', port, 'type', 'veth', 'peer', 'name', inside, 'netns', h.netns]);
    await sh('ip', ['link', 'set', port, 'master', bridge, 'up']);
    // A host's LAN address lives on vmbr0, eth0 being its port.
    const holder = isHost && inside === 'eth0' ? 'vmbr0' : inside;
    if (holder !== inside) await sh('ip', ['-n', h.netns, 'link', 'set', inside, 'master', holder]);
    await sh('ip', ['-n', h.netns, 'addr', 'add', `${address}/24`, 'dev', holder]);
    await sh('ip', ['-n', h.netns, 'link', 'set', inside, 'up']);
    if (lab.linkMbit) {
      await shape(undefined, port, lab.linkMbit);
      await shape(h.netns, inside, lab.linkMbit);
    }
  }
  if (!isHost) await sh('ip', ['-n', h.netns, 'addr', 'add', LAB_CLIENT_VM_ADDRESS, 'dev', 'eth0']);
  await sh('ip', ['-n', h.netns, 'route', 'add', 'default', 'via', lab.gateway]);
}

/** Builds the lab; on any failure takes down what was made and throws one line. */
export async function labUp(stateDir: string, o: LabOptions, progress: (line: string) => void = () => {}): Promise<Lab> {
  requireRoot();
  if (!Number.isInteger(o.hosts) || o.hosts < 1 || o.hosts > LAB_MAX_HOSTS)
    throw errors.invalid('hosts', `--hosts must be from 1 to ${LAB_MAX_HOSTS}, got ${o.hosts}`);
  const members = o.etcd ?? 1;
  if (members !== 1 && members !== 3) throw errors.invalid('etcd', `--etcd must be 1 or 3, got ${String(o.etcd)}`);
  if (members > o.hosts) throw errors.invalid('etcd', `--etcd ${members} needs at least ${members} hosts, got ${o.hosts}`);
  if (o.linkMbit !== undefined && (!Number.isInteger(o.linkMbit) || o.linkMbit < 1 || o.linkMbit > 100_000)) {
    throw errors.invalid('link-mbit', `--link-mbit must be from 1 to 100000, got ${o.linkMbit}`);
  }
  const existing = readLab(stateDir);
  if (existing) throw errors.conflict(`a lab is up already in ${stateDir} (${existing.hosts.length} hosts, id ${existing.id}); 'ferry lab down' first`);

  const lab = plan(stateDir, { ...o, etcd: members }, await freeBlock(stateDir));
  saveLab(lab);
  try {
    progress('making the LAN and migration bridges');
    for (const b of [lab.bridges.lan, lab.bridges.migration]) {
      await sh('ip', ['link', 'add', 'name', b, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
      await sh('ip', ['link', 'set', b, 'up']);
    }
    await sh('ip', ['addr', 'add', `${lab.gateway}/24`, 'dev', lab.bridges.lan]);
    for (const h of lab.hosts) {
      progress(`making ${h.name}`);
      await wire(lab, h, true);
    }
    progress('making the client');
    await wire(lab, lab.client, false);
    progress(`starting etcd (${lab.etcd.length} member${lab.etcd.length > 1 ? 's' : ''})`);
    const initialCluster = Object.fromEntries(lab.etcd.map((m) => [m.name, m.peerUrl]));
    const started = lab.etcd.map((m) => {
      const member = new EtcdMember({ ...m, initialCluster, netns: lab.hosts.find((h) => h.name === m.host)!.netns, detached: true });
      return { m, member, ready: member.start(30_000) };
    });
    // Members of a new cluster wait for each other: start all, then wait for all.
    for (const s of started) {
      s.m.pid = s.member.pid;
      saveLab(lab);
    }
    await Promise.all(started.map((s) => s.ready));
    saveLab(lab);
    return lab;
  } catch (e) {
    await labDown(stateDir).catch(() => {});
    throw e;
  }
}

/** Every process in a namespace (ip netns pids). */
async function pidsIn(netns: string): Promise<number[]> {
  if (!netnsExists(netns)) return [];
  const out = await sh('ip', ['netns', 'pids', netns]).catch(() => '');
  return out
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0);
}

function signalAll(pids: number[], signal: NodeJS.Signals): number[] {
  return pids.filter((p) => {
    try {
      process.kill(p, signal);
      return true;
    } catch {
      return false;
    }
  });
}

/** SIGKILL to each process, then waits until every one is gone; the pids it reached. */
async function powerOff(pids: number[]): Promise<number[]> {
  const killed = signalAll(pids, 'SIGKILL');
  while (killed.some(pidAlive)) await new Promise((r) => setTimeout(r, 20));
  return killed;
}

/** Takes the lab down: every process in its namespaces, the namespaces, links, bridges and files. */
export async function labDown(stateDir: string): Promise<{ removed: boolean; lab?: Lab }> {
  requireRoot();
  const lab = readLab(stateDir);
  if (!lab) return { removed: false };
  const spaces = [...lab.hosts, lab.client];
  const pids = [...lab.etcd.flatMap((m) => (m.pid ? [m.pid] : [])), ...(await Promise.all(spaces.map((h) => pidsIn(h.netns)))).flat()];
  // Powered off: the lab's state goes with it, so nothing needs to stop in order (an etcd member left without
  // its peers spends seconds on SIGTERM trying to hand its leadership on). SIGKILL reaches a frozen agent too.
  await powerOff([...new Set(pids)]);
  for (const h of spaces) if (netnsExists(h.netns)) await sh('ip', ['netns', 'del', h.netns]);
  // A veth goes with its namespace; one whose peer never moved in (up failed halfway) is removed here.
  for (const name of [...spaces.flatMap((h) => [h.lanPort, h.migrationPort]), lab.bridges.lan, lab.bridges.migration]) {
    // (The kernel removes a veth whose namespace went away a moment later: gone by then is fine.)
    if (linkExists(name))
      await sh('ip', ['link', 'del', name]).catch((e: unknown) => {
        if (linkExists(name)) throw e;
      });
  }
  fs.rmSync(lab.dir, { recursive: true, force: true });
  releaseBlock(lab);
  return { removed: true, lab };
}

/** A lab host by name (not the client): faults are for hosts. */
function labHost(lab: Lab, name: string): LabHost {
  const h = lab.hosts.find((x) => x.name === name);
  if (!h) throw errors.invalid('host', `the lab has no host '${name}' (it has ${lab.hosts.map((x) => x.name).join(', ')})`);
  return h;
}

/** The pids of Ferry agents running in a host's namespace. */
async function agentPids(h: LabHost): Promise<number[]> {
  return (await pidsIn(h.netns)).filter((p) => {
    try {
      const args = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      return args.some((a) => a.endsWith(path.join('daemon', 'main.js'))) && args.includes('agent');
    } catch {
      return false;
    }
  });
}

/** Power loss: SIGKILL every process in the host's namespace (agent, QEMUs, a controller or etcd member there). */
export async function labCrash(lab: Lab, name: string): Promise<number[]> {
  requireRoot();
  const h = labHost(lab, name);
  return powerOff(await pidsIn(h.netns));
}

/**
 * Starts the named etcd members again, on their data, where they are not
 * running (all at once: members of a cluster that lost quorum are healthy
 * only once enough of them run). Returns the names it started.
 */
export async function labStartEtcd(lab: Lab, names: string[]): Promise<string[]> {
  requireRoot();
  const unknown = names.filter((n) => !lab.etcd.some((m) => m.name === n));
  if (unknown.length) throw errors.invalid('etcd', `the lab has no etcd member '${unknown[0]}' (it has ${lab.etcd.map((m) => m.name).join(', ')})`);
  const initialCluster = Object.fromEntries(lab.etcd.map((m) => [m.name, m.peerUrl]));
  const down = lab.etcd.filter((m) => names.includes(m.name) && !(m.pid && pidAlive(m.pid)));
  await Promise.all(
    down.map(async (m) => {
      const member = new EtcdMember({ ...m, initialCluster, netns: labHost(lab, m.host).netns, detached: true });
      const ready = member.start(30_000);
      m.pid = member.pid;
      await ready;
    }),
  );
  // Read again before saving: hosts booted together each save their own members' pids.
  const now = readLab(path.dirname(lab.dir)) ?? lab;
  for (const m of down) now.etcd.find((x) => x.name === m.name)!.pid = m.pid;
  saveLab(now);
  return down.map((m) => m.name);
}

/** The first half of powering a crashed host on: it must be down (nothing runs in it); its etcd members start. */
export async function labPowerOn(lab: Lab, name: string): Promise<string[]> {
  requireRoot();
  const h = labHost(lab, name);
  const running = await pidsIn(h.netns);
  if (running.length) throw errors.invalidState(`${name} is not down: ${running.length} process(es) run in it ('ferry lab crash ${name}' first)`);
  return labStartEtcd(
    lab,
    lab.etcd.filter((m) => m.host === name).map((m) => m.name),
  );
}

/** A long pause: SIGSTOP the host's agent (its guests keep running); `forMs` later, SIGCONT. */
export async function labFreeze(lab: Lab, name: string, forMs?: number): Promise<number[]> {
  requireRoot();
  const h = labHost(lab, name);
  const pids = await agentPids(h);
  if (!pids.length) throw errors.invalidState(`no Ferry agent runs on ${name}`);
  const frozen = signalAll(pids, 'SIGSTOP');
  if (forMs !== undefined) {
    await new Promise((r) => setTimeout(r, forMs));
    signalAll(frozen, 'SIGCONT');
  }
  return frozen;
}

/** The host's management link (its LAN cable, eth0) down: the switch side of the veth. */
export async function labIsolate(lab: Lab, name: string): Promise<void> {
  requireRoot();
  await sh('ip', ['link', 'set', labHost(lab, name).lanPort, 'down']);
}

/** Undoes isolate and freeze: the management link up, a frozen agent running again. */
export async function labHeal(lab: Lab, name: string): Promise<{ thawed: number[] }> {
  requireRoot();
  const h = labHost(lab, name);
  await sh('ip', ['link', 'set', h.lanPort, 'up']);
  const stopped = (await agentPids(h)).filter((p) => {
    try {
      return /^\d+ \(.*\) T/.test(fs.readFileSync(`/proc/${p}/stat`, 'utf8'));
    } catch {
      return false;
    }
  });
  return { thawed: signalAll(stopped, 'SIGCONT') };
}

/** The namespace of a lab host or the client, or one line naming the hosts there are. */
export function labSpace(lab: Lab, name: string): LabHost {
  const h = name === 'client' ? lab.client : lab.hosts.find((x) => x.name === name);
  if (!h) throw errors.invalid('host', `the lab has no host '${name}' (it has ${lab.hosts.map((x) => x.name).join(', ')} and client)`);
  return h;
}

/** Runs a command inside a lab namespace with this terminal; resolves with its exit code. */
export function labExec(space: LabHost, argv: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', space.netns, ...argv], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + 9 : 1)));
  });
}

/** Runs a command inside a lab namespace and collects what it prints. */
export function labRun(space: LabHost, argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', space.netns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code: code ?? (signal ? 128 + 9 : 1), stdout, stderr }));
  });
}

/** The port of the lab's LAN switch that its forwarding table has `mac` behind. */
export function labLanPortOf(lab: Lab, mac: string): string | undefined {
  const fdb = JSON.parse(execFileSync('bridge', ['-j', 'fdb', 'show', 'br', lab.bridges.lan], { encoding: 'utf8' })) as { mac: string; ifname: string }[];
  return fdb.find((e) => e.mac === mac)?.ifname;
}

/** Each etcd member's answer to a status call: whether it answers and whether it leads. */
export async function labEtcdStatus(lab: Lab): Promise<{ name: string; answers: boolean; leads: boolean }[]> {
  return Promise.all(
    lab.etcd.map(async (m) => {
      const res = await fetch(`${m.clientUrl}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(1000) }).catch(() => undefined);
      const s = res?.ok ? ((await res.json().catch(() => ({}))) as { header?: { member_id?: string }; leader?: string }) : undefined;
      return { name: m.name, answers: !!s?.header, leads: !!s?.header?.member_id && s.header.member_id === s.leader };
    }),
  );
}

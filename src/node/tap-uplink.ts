/**
 * A node whose NIC backend is `tap` gives each VM a tap with the virtio-net
 * header, so the guest's checksum and segmentation offloads really work (R10).
 * The taps of one virtual switch hang on a kernel bridge per node, and a relay
 * (a device-less QEMU joining a tap on that bridge and a stream to the switch
 * socket through a hub) carries the bridge's frames to Ferry's switch, so the
 * VM is on the same layer-2 network as everywhere else.
 *
 *   guest ─ virtio-net ─ tap fy…v… ─┐
 *                                   bridge fy…b… ─ tap fy…r… ─ relay QEMU ─ switch socket
 *   other VMs' taps ────────────────┘
 *
 * VM taps are created by their QEMU and vanish with it. Bridges and relays
 * are recorded under run/nodes/<node>/ so `ferry down` removes them.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, FerryError } from '../domain/errors.js';
import { pidAlive } from '../qemu/qemu-vm.js';

const run = promisify(execFile);

function h4(s: string): string {
  return createHash('sha1').update(s).digest('hex').slice(0, 4);
}

async function ip(...args: string[]): Promise<void> {
  try {
    await run('ip', args);
  } catch (e) {
    const msg = (e as { stderr?: string }).stderr?.trim() || String(e);
    throw new FerryError(ErrorCode.Internal, `ip ${args.join(' ')}: ${msg}`);
  }
}

function linkExists(name: string): boolean {
  return fs.existsSync(`/sys/class/net/${name}`);
}

async function waitLink(name: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!linkExists(name)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/** Where a node keeps what `ferry down` must remove. */
export function uplinkDirs(nodeRunDir: string): { links: string; relays: string } {
  return { links: path.join(nodeRunDir, 'links'), relays: path.join(nodeRunDir, 'relays') };
}

export class TapUplinks {
  private readonly prefix: string;
  private readonly dirs: { links: string; relays: string };

  constructor(
    private readonly node: string,
    clusterId: string,
    runDir: string,
  ) {
    this.prefix = `fy${h4(clusterId)}`;
    this.dirs = uplinkDirs(runDir);
  }

  vmTap(vm: string): string {
    return `${this.prefix}v${h4(`${this.node}/${vm}`)}`;
  }

  private bridge(sw: string): string {
    return `${this.prefix}b${h4(`${this.node}/${sw}`)}`;
  }

  private relayTap(sw: string): string {
    return `${this.prefix}r${h4(`${this.node}/${sw}`)}`;
  }

  /** The bridge of switch `sw` on this node, with its relay to the switch socket running. */
  async ensure(sw: string, switchSocket: string): Promise<string> {
    fs.mkdirSync(this.dirs.links, { recursive: true });
    fs.mkdirSync(this.dirs.relays, { recursive: true });
    const br = this.bridge(sw);
    if (!linkExists(br)) {
      await ip('link', 'add', br, 'type', 'bridge');
      fs.writeFileSync(path.join(this.dirs.links, br), '');
      // No host addresses on the VM network: the bridge only forwards.
      fs.writeFileSync(`/proc/sys/net/ipv6/conf/${br}/disable_ipv6`, '1');
      await ip('link', 'set', br, 'up');
    }
    const relayFile = path.join(this.dirs.relays, `${sw}.json`);
    const tap = this.relayTap(sw);
    let relayPid: number | undefined;
    try {
      relayPid = (JSON.parse(fs.readFileSync(relayFile, 'utf8')) as { pid: number }).pid;
    } catch {
      /* none yet */
    }
    if (relayPid === undefined || !pidAlive(relayPid) || !linkExists(tap)) {
      if (relayPid !== undefined && pidAlive(relayPid)) process.kill(relayPid, 'SIGKILL');
      const child = spawn(
        'qemu-system-x86_64',
        [
          '-machine',
          'none',
          '-nodefaults',
          '-no-user-config',
          '-display',
          'none',
          '-name',
          `ferry-relay-${this.node}-${sw}`,
          '-netdev',
          `tap,id=t0,ifname=${tap},script=no,downscript=no`,
          '-netdev',
          `stream,id=s0,server=off,reconnect-ms=1000,addr.type=unix,addr.path=${switchSocket}`,
          '-netdev',
          'hubport,id=h0,hubid=0,netdev=t0',
          '-netdev',
          'hubport,id=h1,hubid=0,netdev=s0',
        ],
        { detached: true, stdio: 'ignore' },
      );
      child.unref();
      if (child.pid === undefined) throw new FerryError(ErrorCode.QemuDied, 'cannot start the tap relay QEMU');
      fs.writeFileSync(relayFile, JSON.stringify({ pid: child.pid, switch: sw, tap }));
      if (!(await waitLink(tap, 10_000))) {
        process.kill(child.pid, 'SIGKILL');
        throw new FerryError(ErrorCode.QemuDied, `the tap relay of switch '${sw}' on ${this.node} did not create ${tap}`);
      }
      fs.writeFileSync(`/proc/sys/net/ipv6/conf/${tap}/disable_ipv6`, '1');
      await ip('link', 'set', tap, 'master', br);
      await ip('link', 'set', tap, 'up');
    }
    return br;
  }

  /**
   * The Linux bridge a bridge-backed NIC joins for a switch bound to `iface`
   * on this host: `iface` itself if it is a bridge (vmbr0 over eth0, the
   * usual host layout), or a bridge Ferry makes with `iface` as its uplink if
   * that interface carries no addresses. An interface with addresses is
   * refused: making it a bridge port would cut the host off.
   */
  async hostBridge(iface: string): Promise<string> {
    if (!linkExists(iface)) throw new FerryError(ErrorCode.InvalidState, `the switch's interface ${iface} does not exist on ${this.node}`);
    if (fs.existsSync(`/sys/class/net/${iface}/bridge`)) return iface;
    const addrs = await run('ip', ['-o', 'addr', 'show', 'dev', iface]).then((r) =>
      r.stdout.split('\n').filter((l) => / inet6? /.test(l) && !/ fe80:/.test(l)),
    );
    if (addrs.length) {
      throw new FerryError(
        ErrorCode.InvalidState,
        `${iface} on ${this.node} carries addresses; bind the switch to a bridge over it (e.g. vmbr0) or to an interface without addresses`,
      );
    }
    fs.mkdirSync(this.dirs.links, { recursive: true });
    const br = `${this.prefix}u${h4(`${this.node}/${iface}`)}`;
    if (!linkExists(br)) {
      await ip('link', 'add', br, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
      fs.writeFileSync(path.join(this.dirs.links, br), '');
      fs.writeFileSync(`/proc/sys/net/ipv6/conf/${br}/disable_ipv6`, '1');
      await ip('link', 'set', iface, 'master', br);
      await ip('link', 'set', iface, 'up');
      await ip('link', 'set', br, 'up');
    }
    return br;
  }

  /** Whether `bridge` has learnt `mac` on port `port` (the VM's tap): the frames the guest sent went through it. */
  async learnt(bridge: string, mac: string, port: string): Promise<boolean> {
    const out = await run('bridge', ['-j', 'fdb', 'show', 'br', bridge]).then(
      (r) => r.stdout,
      () => '[]',
    );
    const entries = JSON.parse(out || '[]') as { mac: string; ifname?: string; flags?: string[]; state?: string }[];
    return entries.some((e) => e.mac.toLowerCase() === mac.toLowerCase() && e.ifname === port && e.state !== 'permanent');
  }

  /** Puts a VM's tap (created by its QEMU) on the bridge. */
  async attach(vmTap: string, bridge: string): Promise<void> {
    if (!(await waitLink(vmTap, 10_000))) throw new FerryError(ErrorCode.QemuDied, `QEMU did not create its tap ${vmTap}`);
    fs.writeFileSync(`/proc/sys/net/ipv6/conf/${vmTap}/disable_ipv6`, '1');
    await ip('link', 'set', vmTap, 'master', bridge);
    await ip('link', 'set', vmTap, 'up');
  }
}

/** For `ferry down`: kills a node's relays and deletes its bridges. Returns the relay pids killed. */
export function removeUplinks(nodeRunDir: string): { killed: number[]; links: string[] } {
  const dirs = uplinkDirs(nodeRunDir);
  const killed: number[] = [];
  for (const f of fs.existsSync(dirs.relays) ? fs.readdirSync(dirs.relays) : []) {
    try {
      const { pid } = JSON.parse(fs.readFileSync(path.join(dirs.relays, f), 'utf8')) as { pid: number };
      if (pidAlive(pid)) {
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      }
    } catch {
      /* gone */
    }
  }
  const links = fs.existsSync(dirs.links) ? fs.readdirSync(dirs.links) : [];
  return { killed, links };
}

export async function deleteLinks(links: string[]): Promise<void> {
  for (const l of links) {
    if (linkExists(l)) await run('ip', ['link', 'del', l]).catch(() => {});
  }
}

/**
 * Reachability and throughput on the cluster networks, as the node agent
 * measures them: a TCP knock, a beacon that reads and discards, and a
 * stream that fills it as fast as the path allows.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import type { HostLink } from '../domain/records.js';
import { errors } from '../domain/errors.js';

const runFile = promisify(execFile);

/** Opens a TCP connection (optionally from a given local address) and closes it: is the path there? */
export function probeTcp(
  host: string,
  port: number,
  opts: { localAddress?: string; timeoutMs?: number } = {},
): Promise<{ ok: boolean; ms: number; error?: string }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    const done = (ok: boolean, error?: string) => {
      socket.destroy();
      resolve(error ? { ok, ms: Date.now() - started, error } : { ok, ms: Date.now() - started });
    };
    socket.setTimeout(opts.timeoutMs ?? 500, () => done(false, `no answer within ${opts.timeoutMs ?? 500} ms`));
    socket.once('connect', () => done(true));
    socket.once('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
  });
}

/** Accepts connections on one address, reads and discards: what `probeTcp` knocks on and `measureThroughput` fills. */
export async function listenBeacon(address: string): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((s) => {
    let received = 0;
    s.on('data', (d: Buffer) => (received += d.length));
    s.on('error', () => s.destroy());
    // The sender half-closes when done; it learns how much really arrived.
    s.on('end', () => s.end(String(received)));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, address, () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/**
 * Sends as fast as the path allows for `ms` to a beacon (which reads and
 * discards) and reports the rate the kernel accepted the bytes at: the
 * link's throughput as a migration stream would see it.
 */
export function measureThroughput(
  host: string,
  port: number,
  opts: { localAddress?: string; ms: number },
): Promise<{ bytesPerSec: number; bytes: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    const chunk = Buffer.alloc(256 * 1024, 0xa5);
    let sent = 0;
    let started = 0;
    let stop = false;
    socket.setNoDelay(true);
    socket.once('error', (e) => reject(errors.invalid('throughput', `cannot reach ${host}:${port}: ${e.message}`)));
    socket.once('connect', () => {
      started = Date.now();
      const timer = setTimeout(() => (stop = true), opts.ms);
      const pump = () => {
        while (!stop) {
          sent += chunk.length;
          if (!socket.write(chunk)) return void socket.once('drain', pump);
        }
        clearTimeout(timer);
        // The clock stops when the beacon has read everything (queues on the way included) and says so.
        let reply = '';
        socket.on('data', (d: Buffer) => (reply += d.toString()));
        socket.once('close', () => {
          const ms = Math.max(1, Date.now() - started);
          const bytes = Number(reply) || sent;
          resolve({ bytesPerSec: Math.round((bytes / ms) * 1000), bytes, ms });
        });
        socket.end();
      };
      pump();
    });
  });
}

/**
 * The interface holding each of `addresses` on this host (or, for a
 * loopback address not assigned to any interface, `lo`), with its state,
 * speed and MTU from the kernel: one `ip -j addr` for all of them, and
 * /sys/class/net for the speeds.
 */
export async function linksOf(addresses: string[]): Promise<Map<string, HostLink>> {
  const { stdout } = await runFile('ip', ['-j', '-4', 'addr', 'show']).catch(() => ({ stdout: '[]' }));
  const ifaces = JSON.parse(stdout || '[]') as { ifname: string; mtu: number; operstate: string; addr_info?: { local: string }[] }[];
  const out = new Map<string, HostLink>();
  for (const address of addresses) {
    const holder =
      ifaces.find((i) => i.addr_info?.some((a) => a.local === address)) ?? (address.startsWith('127.') ? ifaces.find((i) => i.ifname === 'lo') : undefined);
    if (!holder) continue;
    const speed = Number(await fs.promises.readFile(`/sys/class/net/${holder.ifname}/speed`, 'utf8').catch(() => ''));
    out.set(address, {
      iface: holder.ifname,
      operState: holder.operstate.toLowerCase(),
      mtu: holder.mtu,
      ...(Number.isFinite(speed) && speed > 0 ? { speedMbit: speed } : {}),
    });
  }
  return out;
}

/** Every IPv4 address on this host's interfaces, with its prefix length (`ip -j -4 addr`). */
export async function hostAddresses(): Promise<{ iface: string; address: string; prefixLength: number }[]> {
  const { stdout } = await runFile('ip', ['-j', '-4', 'addr', 'show']).catch(() => ({ stdout: '[]' }));
  const ifaces = JSON.parse(stdout || '[]') as { ifname: string; addr_info?: { local: string; prefixlen: number }[] }[];
  return ifaces.flatMap((i) => (i.addr_info ?? []).map((a) => ({ iface: i.ifname, address: a.local, prefixLength: a.prefixlen })));
}

/** The interface of the default route, if there is one. */
export async function defaultRouteInterface(): Promise<string | undefined> {
  const { stdout } = await runFile('ip', ['-j', '-4', 'route', 'show', 'default']).catch(() => ({ stdout: '[]' }));
  return (JSON.parse(stdout || '[]') as { dev?: string }[])[0]?.dev;
}

/**
 * The switch daemon: the LearningSwitch on real sockets. Each node gets a
 * unix socket (`run/switch/<node>.sock`); every connection to it is a port, so
 * a VM's NIC (QEMU `-netdev stream`) plugs in on its host's socket. Frames on
 * the wire are a 4-byte big-endian length followed by the Ethernet frame.
 * A loopback HTTP API exposes the MAC table, MAC moves and the probe.
 */
import fs from 'node:fs';
import net from 'node:net';
import { systemClock } from '../clock.js';
import { errors } from '../errors.js';
import { Router, serve, type Listening } from '../api/http.js';
import { LearningSwitch } from './switch.js';
import { PROBE_MAC, Probe } from './probe.js';

export const PROBE_IP = '10.99.255.254';
const PROBE_PORT = 'probe';

export interface SwitchDaemon {
  api: Listening;
  sw: LearningSwitch;
  addNode(node: string): Promise<void>;
  close(): Promise<void>;
}

export async function startSwitch(opts: { socketFor: (node: string) => string; nodes: string[]; token?: string; ageingMs?: number }): Promise<SwitchDaemon> {
  const conns = new Map<string, net.Socket>();
  const servers = new Map<string, net.Server>();
  let nextPort = 1;
  const sw = new LearningSwitch(systemClock, (port, frame) => deliver(port, frame), opts.ageingMs);
  const probe = new Probe(PROBE_IP, (frame) => sw.receive(PROBE_PORT, frame));
  sw.addPort({ id: PROBE_PORT, node: 'switch' });

  function deliver(port: string, frame: Buffer): void {
    if (port === PROBE_PORT) return probe.receive(frame);
    const sock = conns.get(port);
    if (!sock || sock.destroyed) return;
    const len = Buffer.alloc(4);
    len.writeUInt32BE(frame.length);
    sock.write(Buffer.concat([len, frame]));
  }

  function attach(node: string, sock: net.Socket): void {
    const id = `${node}/${nextPort++}`;
    conns.set(id, sock);
    sw.addPort({ id, node });
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (buf.length < 4 + len) break;
        sw.receive(id, buf.subarray(4, 4 + len));
        buf = buf.subarray(4 + len);
      }
    });
    const drop = () => {
      conns.delete(id);
      sw.removePort(id);
    };
    sock.on('close', drop);
    sock.on('error', () => sock.destroy());
  }

  async function addNode(node: string): Promise<void> {
    if (servers.has(node)) return;
    const path = opts.socketFor(node);
    fs.rmSync(path, { force: true });
    const server = net.createServer((sock) => attach(node, sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    fs.chmodSync(path, 0o600);
    servers.set(node, server);
  }

  for (const node of opts.nodes) await addNode(node);
  const ageTimer = setInterval(() => sw.age(), 1000);

  const router = new Router();
  router.guard = (req) => {
    if (opts.token && req.path !== '/v1/health' && req.headers.authorization !== `Bearer ${opts.token}`) throw errors.unauthorized();
  };
  router
    .on('GET', '/v1/health', () => ({ ok: true }))
    .on('GET', '/v1/macs', () => sw.macTable().map((e) => ({ ...e, ageMs: Date.now() - e.lastSeenMs })))
    .on('GET', '/v1/ports', () => sw.portList())
    .on('GET', '/v1/moves', (req) => {
      const mac = req.query.get('mac');
      const since = Number(req.query.get('since') ?? 0);
      return sw.moves.filter((m) => (!mac || m.mac === mac) && m.atMs >= since);
    })
    .on('POST', '/v1/nodes/:node', async (req) => {
      await addNode(req.params.node!);
      return { node: req.params.node };
    })
    .on('POST', '/v1/probes/:id', (req) => {
      const b = req.body as { ip?: string; mac?: string; intervalMs?: number } | undefined;
      if (!b?.ip || !b.mac) throw errors.invalid('probe', 'a probe needs ip and mac');
      probe.start(req.params.id!, b.ip, b.mac, b.intervalMs ?? 1);
      return { id: req.params.id };
    })
    .on('GET', '/v1/probes/:id', (req) => {
      const r = probe.snapshot(req.params.id!);
      if (!r) throw errors.invalid('probe', `no probe '${req.params.id}'`);
      return r;
    })
    .on('DELETE', '/v1/probes/:id', (req) => {
      const r = probe.stop(req.params.id!);
      if (!r) throw errors.invalid('probe', `no probe '${req.params.id}'`);
      return r;
    })
    .on('POST', '/v1/ping', async (req) => {
      const b = req.body as { ip?: string; mac?: string; timeoutMs?: number } | undefined;
      if (!b?.ip || !b.mac) throw errors.invalid('ping', 'ping needs ip and mac');
      const rttMs = await probe.ping(b.ip, b.mac, b.timeoutMs ?? 2000);
      return { ip: b.ip, answered: rttMs !== undefined, rttMs: rttMs ?? null };
    });
  const api = await serve(router);

  return {
    api,
    sw,
    addNode,
    async close() {
      clearInterval(ageTimer);
      probe.stopAll();
      for (const s of conns.values()) s.destroy();
      for (const [node, server] of servers) {
        server.close();
        fs.rmSync(opts.socketFor(node), { force: true });
      }
      await api.close();
    },
  };
}

export { PROBE_MAC };

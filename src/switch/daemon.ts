/**
 * The switch daemon: Ferry's virtual switches on real sockets. Each virtual
 * switch is its own layer-2 domain (a LearningSwitch with its own probe).
 * A switch has one unix socket per node it is bound on
 * (`run/switch/<switch>/<node>.sock`); every connection to it is a port, so a
 * VM's NIC (QEMU `-netdev stream`) plugs in on its host's socket. Frames on
 * the wire are a 4-byte big-endian length followed by the Ethernet frame.
 *
 * The controller owns which switches exist and where they are bound; it
 * pushes that here (`PUT /v1/switches/:name`), idempotently. A loopback HTTP
 * API exposes MAC tables, MAC moves and the probe.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { systemClock } from '../domain/clock.js';
import { errors } from '../domain/errors.js';
import { timingSafeEqual } from 'node:crypto';
import { createApp, errorResponse, limitBody, serve, type Listening } from '../api/http.js';
import { switchDaemonRoutes as r } from './routes.js';
import { DEFAULT_AGEING_MS, LearningSwitch } from './learning-switch.js';
import { PROBE_MAC, Probe } from './probe.js';

export const PROBE_IP = '10.99.255.254';
import { DEFAULT_SWITCH } from '../domain/switches.js';
const PROBE_PORT = 'probe';

import type { SwitchState, SwitchWanted } from '../ports/switch-control.js';

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

interface VirtualSwitch {
  name: string;
  sw: LearningSwitch;
  probe: Probe;
  servers: Map<string, net.Server>;
  conns: Map<string, { node: string; sock: net.Socket }>;
}

export interface SwitchDaemon {
  api: Listening;
  switches: Map<string, VirtualSwitch>;
  close(): Promise<void>;
}

export async function startSwitch(opts: {
  socketFor: (sw: string, node: string) => string;
  nodes: string[];
  token?: string;
  ageingMs?: number;
}): Promise<SwitchDaemon> {
  const switches = new Map<string, VirtualSwitch>();
  let nextPort = 1;

  function create(name: string, ageingMs: number): VirtualSwitch {
    const existing = switches.get(name);
    if (existing) {
      existing.sw.ageingMs = ageingMs;
      return existing;
    }
    const conns = new Map<string, { node: string; sock: net.Socket }>();
    const deliver = (port: string, frame: Buffer) => {
      if (port === PROBE_PORT) return vs.probe.receive(frame);
      const c = conns.get(port);
      if (!c || c.sock.destroyed) return;
      const len = Buffer.alloc(4);
      len.writeUInt32BE(frame.length);
      c.sock.write(Buffer.concat([len, frame]));
    };
    const sw = new LearningSwitch(systemClock, deliver, ageingMs);
    const vs: VirtualSwitch = { name, sw, probe: new Probe(PROBE_IP, (frame) => sw.receive(PROBE_PORT, frame)), servers: new Map(), conns };
    sw.addPort({ id: PROBE_PORT, node: 'switch' });
    switches.set(name, vs);
    return vs;
  }

  function attach(vs: VirtualSwitch, node: string, sock: net.Socket): void {
    const id = `${node}/${nextPort++}`;
    vs.conns.set(id, { node, sock });
    vs.sw.addPort({ id, node });
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (buf.length < 4 + len) break;
        vs.sw.receive(id, buf.subarray(4, 4 + len));
        buf = buf.subarray(4 + len);
      }
    });
    sock.on('close', () => {
      vs.conns.delete(id);
      vs.sw.removePort(id);
    });
    sock.on('error', () => sock.destroy());
  }

  async function bind(vs: VirtualSwitch, node: string): Promise<void> {
    if (vs.servers.has(node)) return;
    const file = opts.socketFor(vs.name, node);
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.rmSync(file, { force: true });
    const server = net.createServer((sock) => attach(vs, node, sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => resolve());
    });
    fs.chmodSync(file, 0o600);
    vs.servers.set(node, server);
  }

  /** Closes a node's socket and disconnects every port that came in on it. */
  function unbind(vs: VirtualSwitch, node: string): void {
    vs.servers.get(node)?.close();
    vs.servers.delete(node);
    fs.rmSync(opts.socketFor(vs.name, node), { force: true });
    for (const c of vs.conns.values()) if (c.node === node) c.sock.destroy();
  }

  function remove(name: string): void {
    const vs = switches.get(name);
    if (!vs) return;
    for (const node of [...vs.servers.keys()]) unbind(vs, node);
    for (const c of vs.conns.values()) c.sock.destroy();
    vs.probe.stopAll();
    fs.rmSync(path.dirname(opts.socketFor(name, 'x')), { recursive: true, force: true });
    switches.delete(name);
  }

  async function apply(name: string, wanted: SwitchWanted): Promise<SwitchState> {
    const vs = create(name, wanted.ageingMs);
    for (const node of [...vs.servers.keys()]) if (!wanted.nodes.includes(node)) unbind(vs, node);
    for (const node of wanted.nodes) await bind(vs, node);
    return stateOf(vs);
  }

  function stateOf(vs: VirtualSwitch): SwitchState {
    return { name: vs.name, nodes: [...vs.servers.keys()].sort(), ports: vs.conns.size, ageingMs: vs.sw.ageingMs };
  }

  function named(name: string | null): VirtualSwitch {
    const vs = switches.get(name ?? DEFAULT_SWITCH);
    if (!vs) throw errors.invalid('switch', `no virtual switch '${name ?? DEFAULT_SWITCH}'`);
    return vs;
  }

  // Until the controller says otherwise, the default switch is bound on every node.
  await apply(DEFAULT_SWITCH, { nodes: opts.nodes, ageingMs: opts.ageingMs ?? DEFAULT_AGEING_MS });
  const ageTimer = setInterval(() => {
    for (const vs of switches.values()) vs.sw.age();
  }, 1000);

  const app = createApp();
  app.use('/v1/*', async (c, next) => {
    const auth = c.req.header('authorization') ?? '';
    if (opts.token && c.req.path !== '/v1/health' && !sameSecret(auth, `Bearer ${opts.token}`)) return errorResponse(c, errors.unauthorized());
    return next();
  });
  app.use('/v1/*', limitBody());
  const noProbe = (id: string) => errors.invalid('probe', `no probe '${id}'`);
  app.openapi(r.health, (c) => c.json({ ok: true }, 200));
  app.openapi(r.list, (c) => c.json([...switches.values()].map(stateOf), 200));
  app.openapi(r.apply, async (c) => c.json(await apply(c.req.valid('param').name, c.req.valid('json')), 200));
  app.openapi(r.remove, (c) => {
    const { name } = c.req.valid('param');
    remove(name);
    return c.json({ deleted: name }, 200);
  });
  app.openapi(r.macs, (c) =>
    c.json(
      [...switches.values()].flatMap((vs) => vs.sw.macTable().map((e) => ({ ...e, switch: vs.name, ageMs: systemClock.nowMs() - e.lastSeenMs }))),
      200,
    ),
  );
  app.openapi(r.moves, (c) => {
    const { mac, since } = c.req.valid('query');
    return c.json(
      [...switches.values()].flatMap((vs) => vs.sw.moves.filter((m) => (!mac || m.mac === mac) && m.atMs >= (since ?? 0))),
      200,
    );
  });
  app.openapi(r.startProbe, (c) => {
    const { id } = c.req.valid('param');
    const b = c.req.valid('json');
    named(b.switch ?? null).probe.start(id, b.ip, b.mac, b.intervalMs ?? 1);
    return c.json({ id }, 200);
  });
  app.openapi(r.probe, (c) => {
    const { id } = c.req.valid('param');
    for (const vs of switches.values()) {
      const res = vs.probe.snapshot(id);
      if (res) return c.json(res, 200);
    }
    throw noProbe(id);
  });
  app.openapi(r.stopProbe, (c) => {
    const { id } = c.req.valid('param');
    for (const vs of switches.values()) {
      const res = vs.probe.stop(id);
      if (res) return c.json(res, 200);
    }
    throw noProbe(id);
  });
  app.openapi(r.ping, async (c) => {
    const b = c.req.valid('json');
    const rttMs = await named(b.switch ?? null).probe.ping(b.ip, b.mac, b.timeoutMs ?? 2000);
    return c.json({ ip: b.ip, answered: rttMs !== undefined, rttMs: rttMs ?? null }, 200);
  });
  const api = await serve(app);

  return {
    api,
    switches,
    async close() {
      clearInterval(ageTimer);
      for (const name of [...switches.keys()]) remove(name);
      await api.close();
    },
  };
}

export { PROBE_MAC };

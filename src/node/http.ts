/**
 * The agent's HTTP API: a thin adapter from the routes (routes.ts) to the
 * agent and its Hypervisor. The bearer token is checked before anything
 * else is read; only /v1/health answers without it.
 */
import type { OpenAPIHono } from '@hono/zod-openapi';
import { stream } from 'hono/streaming';
import { timingSafeEqual } from 'node:crypto';
import { errors } from '../domain/errors.js';
import { shown } from '../api/schemas.js';
import { createApp, errorResponse, limitBody } from '../api/http.js';
import { peerIdentity } from '../api/tls.js';
import { LEADERSHIP_HEADER, agentRoutes as r } from './routes.js';
import type { Agent } from './agent.js';

/** Network tools the agent's API runs on the host. */
export interface NetTools {
  probe(to: string, port: number, opts: { localAddress?: string; timeoutMs: number }): Promise<{ ok: boolean; ms: number; error?: string }>;
  throughput(to: string, port: number, opts: { localAddress?: string; ms: number }): Promise<{ bytesPerSec: number; bytes: number; ms: number }>;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function agentApp(agent: Agent, net: NetTools): OpenAPIHono {
  const app = createApp();
  const hv = agent.hypervisor;
  const o = agent.o;
  app.use('/v1/*', async (c, next) => {
    if (c.req.path === '/v1/health') return next();
    if (o.token === undefined) {
      // A real host: the handshake already required a certificate from the cluster's CA; only a controller's may call.
      const peer = peerIdentity(c);
      if (peer?.role !== 'controller' || peer.clusterId !== o.clusterId)
        return errorResponse(
          c,
          errors.unauthorized(`only the cluster's controllers may call this agent (the certificate names ${peer ? `${peer.role} '${peer.name}'` : 'no one'})`),
        );
      return next();
    }
    const auth = c.req.header('authorization') ?? '';
    if (!sameSecret(auth, `Bearer ${o.token}`)) return errorResponse(c, errors.unauthorized());
    return next();
  });
  // After the credentials: only a controller's claim counts. A deposed leader's late call changes nothing here.
  app.use('/v1/*', async (c, next) => {
    const claimed = c.req.header(LEADERSHIP_HEADER);
    if (claimed === undefined) return next();
    if (!/^[1-9]\d{0,15}$/.test(claimed))
      return errorResponse(c, errors.invalid('header', `${LEADERSHIP_HEADER} must be a whole number, not '${shown(claimed)}'`));
    const refusal = agent.admitLeadership(Number(claimed));
    return refusal ? errorResponse(c, refusal) : next();
  });
  app.use('/v1/*', limitBody());

  app.openapi(r.health, (c) => c.json({ node: o.node, clusterId: o.clusterId, pid: process.pid }, 200));
  app.openapi(r.capabilities, (c) => c.json(agent.currentCapabilities(), 200));
  app.openapi(r.list, async (c) => c.json(await hv.list(), 200));
  app.openapi(r.get, async (c) => c.json(await hv.get(c.req.valid('param').name), 200));
  app.openapi(r.config, (c) => c.json(hv.spec(c.req.valid('param').name), 200));
  app.openapi(r.start, async (c) => {
    const b = c.req.valid('json');
    return c.json(
      await agent.startVm(b.spec, { ...(b.incoming ? { incoming: true } : {}), ...(b.createDiskBytes ? { createDiskBytes: b.createDiskBytes } : {}) }),
      200,
    );
  });
  app.openapi(r.stop, async (c) => {
    const { name } = c.req.valid('param');
    await hv.stop(name);
    return c.json({ stopped: name }, 200);
  });
  app.openapi(r.shutdown, async (c) => c.json(await hv.shutdown(c.req.valid('param').name, c.req.valid('json').timeoutMs), 200));
  app.openapi(r.display, async (c) => {
    const name = c.req.valid('param').name;
    if (!hv.spec(name).boot) throw errors.invalidState(`VM '${name}' runs Ferry's built-in guest, which has no screen (its console is the serial one)`);
    return c.json({ vm: name }, 200);
  });
  app.openapi(r.guest, async (c) => c.json(await hv.guestReport(c.req.valid('param').name), 200));
  app.openapi(r.kill, async (c) => c.json({ killed: await hv.kill(c.req.valid('param').name, c.req.valid('query').pid) }, 200));
  app.openapi(r.pause, async (c) => {
    await hv.pause(c.req.valid('param').name);
    return c.json({}, 200);
  });
  app.openapi(r.resume, async (c) => {
    await hv.resume(c.req.valid('param').name);
    return c.json({}, 200);
  });
  app.openapi(r.announce, async (c) => c.json(await agent.announce(c.req.valid('param').name), 200));
  app.openapi(r.incoming, async (c) => {
    const { name } = c.req.valid('param');
    const b = c.req.valid('json');
    if (b.file) {
      await hv.restoreFrom(name, b.file, b.tuning);
      return c.json({ file: b.file }, 200);
    }
    const address = b.address ?? o.migrationAddress;
    agent.ownAddress(address);
    return c.json(await hv.listenIncoming(name, b.tuning, address), 200);
  });
  app.openapi(r.send, async (c) => {
    const b = c.req.valid('json');
    if (!b.file && (b.address === undefined || b.port === undefined)) throw errors.invalid('target', 'a transfer needs a file or an address and port');
    await hv.sendTo(c.req.valid('param').name, b.file ? { file: b.file } : { address: b.address!, port: b.port! }, b.tuning);
    return c.json({}, 200);
  });
  app.openapi(r.transfer, async (c) => c.json(await hv.transferProgress(c.req.valid('param').name), 200));
  app.openapi(r.cancelTransfer, async (c) => {
    await hv.cancelTransfer(c.req.valid('param').name);
    return c.json({}, 200);
  });
  app.openapi(r.postcopy, async (c) => {
    await hv.startPostcopy(c.req.valid('param').name);
    return c.json({}, 200);
  });
  app.openapi(r.continueTransfer, async (c) => {
    await hv.continueTransfer(c.req.valid('param').name);
    return c.json({}, 200);
  });
  app.openapi(r.measure, async (c) => {
    const b = c.req.valid('json');
    return c.json(await hv.measureGuest(c.req.valid('param').name, { ms: b.ms ?? 300, samples: b.samples ?? 2048 }), 200);
  });
  app.openapi(r.nic, async (c) => c.json(await hv.nicStatus(c.req.valid('param').name), 200));
  app.openapi(r.freeze, async (c) => {
    const b = c.req.valid('json');
    return c.json(await hv.freezeDisk(c.req.valid('param').name, b.overlay, b.mode), 200);
  });
  app.openapi(r.merge, async (c) => c.json(await hv.mergeOverlay(c.req.valid('param').name, c.req.valid('json').copied), 200));
  app.openapi(r.replicaSync, async (c) => {
    const { mode, ...to } = c.req.valid('json');
    return c.json(await hv.replicaSync(c.req.valid('param').name, to, mode), 200);
  });
  app.openapi(r.cancelReplicaSync, async (c) => c.json({ cancelled: await hv.cancelReplicaSync(c.req.valid('param').name) }, 200));
  app.openapi(r.moveStorage, async (c) => {
    const b = c.req.valid('json');
    return c.json(await hv.moveDisk(c.req.valid('param').name, b.target, b.sizeBytes), 200);
  });
  app.openapi(r.exportDisk, async (c) => {
    const address = c.req.valid('json').address ?? o.migrationAddress;
    agent.ownAddress(address);
    return c.json(await hv.exportDisk(c.req.valid('param').name, address), 200);
  });
  app.openapi(r.unexportDisk, async (c) => {
    await hv.unexportDisk(c.req.valid('param').name);
    return c.json({}, 200);
  });
  app.openapi(r.mirror, async (c) => c.json(await hv.mirrorDisk(c.req.valid('param').name, c.req.valid('json')), 200));
  app.openapi(r.endMirror, async (c) => c.json(await hv.endMirror(c.req.valid('param').name, c.req.valid('json').complete), 200));
  app.openapi(r.consoleInput, async (c) => {
    hv.writeConsole(c.req.valid('param').name, Buffer.from(c.req.valid('json').data, 'utf8'));
    return c.json({}, 200);
  });
  app.openapi(r.console, async (c) => {
    const { name } = c.req.valid('param');
    await hv.get(name); // 404 before the stream starts
    c.header('content-type', 'application/octet-stream');
    c.header('cache-control', 'no-store');
    return stream(c, async (out) => {
      await new Promise<void>((resolve) => {
        const off = hv.onConsole(name, (chunk) => void out.write(chunk).catch(() => {}));
        const offExit = hv.onExit((vm) => vm === name && done());
        const done = () => {
          off();
          offExit();
          resolve();
        };
        out.onAbort(done);
      });
    }) as never;
  });
  app.openapi(r.probe, async (c) => {
    const b = c.req.valid('json');
    if (b.from !== undefined) agent.ownAddress(b.from);
    return c.json(await net.probe(b.to, b.port, { ...(b.from ? { localAddress: b.from } : {}), timeoutMs: b.timeoutMs ?? 500 }), 200);
  });
  app.openapi(r.throughput, async (c) => {
    const b = c.req.valid('json');
    if (b.from !== undefined) agent.ownAddress(b.from);
    return c.json(await net.throughput(b.to, b.port, { ...(b.from ? { localAddress: b.from } : {}), ms: b.ms ?? 300 }), 200);
  });
  return app;
}

/**
 * The controller's REST API (bearer token on every route).
 *
 *   GET  /api/v1/status
 *   GET  /api/v1/nodes
 *   POST /api/v1/nodes/:name/maintenance {drain: live|save, dryRun}   POST /api/v1/nodes/:name/resume
 *   POST /api/v1/nodes {name, cpuModel, memoryMiB, nicBackend}   DELETE /api/v1/nodes/:name   (membership)
 *   POST /api/v1/agents/heartbeat               (agents)
 *   GET  /api/v1/vms            POST /api/v1/vms
 *   GET  /api/v1/vms/:name      DELETE /api/v1/vms/:name    PATCH /api/v1/vms/:name {compat}
 *   POST /api/v1/vms/:name/start | stop | save
 *   POST /api/v1/vms/:name/ping                 (through the virtual switch)
 *   GET  /api/v1/vms/:name/console              (stream; ?follow=1)
 *   POST /api/v1/vms/:name/console              (input)
 *   POST /api/v1/vms/:name/migrate              → a migration record (task)
 *   GET  /api/v1/migrations     GET /api/v1/migrations/:id
 *   POST /api/v1/migrations/:id/cancel
 *   GET  /api/v1/networks       PUT /api/v1/networks/:name {role, metric}
 *   GET  /api/v1/switches      POST /api/v1/switches {name, macAgeingS}
 *   PATCH /api/v1/switches/:name {macAgeingS}     DELETE /api/v1/switches/:name
 *   GET  /api/v1/switch-bindings[?node=]   POST /api/v1/switch-bindings {node, iface, switch}
 *   DELETE /api/v1/switch-bindings/:node/:iface
 *   POST /api/v1/switches-scrub {inactive, settings, name, force}
 *   GET  /api/v1/replicas   PUT|DELETE /api/v1/replicas/:vm {to, token, interval, keep}
 *   POST /api/v1/replicas/:vm/sync | failover {planned, test, point} | reverse
 *   GET  /api/v1/replica-target   POST /api/v1/replica-in   POST /api/v1/replica-in/:vm/sync | sync/close | failover   DELETE /api/v1/replica-in/:vm
 *   GET  /api/v1/backup-schedules   PUT|DELETE /api/v1/backup-schedules/:vm {every, keep, window}
 *   GET  /api/v1/backups[?vm=]   POST /api/v1/backups {vm, incremental}   POST /api/v1/backups/:id/restore {as}   DELETE /api/v1/backups/:id
 *   GET  /api/v1/switch/macs
 *   GET  /api/v1/events       (JSON; Accept: text/event-stream for live server-sent events)
 *   GET  /api/v1/openapi.json  GET /metrics (Prometheus)
 *   GET  /, /login, /ui/:file  POST /login, /logout   (the dashboard; session cookie + x-csrf-token)
 *   POST /api/v1/cluster/balance {dryRun}
 *   GET  /api/v1/cluster/cpu-baselines          (processor compatibility mode, per vendor)
 *   GET  /api/v1/cluster/policy     PUT /api/v1/cluster/policy {fields}   (default migration policy)
 *   GET  /api/v1/cluster/settings   PUT /api/v1/cluster/settings/:name  {value}
 *   POST /api/v1/cluster/down
 */
import fs from 'node:fs';
import http from 'node:http';
import { errors, toFerryError } from '../domain/errors.js';
import type { Controller, Heartbeat } from '../controller/controller.js';
import type { VmCreateRequest } from '../domain/validate.js';
import type { ScrubRequest } from '../domain/switches.js';
import type { NodeAddRequest } from '../controller/membership.js';
import type { DrainMode } from '../domain/drain.js';
import { Maintenance } from '../controller/maintenance.js';
import { Balancer } from '../controller/balancer.js';
import type { MigrationService } from '../controller/migration/service.js';
import { Router } from './http.js';
import { renderMetrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
import { Sessions, cookies, handleLogin, openEventStream, sendAsset } from './web.js';
import { effectivePolicy } from '../domain/policy.js';
import { switchOf } from '../controller/network/switches.js';

export function controllerRouter(c: Controller, migrations: MigrationService, token: string, onDown: () => void, balancer = new Balancer(c, migrations, c.clock)): Router {
  const r = new Router();
  const maintenance = new Maintenance(c, migrations);
  const sessions = new Sessions(token);
  r.guard = (req) => sessions.guard(req);

  // The dashboard: a login page, then the single-page console (src/dashboard/).
  r.raw('GET', '/', (req, res) => {
    if (!sessions.session(req.headers)) {
      res.writeHead(303, { location: '/login' });
      res.end();
      return;
    }
    sendAsset(res, 'index.html');
  });
  r.raw('GET', '/login', (_req, res) => sendAsset(res, 'login.html'));
  r.raw('POST', '/login', (req, res) => void handleLogin(sessions, req, res).catch(() => {
    res.writeHead(400);
    res.end();
  }));
  r.raw('POST', '/logout', (req, res) => {
    sessions.logout(cookies(req.headers.cookie).ferry_session);
    res.writeHead(303, { location: '/login', 'set-cookie': 'ferry_session=; Path=/; Max-Age=0' });
    res.end();
  });
  r.raw('GET', '/ui/:file', (_req, res, params) => sendAsset(res, params.file!));
  r.raw('GET', '/metrics', (_req, res) => {
    void Promise.all([migrations.list(), c.vms(), c.nodes()]).then(([m, v, n]) => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(renderMetrics(m, v, n));
    }, (e: unknown) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(e));
    });
  });
  r.on('GET', '/api/v1/openapi.json', () => openApiDocument());

  r.on('GET', '/api/v1/status', async () => {
    const nodes = await c.nodes();
    const vms = await c.vms();
    return {
      cluster: { id: c.config.id, name: c.config.name, createdAtMs: c.config.createdAtMs },
      controller: { pid: process.pid },
      nodes: { total: nodes.length, up: nodes.filter((n) => n.state === 'up').length },
      vms: { total: vms.length, running: vms.filter((v) => v.state === 'running').length },
      migrations: { running: (await migrations.list()).filter((m) => !m.finishedAtMs).length },
    };
  });

  r.on('GET', '/api/v1/nodes', async () => {
    const loads = await c.loads();
    return loads.map((l) => ({
      ...l.node,
      vmCount: l.vmCount,
      memoryFreeMiB: (l.node.capabilities?.memoryTotalMiB ?? 0) - l.committedMiB,
    }));
  });
  r.on('POST', '/api/v1/nodes', (req) => c.membership.add((req.body ?? {}) as NodeAddRequest));
  r.on('DELETE', '/api/v1/nodes/:name', (req) => c.membership.remove(req.params.name!));
  r.on('POST', '/api/v1/agents/heartbeat', (req) => c.heartbeat(req.body as Heartbeat));
  r.on('POST', '/api/v1/nodes/:name/maintenance', (req) => {
    const b = (req.body ?? {}) as { drain?: DrainMode; dryRun?: boolean };
    return maintenance.drain(req.params.name!, b.drain ?? 'live', b.dryRun === true);
  });
  r.on('POST', '/api/v1/nodes/:name/resume', (req) => maintenance.resume(req.params.name!));

  r.on('GET', '/api/v1/vms', async () => Promise.all((await c.vms()).map((vm) => migrations.decorate(vm))));
  r.on('POST', '/api/v1/vms', (req) => {
    const body = req.body as VmCreateRequest | undefined;
    if (!body || typeof body !== 'object') throw errors.invalid('body', 'a VM needs at least a name');
    return c.createVm(body);
  });
  r.on('GET', '/api/v1/vms/:name', async (req) => migrations.decorateOne(await c.vm(req.params.name!)));
  r.on('PATCH', '/api/v1/vms/:name', (req) => c.setVm(req.params.name!, (req.body ?? {}) as { compat?: unknown; switch?: unknown; policy?: unknown }));
  r.on('DELETE', '/api/v1/vms/:name', async (req) => {
    await c.deleteVm(req.params.name!);
    return { deleted: req.params.name };
  });
  r.on('POST', '/api/v1/vms/:name/start', (req) => c.startVm(req.params.name!, (req.body as { node?: string } | undefined) ?? {}));
  r.on('POST', '/api/v1/vms/:name/stop', (req) => c.stopVm(req.params.name!));
  r.on('POST', '/api/v1/vms/:name/save', (req) => c.saveVm(req.params.name!));
  r.on('POST', '/api/v1/vms/:name/move-storage', (req) => c.moveStorage(req.params.name!, (req.body as { to?: unknown } | undefined)?.to));
  r.on('POST', '/api/v1/vms/:name/ping', async (req) => {
    const vm = await c.vm(req.params.name!);
    if (vm.state !== 'running') throw errors.invalidState(`VM '${vm.name}' is ${vm.state}`);
    const timeoutMs = Number((req.body as { timeoutMs?: number } | undefined)?.timeoutMs ?? 2000);
    const sw = switchOf(vm);
    if (!sw) return { vm: vm.name, ip: vm.ip.split('/')[0], answered: false, rttMs: null, switch: null };
    return { vm: vm.name, ip: vm.ip.split('/')[0], switch: sw, ...(await c.switch.ping(vm.ip.split('/')[0]!, vm.mac, timeoutMs, sw)) };
  });
  r.on('POST', '/api/v1/vms/:name/console', async (req) => {
    const vm = await c.vm(req.params.name!);
    if (vm.state !== 'running') throw errors.invalidState(`VM '${vm.name}' is ${vm.state}`);
    await (await c.agentFor(vm.node)).consoleInput(vm.name, (req.body as { data?: string } | undefined)?.data ?? '');
    return {};
  });
  r.raw('GET', '/api/v1/vms/:name/console', (req, res, params) => void streamConsole(c, req, res, params.name!));

  r.on('POST', '/api/v1/vms/:name/migrate', (req) => migrations.request(req.params.name!, req.body as never));
  r.on('GET', '/api/v1/migrations', () => migrations.listWithQueue());
  r.on('GET', '/api/v1/migrations/:id', (req) => migrations.get(req.params.id!));
  r.on('POST', '/api/v1/migrations/:id/cancel', (req) => migrations.cancel(req.params.id!));

  r.on('GET', '/api/v1/networks', () => c.networks.status());
  r.on('PUT', '/api/v1/networks/:name', (req) => c.networks.set(req.params.name!, (req.body ?? {}) as { role?: unknown; metric?: unknown }));
  r.on('GET', '/api/v1/switches', () => c.switches.views());
  r.on('POST', '/api/v1/switches', (req) => {
    const b = (req.body ?? {}) as { name?: unknown; macAgeingS?: unknown };
    return c.switches.create(String(b.name ?? ''), { macAgeingS: b.macAgeingS });
  });
  r.on('PATCH', '/api/v1/switches/:name', (req) => c.switches.set(req.params.name!, (req.body ?? {}) as { macAgeingS?: unknown }));
  r.on('DELETE', '/api/v1/switches/:name', (req) => c.switches.delete(req.params.name!));
  r.on('GET', '/api/v1/switch-bindings', (req) => c.switches.bindings(req.query.get('node') ?? undefined));
  r.on('POST', '/api/v1/switch-bindings', (req) => {
    const b = (req.body ?? {}) as { node?: string; iface?: string; switch?: string };
    if (!b.node || !b.iface || !b.switch) throw errors.invalid('binding', 'a binding needs node, iface and switch');
    return c.switches.bind(b.node, b.iface, b.switch);
  });
  r.on('DELETE', '/api/v1/switch-bindings/:node/:iface', (req) => c.switches.unbind(req.params.node!, req.params.iface!));
  r.on('POST', '/api/v1/switches-scrub', (req) => c.switches.scrub((req.body ?? {}) as ScrubRequest));
  r.on('GET', '/api/v1/backups', (req) => c.backups.list(req.query.get('vm') ?? undefined));
  r.on('POST', '/api/v1/backups', (req) => {
    const b = (req.body ?? {}) as { vm?: string; incremental?: boolean; bandwidthMiBps?: unknown };
    if (!b.vm) throw errors.invalid('vm', 'a backup needs a VM');
    return c.backups.create(b.vm, { incremental: b.incremental === true, ...(b.bandwidthMiBps !== undefined ? { bandwidthMiBps: b.bandwidthMiBps } : {}) });
  });
  r.on('POST', '/api/v1/backups/:id/restore', (req) => c.backups.restore(req.params.id!, (req.body ?? {}) as { as?: string }));
  r.on('DELETE', '/api/v1/backups/:id', (req) => c.backups.delete(req.params.id!));
  r.on('GET', '/api/v1/backup-schedules', () => c.backupSchedules.list());
  r.on('PUT', '/api/v1/backup-schedules/:vm', (req) => c.backupSchedules.set(req.params.vm!, (req.body ?? {}) as { every?: unknown; keep?: unknown; window?: unknown }));
  r.on('DELETE', '/api/v1/backup-schedules/:vm', (req) => c.backupSchedules.remove(req.params.vm!));
  // Replica (R5), the primary's side.
  r.on('GET', '/api/v1/replicas', () => c.replicas.status());
  r.on('PUT', '/api/v1/replicas/:vm', (req) => c.replicas.enable(req.params.vm!, (req.body ?? {}) as { to?: unknown; token?: unknown; interval?: unknown; keep?: unknown }));
  r.on('DELETE', '/api/v1/replicas/:vm', (req) => c.replicas.disable(req.params.vm!));
  r.on('POST', '/api/v1/replicas/:vm/sync', async (req) => {
    const point = await c.replicas.sync(req.params.vm!);
    return { point: point ?? null, status: await c.replicas.statusOf(req.params.vm!) };
  });
  r.on('POST', '/api/v1/replicas/:vm/failover', (req) => c.replicas.failover(req.params.vm!, (req.body ?? {}) as { planned?: boolean; test?: boolean; point?: string }));
  r.on('POST', '/api/v1/replicas/:vm/reverse', (req) => c.replicas.reverse(req.params.vm!));
  // Replica, the replica side (called by the primary cluster with this cluster's token).
  r.on('GET', '/api/v1/replica-target', () => ({ clusterId: c.config.id }));
  r.on('POST', '/api/v1/replica-in', async (req) => {
    const body = (req.body ?? {}) as Parameters<typeof c.replicas.incoming.register>[0];
    const view = await c.replicas.incoming.register(body);
    await c.replicas.supersede(view.vm);
    return view;
  });
  r.on('POST', '/api/v1/replica-in/:vm/sync', (req) => c.replicas.incoming.openSync(req.params.vm!, new URL(`http://${req.headers.host ?? '127.0.0.1'}`).hostname));
  r.on('POST', '/api/v1/replica-in/:vm/sync/close', (req) => c.replicas.incoming.closeSync(req.params.vm!, (req.body as { point?: never } | undefined)?.point));
  r.on('POST', '/api/v1/replica-in/:vm/failover', (req) => c.replicas.incoming.failover(req.params.vm!, (req.body ?? {}) as { point?: string; test?: boolean }));
  r.on('DELETE', '/api/v1/replica-in/:vm', async (req) => {
    await c.replicas.incoming.remove(req.params.vm!);
    return {};
  });
  r.on('GET', '/api/v1/switch/macs', async () => {
    const vms = await c.vms();
    return (await c.switch.macs()).map((m) => ({ ...m, vm: vms.find((v) => v.mac === m.mac)?.name ?? null }));
  });
  r.raw('GET', '/api/v1/events', (req, res) => void streamEvents(c, req, res));
  r.on('GET', '/api/v1/cluster/settings', () => c.settings());
  r.on('GET', '/api/v1/cluster/cpu-baselines', () => c.cpuBaselines());
  r.on('GET', '/api/v1/cluster/policy', async () => ({ overrides: await c.defaultPolicy(), effective: effectivePolicy(await c.defaultPolicy()) }));
  r.on('PUT', '/api/v1/cluster/policy', (req) => c.setDefaultPolicy(req.body ?? {}));
  r.on('POST', '/api/v1/cluster/balance', (req) => balancer.balance((req.body as { dryRun?: boolean } | undefined)?.dryRun === true));
  r.on('PUT', '/api/v1/cluster/settings/:name', async (req) => {
    const next = await c.setSetting(req.params.name!, (req.body as { value?: unknown } | undefined)?.value);
    void migrations.schedule(); // more slots may start queued migrations now
    return next;
  });
  r.on('POST', '/api/v1/cluster/down', async () => {
    await migrations.cancelAll();
    const stopped = await c.stopAll();
    setImmediate(onDown);
    return { stopped };
  });
  return r;
}

/**
 * The event log: JSON (`?since=` ms), or with `Accept: text/event-stream`
 * server-sent events: what happened since `Last-Event-ID` (or `?since=`),
 * then each new event as it is recorded.
 */
async function streamEvents(c: Controller, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://x');
  const since = Number(url.searchParams.get('since') ?? 0);
  if (!(req.headers.accept ?? '').includes('text/event-stream')) {
    const list = await c.events(since);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(list));
    return;
  }
  const stream = openEventStream(req, res);
  let last = typeof req.headers['last-event-id'] === 'string' ? req.headers['last-event-id'] : undefined;
  // Subscribe first, replay second: nothing recorded in between is lost, nothing is sent twice.
  const pending: { id: string; event: unknown }[] = [];
  let replaying = true;
  const off = c.onEvent((id, event) => {
    if (replaying) pending.push({ id, event });
    else if (!last || id > last) {
      last = id;
      stream.send(id, event);
    }
  });
  stream.onClose(off);
  const backlog = await c.eventsWithIds(since, 1000, last);
  for (const e of [...backlog, ...pending.filter((p) => !backlog.some((b) => b.id === p.id))].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    if (last && e.id <= last) continue;
    last = e.id;
    stream.send(e.id, e.event);
  }
  replaying = false;
}

/** Console: the log so far, then (with ?follow=1) what the VM prints next, until the client goes. */
async function streamConsole(c: Controller, req: http.IncomingMessage, res: http.ServerResponse, name: string): Promise<void> {
  try {
    await c.vm(name);
  } catch (e) {
    const err = toFerryError(e);
    res.writeHead(err.httpStatus, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: err.toJSON() }));
    return;
  }
  const follow = new URL(req.url ?? '/', 'http://x').searchParams.get('follow') === '1';
  const path = c.layout.consoleLog(name);
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
  let offset = 0;
  const pump = () => {
    if (!fs.existsSync(path)) return;
    const size = fs.statSync(path).size;
    if (size < offset) offset = 0;
    if (size === offset) return;
    const fd = fs.openSync(path, 'r');
    const buf = Buffer.alloc(size - offset);
    fs.readSync(fd, buf, 0, buf.length, offset);
    fs.closeSync(fd);
    offset = size;
    res.write(buf);
  };
  pump();
  if (!follow) {
    res.end();
    return;
  }
  // The log is appended by whichever node runs the VM, so following the file
  // keeps the console attached across a migration.
  const timer = setInterval(pump, 100);
  req.on('close', () => clearInterval(timer));
}

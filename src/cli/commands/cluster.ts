/** `ferry up|down|status|events|logs` and `ferry cluster …`: the cluster as a whole. */
import fs from 'node:fs';
import type { Command } from 'commander';
import { readEvents } from '../../api/client.js';
import { clusterRoutes } from '../../api/routes/cluster.js';
import { eventRoutes } from '../../api/routes/events.js';
import { systemClock } from '../../domain/clock.js';
import { errors } from '../../domain/errors.js';
import type { StateLayout } from '../../domain/layout.js';
import { NIC_BACKENDS, type NicBackend } from '../../domain/nic.js';
import { down, up } from '../daemons.js';
import { startHost } from '../hosts.js';
import { readHostConfig } from '../../config/host-config.js';
import { type Cluster, command, followMigration, wholeNumber } from '../context.js';
import { Progress, json, print, table } from '../output.js';
import { namedPolicy } from '../../domain/policy.js';
import { policyFromFlags } from './vm.js';
import { shown } from '../../api/schemas.js';
import { describeControllers } from '../../domain/ha.js';

/** `--etcd`: client URLs of etcd members, comma-separated. */
export function etcdEndpoints(raw: string): string[] {
  const urls = raw.split(',').filter(Boolean);
  for (const u of urls) {
    let ok = false;
    try {
      const p = new URL(u);
      ok = (p.protocol === 'http:' || p.protocol === 'https:') && p.port !== '' && p.pathname === '/';
    } catch {}
    if (!ok) throw errors.invalid('etcd', `--etcd takes client URLs like http://10.0.0.1:2379, got '${shown(u)}'`);
  }
  if (!urls.length) throw errors.invalid('etcd', '--etcd needs at least one client URL');
  return urls;
}

/** A setting's value as typed: digits are a number, true/false a boolean, anything else text (the setting's rule judges it). */
function settingValue(raw: string): unknown {
  if (/^\d+$/.test(raw)) return Number(raw);
  if (raw === 'true' || raw === 'false') return raw === 'true';
  return raw;
}

export function clusterCommands(program: Command, layout: () => StateLayout, connect: () => Cluster, done: (code: number) => void): void {
  command(program, 'up', 'start a local cluster (default 3 nodes), or the daemons of one that stopped')
    .option('--nodes <N>', 'nodes, 1 to 16', wholeNumber('--nodes'))
    .option('--node-memory <MiB>', 'memory each node offers', wholeNumber('--node-memory'))
    .option('--cpu-models <M1,M2,…>', 'per node, under TCG (e.g. Westmere,Nehalem,Opteron_G2)')
    .option('--nic-backends <B1,B2,…>', 'per node: stream (default) or tap (virtio-net offloads; needs root)')
    .option('--port <PORT>', "the controller's API and console port (default 8470; 0: any free port)", wholeNumber('--port'))
    .option('--etcd <URL,URL…>', "a new cluster's store: these etcd members (default: a SQLite file in the state directory)", etcdEndpoints)
    .action(async (o: { nodes?: number; nodeMemory?: number; cpuModels?: string; nicBackends?: string; port?: number; etcd?: string[] }) => {
      if (o.nodes !== undefined && (o.nodes < 1 || o.nodes > 16)) throw errors.invalid('nodes', `--nodes must be from 1 to 16, got ${o.nodes}`);
      const progress = new Progress();
      const l = layout();
      if (readHostConfig(l)) {
        // A host of a cluster of real hosts: only its own daemons.
        const h = await startHost(l, (line) => progress.update(line));
        progress.done();
        print(h.started.length ? `${h.name}: started ${h.started.join(', ')}` : `${h.name}: its daemons are running`);
        return;
      }
      const res = await up(l, {
        ...(o.nodes !== undefined ? { nodes: o.nodes } : {}),
        ...(o.nodeMemory !== undefined ? { nodeMemoryMiB: o.nodeMemory } : {}),
        ...(o.port !== undefined ? { port: o.port } : {}),
        ...(o.etcd ? { etcd: o.etcd } : {}),
        ...(o.cpuModels ? { cpuModels: o.cpuModels.split(',').filter(Boolean) } : {}),
        ...(o.nicBackends
          ? {
              nicBackends: o.nicBackends
                .split(',')
                .filter(Boolean)
                .map((b) => {
                  if (!(NIC_BACKENDS as readonly string[]).includes(b)) throw errors.invalid('nic-backends', `NIC backend must be stream or tap, got '${b}'`);
                  return b as NicBackend;
                }),
            }
          : {}),
        progress: (line) => progress.update(line),
      });
      progress.done();
      if (res.alreadyRunning) print(`cluster already running in ${l.dir} (${res.config.nodes.length} nodes)`);
      else print(`cluster up in ${l.dir}: ${res.config.nodes.map((n) => n.name).join(', ')} (started ${res.started.join(', ')})`);
      if (res.startActions.started.length) print(`start actions: started ${res.startActions.started.join(', ')}`);
      for (const f of res.startActions.failed) print(`start action of ${f.vm} failed: ${f.error}`);
      print(`console: ${res.controllerUrl}/ (sign in with the token in ${l.token})`);
    });

  command(program, 'down', 'shut every VM down and stop the daemons (start actions apply at the next up)')
    .option(
      '--shutdown-timeout <S>',
      'seconds each guest may take to shut down before it is powered off (default: the cluster setting shutdownTimeoutS)',
      wholeNumber('--shutdown-timeout'),
    )
    .option('--force', 'on a host that joined a cluster: go down even though it runs VMs (they are powered off)')
    .action(async (o: { shutdownTimeout?: number; force?: boolean }) => {
      const res = await down(layout(), {
        ...(o.shutdownTimeout !== undefined ? { shutdownTimeoutS: o.shutdownTimeout } : {}),
        ...(o.force ? { force: true } : {}),
      });
      const forced = res.forcedVms.length ? ` (${res.forcedVms.join(', ')} did not shut down in time: powered off)` : '';
      print(
        res.stoppedDaemons.length
          ? `cluster down: shut down ${res.stoppedVms.length} VM(s)${forced} and stopped ${res.stoppedDaemons.length} daemon(s)`
          : 'no cluster was running',
      );
    });

  command(program, 'status', 'the cluster at a glance, and where its console is')
    .option('--json', 'print as JSON (consoleUrl, tokenFile, counts)')
    .action(async (o: { json?: boolean }) => {
      const s = await connect().api.call(clusterRoutes.status, {});
      if (o.json) json({ ...s, consoleUrl: s.controller.consoleUrl, tokenFile: s.controller.tokenFile });
      else {
        print(`cluster ${s.cluster.id} in ${layout().dir}`);
        const stalled = s.vms.stalled.length ? ` (${s.vms.stalled.map((x) => `${x.vm}: ${x.runState}`).join(', ')})` : '';
        print(
          `nodes: ${s.nodes.up}/${s.nodes.total} up   VMs: ${s.vms.running}/${s.vms.total} running${stalled}   migrations running: ${s.migrations.running}`,
        );
        const st = s.store;
        print(
          `store: ${st.backend} at ${st.at}` +
            (st.reachable
              ? ''
              : `, NOT ANSWERING since ${new Date(st.sinceMs ?? Date.now()).toISOString()} (reads show what was last seen; changes are refused)`),
        );
        if (s.controllers) print(`controllers: ${describeControllers(s.controllers, s.leadership)}`);
        print(`console: ${s.controller.consoleUrl} (sign in with the token in ${s.controller.tokenFile})`);
      }
    });

  command(program, 'events', 'the event log')
    .option('--since <ms>', 'from this time (ms since the epoch)', wholeNumber('--since'))
    .option('--follow', 'keep printing new events (Ctrl-C stops)')
    .option('--json', 'print as JSON')
    .action(async (o: { since?: number; follow?: boolean; json?: boolean }) => {
      type Ev = { atMs: number; type: string; message: string };
      const c = connect();
      const show = (e: Ev) => print(o.json && o.follow ? JSON.stringify(e) : `${new Date(e.atMs).toISOString()}  ${e.type.padEnd(22)} ${e.message}`);
      const since = o.since ?? 0;
      if (!o.follow) {
        const events = (await c.api.call(eventRoutes.list, { query: { since } })) as Ev[];
        if (o.json) json(events);
        else events.forEach(show);
        return;
      }
      // The server-sent event stream, one line (or JSON object) per event, until Ctrl-C.
      const res = await c.api.open(eventRoutes.list, { query: { since } }, { headers: { accept: 'text/event-stream' } });
      await readEvents(res, (_id, data) => show(data as Ev));
    });

  command(program, 'logs', "a daemon's log, readable (JSON lines in STATE/logs)")
    .argument('[daemon]', 'controller, switch or a node name (default controller)')
    .option('--json', 'print the raw JSON lines')
    .action(async (daemon: string | undefined, o: { json?: boolean }) => {
      const file = layout().daemonLog(daemon ?? 'controller');
      if (!fs.existsSync(file)) throw errors.invalid('daemon', `no log ${file}`);
      const text = fs.readFileSync(file, 'utf8');
      if (o.json) {
        process.stdout.write(text);
        return;
      }
      const { prettyFactory } = await import('pino-pretty');
      const pretty = prettyFactory({ colorize: Boolean(process.stdout.isTTY), translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l', ignore: 'pid,hostname' });
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        process.stdout.write(line.startsWith('{') ? pretty(line) : `${line}\n`);
      }
    });

  const cluster = command(program, 'cluster', 'cluster settings, CPU baselines, balancing, the default migration policy');
  command(cluster, 'show', "cluster settings and each vendor's CPU compatibility baseline")
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const c = connect();
      const s = await c.api.call(clusterRoutes.settings, {});
      const baselines = await c.api.call(clusterRoutes.baselines, {});
      if (o.json) {
        json({ settings: s, cpuBaselines: baselines });
        return;
      }
      print(
        table(
          ['SETTING', 'VALUE'],
          Object.entries(s).map(([k, v]) => [k, String(v)]),
        ),
      );
      print('\nprocessor compatibility baselines (features shared by all nodes of a vendor):');
      print(
        table(
          ['VENDOR', 'NODES', 'BASE MODEL', 'FEATURES', 'TURNED OFF'],
          baselines.map((b) => [b.vendor, b.nodes.join(','), b.baseModel, b.features.length, b.disabled.join(' ') || '-']),
        ),
      );
    });
  command(cluster, 'set', 'change one setting, e.g. cluster set migrationsPerNode 2')
    .argument('<name>', 'a setting name')
    .argument('<value>', 'a value')
    .action(async (name: string, value: string) => {
      const s = await connect().api.call(clusterRoutes.set, { params: { name: name as never }, body: { value: settingValue(value) } });
      print(`${name} = ${String((s as Record<string, unknown>)[name])}`);
    });
  command(cluster, 'balance', 'even out memory and CPU load with live migrations')
    .option('--dry-run', 'plan only')
    .option('--json', 'print as JSON')
    .action(async (o: { dryRun?: boolean; json?: boolean }) => {
      const c = connect();
      const res = await c.api.call(clusterRoutes.balance, { body: { dryRun: o.dryRun === true } });
      const p = res.plan;
      const loads = (l: Record<string, number>) =>
        Object.entries(l)
          .map(([n, v]) => `${n} ${v}%`)
          .join(', ');
      if (!o.json) {
        print(`load now: ${loads(p.before)} (threshold ${p.thresholdPct} points)`);
        if (p.moves.length === 0) print('balanced: no moves');
        for (const m of p.moves) print(`  ${m.vm} (${m.memoryMiB} MiB): ${m.from} → ${m.to}`);
        if (p.moves.length) print(`load after: ${loads(p.after)}`);
      }
      let failed = 0;
      for (const m of res.migrations) {
        const final = await followMigration(
          c.api,
          m.id,
          () => {},
          (t) => systemClock.sleep(t),
        );
        if (final.report.status !== 'completed') failed++;
        if (!o.json) print(`  ${m.vm}: ${final.report.status}${final.report.error ? `: ${final.report.error}` : ''}`);
      }
      if (o.json) json(res);
      done(failed ? 1 : 0);
    });
  command(cluster, 'policy', 'the default migration policy ("reset" goes back to Ferry\'s)')
    .argument('[reset]', "'reset'")
    .option('--policy <FILE|NAME>', 'a policy file or ferry | qemu-defaults')
    .option('--json', 'print as JSON')
    .action(async (reset: string | undefined, o: { policy?: string; json?: boolean }) => {
      const c = connect();
      if (reset !== undefined && reset !== 'reset') throw errors.usage(`'cluster policy' takes 'reset' or --policy FILE|NAME, got '${reset}'`);
      if (reset === 'reset') await c.api.call(clusterRoutes.setPolicy, { body: {} });
      else if (o.policy !== undefined) {
        const p = policyFromFlags({ policy: o.policy });
        await c.api.call(clusterRoutes.setPolicy, {
          body: (typeof p === 'string' ? { ...namedPolicy(p) } : p) as never,
        });
      }
      const p = await c.api.call(clusterRoutes.policy, {});
      if (o.json) json(p);
      else
        print(
          table(
            ['FIELD', 'VALUE', 'SOURCE'],
            Object.entries(p.effective).map(([k, v]) => [k, JSON.stringify(v), k in p.overrides ? 'cluster' : 'ferry default']),
          ),
        );
    });
}

#!/usr/bin/env node
/**
 * The `ferry` command. Exit codes: 0 success, 1 the operation failed, 2 bad
 * usage or invalid input. Errors are one line on stderr starting `error:`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { callJson } from '../api/http.js';
import { readEndpoint, readToken } from '../config/cluster-config.js';
import { ErrorCode, FerryError, errors, toFerryError } from '../domain/errors.js';
import { buildImage } from '../guest/image.js';
import type { MigrationRecord, MigrationReport } from '../domain/migration.js';
import { STEPS } from '../domain/migration.js';
import type { CpuBaseline } from '../domain/compat.js';
import { NIC_BACKENDS, type NicBackend } from '../domain/nic.js';
import type { NetworkView } from '../controller/network/networks.js';
import type { ScrubResult, SwitchView } from '../domain/switches.js';
import type { BackupRecord } from '../controller/storage/backups.js';
import type { BackupSchedule } from '../controller/storage/schedules.js';
import type { NodeRecord, VmRecord } from '../domain/records.js';
import { type MigrationPolicy, NAMED_POLICIES } from '../domain/policy.js';
import type { Prediction } from '../domain/predict.js';
import type { MigrationNetwork } from '../domain/migration.js';
import { StateLayout, defaultStateDir } from '../config/paths.js';
import { pidAlive } from '../qemu/qemu-vm.js';
import { Args, parseArgs } from './args.js';
import { down, stopNodeAgent, up } from './daemons.js';
import { runDemo } from './demo.js';
import { Progress, bytes, json, ms, print, table } from './output.js';
import { replicaCommand } from './replica.js';

const USAGE = `ferry: a virtualization cluster manager

usage: ferry [--state DIR] COMMAND ...

cluster
  up [--nodes N] [--node-memory MiB]    start a local cluster (default 3 nodes)
     [--cpu-models M1,M2,…]             per node, under TCG (e.g. Westmere,Nehalem,Opteron_G2)
     [--nic-backends B1,B2,…]           per node: stream (default) or tap (virtio-net offloads; needs root)
  down                                  stop every VM and daemon
  status [--json]
  node list [--json]
  node add [NAME] [--cpu-model M] [--memory MiB] [--nic-backend stream|tap]   a new node joins
  node remove NAME                      an empty node leaves (drain it first)
  node maintenance NODE --drain live|save [--dry-run] [--json]
  node resume NODE
  net list [--json]                     cluster networks: role, metric, each node's address and state
  net set NAME [--role R] [--metric M]  R: management|migration|storage|none; lower metric is preferred
  switch list [--json]                  virtual switches: bindings, attached VMs, settings
  switch create NAME [--mac-ageing S]   a new virtual switch (its own layer-2 domain)
  switch set NAME --mac-ageing S
  switch delete NAME                    refused while VMs are attached
  switch bindings [NODE]                which node interface carries which switch
  switch bind NODE IFACE --switch NAME  e.g. switch bind node-2 eth1 --switch backend
  switch unbind NODE IFACE              refused while running VMs on that node use it
  switch scrub [--inactive] [--settings] [--name NAME] [--force]
                                        remove unused switches, reset settings, or remove one switch
  switch show [--json]                  MAC tables of every switch
  cluster show [--json]                 cluster settings and each vendor's CPU compatibility baseline
  cluster set NAME VALUE                e.g. cluster set migrationsPerNode 2
  cluster balance [--dry-run] [--json]  even out memory and CPU load with live migrations
  cluster policy [--policy FILE|NAME | reset] [--json]   the default migration policy
  events [--json] [--follow]
VMs
  vm create NAME [--memory MiB] [--cpus N] [--disk GiB] [--workload W] [--node NODE] [--compat] [--switch SW]
       [--offloads LIST|all|none]       NIC offloads (virtio-net names: csum,guest_csum,gso,host_tso4,…; default all)
  vm set NAME [--compat on|off] [--switch SW]   processor compatibility mode, virtual switch (only while stopped)
  vm start|stop|delete NAME
  vm list [--json]
  vm show NAME [--json]
  vm ping NAME [--json]                 ping the VM through the virtual switch
  vm console NAME                       attach to the serial console (Ctrl-] detaches)
  vm migrate NAME --to NODE [--json]    live migration (--quick: pause, save, restore)
  vm migrate NAME --to NODE --with-storage DIR
                                        shared-nothing: copy a disk that is not on the shared volume into DIR on NODE
       [--quick] [--check] [--plan]     --check: list every blocker; --plan: measure and predict; neither moves
       [--policy FILE|ferry|qemu-defaults] [--bandwidth MiB/s] [--max-downtime ms] [--postcopy]
  vm set NAME --policy FILE|NAME|none   the VM's migration policy overrides
  vm save NAME                          save a running VM's state to the shared volume and stop it
  vm move-storage NAME --to DIR         move the VM's disk to another volume while it runs
backups
  backup create VM [--incremental] [--bandwidth MiB/s]
                                        online backup of a running VM, verified when written; the VM may migrate meanwhile
  backup list [VM] [--json]
  backup restore ID [--as NAME]         as a new VM, or onto its stopped VM
  backup delete ID
  backup schedule VM --every DURATION --keep N [--window HH:MM-HH:MM]
                                        scheduled backups (30s, 15m, 6h, 1d) inside a local-time window, pruned to N
  backup schedule VM --off              stop scheduling (backups stay)
  backup schedules [--json]
replica (to another Ferry cluster or a standalone Ferry node)
  replica enable VM --to URL --token-file FILE [--interval 30s|5m|15m] [--keep N]
                                        initial full copy, then changed blocks every interval, N recovery points kept there
  replica status [--json]               last sync, lag, bytes sent, health; replicas this cluster holds
  replica sync VM                       sync now
  replica failover VM --planned         stop here after a final sync, start there: nothing lost
  replica failover VM [--point ID]      (on the replica cluster) start from the newest or a chosen recovery point
  replica failover VM --test            start a copy on an isolated switch there; replication goes on
  replica reverse VM                    (where the VM runs after a failover) replicate back to the old primary
  replica disable VM
migrations
  migration list [--json]
  migration show ID [--json]
  migration cancel ID
other
  image build                           build the built-in guest image
  demo [--json]                         a self-contained tour: live-migrate a VM under load

workloads: idle | memory:<MiB/s> | tcp | tcp-client:<VM> | disk:<writes/s>
state directory: --state DIR, or $FERRY_STATE, default ~/.ferry`;

export class Client {
  constructor(
    readonly layout: StateLayout,
    private readonly url: string,
    private readonly token: string,
  ) {}

  static connect(layout: StateLayout): Client {
    const endpoint = readEndpoint(layout, 'controller');
    const token = readToken(layout);
    if (!endpoint || !token || !pidAlive(endpoint.pid)) throw errors.clusterNotRunning(layout.dir);
    return new Client(layout, endpoint.url, token);
  }

  call<T>(method: string, p: string, body?: unknown, timeoutMs = 60_000): Promise<T> {
    return callJson<T>(this.url, method, p, body, { token: this.token, timeoutMs }).catch((e: unknown) => {
      if (e instanceof FerryError && e.code === ErrorCode.AgentUnreachable && e.details.url === this.url) {
        throw errors.clusterNotRunning(this.layout.dir);
      }
      throw e;
    });
  }

  get baseUrl(): string {
    return this.url;
  }

  get authToken(): string {
    return this.token;
  }
}

async function main(argv: string[]): Promise<number> {
  const parsed = parseArgs(argv);
  const stateFlag = parsed.flags.get('state');
  const layout = new StateLayout(path.resolve(typeof stateFlag === 'string' ? stateFlag : defaultStateDir()));
  const [cmd, sub] = parsed.positionals;
  if (!cmd || parsed.flags.has('help') || cmd === 'help') {
    print(USAGE);
    return cmd ? 0 : 2;
  }
  // Drop the command words so positionals start at the command's arguments.
  const words = ['vm', 'node', 'migration', 'switch', 'image', 'cluster', 'net', 'backup', 'replica'].includes(cmd) ? 2 : 1;
  const rest = { positionals: parsed.positionals.slice(words), flags: parsed.flags };
  const a = new Args(rest, words === 2 ? `${cmd} ${sub ?? ''}`.trim() : cmd);
  const client = () => Client.connect(layout);

  switch (cmd) {
    case 'up': {
      a.allow('nodes', 'node-memory', 'cpu-models', 'nic-backends').maxPositionals(0);
      const nodes = a.int('nodes');
      if (nodes !== undefined && (nodes < 1 || nodes > 16)) throw errors.invalid('nodes', `--nodes must be from 1 to 16, got ${nodes}`);
      const progress = new Progress();
      const res = await up(layout, {
        nodes, nodeMemoryMiB: a.int('node-memory'),
        cpuModels: a.string('cpu-models')?.split(',').filter(Boolean),
        nicBackends: a.string('nic-backends')?.split(',').filter(Boolean).map((b) => {
          if (!(NIC_BACKENDS as readonly string[]).includes(b)) throw errors.invalid('nic-backends', `NIC backend must be stream or tap, got '${b}'`);
          return b as NicBackend;
        }),
        progress: (l) => progress.update(l),
      });
      progress.done();
      if (res.alreadyRunning) print(`cluster already running in ${layout.dir} (${res.config.nodes.length} nodes)`);
      else print(`cluster up in ${layout.dir}: ${res.config.nodes.map((n) => n.name).join(', ')} (started ${res.started.join(', ')})`);
      return 0;
    }
    case 'down': {
      a.allow().maxPositionals(0);
      const res = await down(layout);
      print(res.stoppedDaemons.length ? `cluster down: stopped ${res.stoppedVms.length} VM(s) and ${res.stoppedDaemons.length} daemon(s)` : 'no cluster was running');
      return 0;
    }
    case 'status': {
      a.allow('json').maxPositionals(0);
      const s = await client().call<Record<string, Record<string, unknown>>>('GET', '/api/v1/status');
      if (a.bool('json')) json(s);
      else {
        print(`cluster ${String(s.cluster!.id)} in ${layout.dir}`);
        print(`nodes: ${String(s.nodes!.up)}/${String(s.nodes!.total)} up   VMs: ${String(s.vms!.running)}/${String(s.vms!.total)} running   migrations running: ${String(s.migrations!.running)}`);
      }
      return 0;
    }
    case 'node':
      return nodeCommand(sub, a, client);
    case 'vm':
      return vmCommand(sub, a, client);
    case 'migration':
      return migrationCommand(sub, a, client);
    case 'switch':
      return switchCommand(sub, a, client);
    case 'events': {
      a.allow('json', 'since', 'follow').maxPositionals(0);
      type Ev = { atMs: number; type: string; message: string };
      const c = client();
      const show = (e: Ev) => print(a.bool('json') && a.bool('follow') ? JSON.stringify(e) : `${new Date(e.atMs).toISOString()}  ${e.type.padEnd(22)} ${e.message}`);
      const since = a.int('since') ?? 0;
      if (!a.bool('follow')) {
        const events = await c.call<Ev[]>('GET', `/api/v1/events?since=${since}`);
        if (a.bool('json')) json(events);
        else events.forEach(show);
        return 0;
      }
      // --follow: the server-sent event stream, one line (or JSON object) per event, until Ctrl-C.
      const res = await fetch(`${c.baseUrl}/api/v1/events?since=${since}`, { headers: { authorization: `Bearer ${c.authToken}`, accept: 'text/event-stream' } });
      if (!res.ok || !res.body) throw errors.clusterNotRunning(c.layout.dir);
      let buf = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += Buffer.from(chunk).toString('utf8');
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = block.split('\n').find((l) => l.startsWith('data: '));
          if (data) show(JSON.parse(data.slice(6)) as Ev);
        }
      }
      return 0;
    }
    case 'cluster': {
      if (sub === 'show') {
        a.allow('json').maxPositionals(0);
        const c = client();
        const s = await c.call<Record<string, unknown>>('GET', '/api/v1/cluster/settings');
        const baselines = await c.call<CpuBaseline[]>('GET', '/api/v1/cluster/cpu-baselines');
        if (a.bool('json')) {
          json({ settings: s, cpuBaselines: baselines });
          return 0;
        }
        print(table(['SETTING', 'VALUE'], Object.entries(s).map(([k, v]) => [k, String(v)])));
        print('\nprocessor compatibility baselines (features shared by all nodes of a vendor):');
        print(table(['VENDOR', 'NODES', 'BASE MODEL', 'FEATURES', 'TURNED OFF'],
          baselines.map((b) => [b.vendor, b.nodes.join(','), b.baseModel, b.features.length, b.disabled.join(' ') || '-'])));
        return 0;
      }
      if (sub === 'set') {
        a.allow().maxPositionals(2);
        const name = a.positional(0, 'a setting name');
        const value = a.positional(1, 'a value');
        const s = await client().call<Record<string, unknown>>('PUT', `/api/v1/cluster/settings/${encodeURIComponent(name)}`, { value });
        print(`${name} = ${String(s[name])}`);
        return 0;
      }
      if (sub === 'policy') {
        // cluster policy [--json] | cluster policy --policy FILE|NAME | cluster policy reset
        a.allow('policy', 'json').maxPositionals(1);
        const c = client();
        const reset = a.optionalPositional(0);
        if (reset !== undefined && reset !== 'reset') throw errors.usage(`'cluster policy' takes 'reset' or --policy FILE|NAME, got '${reset}'`);
        if (reset === 'reset') await c.call('PUT', '/api/v1/cluster/policy', {});
        else if (a.has('policy')) await c.call('PUT', '/api/v1/cluster/policy', policyFromFlags(a));
        const p = await c.call<{ overrides: Record<string, unknown>; effective: MigrationPolicy }>('GET', '/api/v1/cluster/policy');
        if (a.bool('json')) json(p);
        else print(table(['FIELD', 'VALUE', 'SOURCE'], Object.entries(p.effective).map(([k, v]) => [k, JSON.stringify(v), k in p.overrides ? 'cluster' : 'ferry default'])));
        return 0;
      }
      if (sub === 'balance') {
        a.allow('dry-run', 'json').maxPositionals(0);
        type Plan = { before: Record<string, number>; after: Record<string, number>; moves: { vm: string; from: string; to: string; memoryMiB: number }[]; thresholdPct: number };
        const c = client();
        const res = await c.call<{ plan: Plan; dryRun: boolean; migrations: { vm: string; id: string; to: string }[] }>('POST', '/api/v1/cluster/balance', { dryRun: a.bool('dry-run') });
        const p = res.plan;
        const loads = (l: Record<string, number>) => Object.entries(l).map(([n, v]) => `${n} ${v}%`).join(', ');
        if (!a.bool('json')) {
          print(`load now: ${loads(p.before)} (threshold ${p.thresholdPct} points)`);
          if (p.moves.length === 0) print('balanced: no moves');
          for (const m of p.moves) print(`  ${m.vm} (${m.memoryMiB} MiB): ${m.from} → ${m.to}`);
          if (p.moves.length) print(`load after: ${loads(p.after)}`);
        }
        let failed = 0;
        for (const m of res.migrations) {
          const final = await followMigration(c, m.id, () => {});
          if (final.report.status !== 'completed') failed++;
          if (!a.bool('json')) print(`  ${m.vm}: ${final.report.status}${final.report.error ? `: ${final.report.error}` : ''}`);
        }
        if (a.bool('json')) json(res);
        return failed ? 1 : 0;
      }
      throw errors.usage(`unknown command 'cluster ${sub ?? ''}' (try: cluster show, cluster set NAME VALUE, cluster balance, cluster policy)`);
    }
    case 'net':
      return netCommand(sub, a, client);
    case 'backup':
      return backupCommand(sub, a, client);
    case 'replica':
      return replicaCommand(sub, a, client);
    case 'image': {
      if (sub !== 'build') throw errors.usage(`unknown command 'image ${sub ?? ''}' (try: image build)`);
      a.allow().maxPositionals(0);
      const img = await buildImage((l) => process.stderr.write(l + '\n'));
      print(`guest image: ${img.kernelPath}, ${img.initrdPath} (${img.kernelPackage})`);
      return 0;
    }
    case 'demo': {
      a.allow('json', 'keep').maxPositionals(0);
      return runDemo({ json: a.bool('json') });
    }
    default:
      throw errors.usage(`unknown command '${cmd}' (see 'ferry help')`);
  }
}

async function nodeCommand(sub: string | undefined, a: Args, client: () => Client): Promise<number> {
  if (sub === 'maintenance') return drainCommand(a, client());
  if (sub === 'resume') {
    a.allow('json').maxPositionals(1);
    const n = await client().call<NodeRecord>('POST', `/api/v1/nodes/${encodeURIComponent(a.positional(0, 'a node name'))}/resume`, {});
    if (a.bool('json')) json(n);
    else print(`node ${n.name} is ${n.state}: it takes VMs again`);
    return 0;
  }
  if (sub === 'add') {
    a.allow('cpu-model', 'memory', 'nic-backend', 'json').maxPositionals(1);
    const c = client();
    const body: Record<string, unknown> = {};
    if (a.optionalPositional(0) !== undefined) body.name = a.optionalPositional(0);
    if (a.string('cpu-model') !== undefined) body.cpuModel = a.string('cpu-model');
    if (a.int('memory', '--memory (MiB)') !== undefined) body.memoryMiB = a.int('memory', '--memory (MiB)');
    if (a.string('nic-backend') !== undefined) body.nicBackend = a.string('nic-backend');
    const member = await c.call<{ name: string }>('POST', '/api/v1/nodes', body);
    const progress = new Progress();
    await up(c.layout, { progress: (l) => progress.update(l) });
    progress.done();
    const node = await c.call<NodeRecord>('GET', '/api/v1/nodes').then((ns) => (ns as unknown as NodeRecord[]).find((n) => n.name === member.name)!);
    if (a.bool('json')) json(node);
    else print(`node ${node.name} joined and is ${node.state} (${node.capabilities?.cpu.vendor} ${node.capabilities?.cpu.model}, migration address ${node.migrationAddress})`);
    return 0;
  }
  if (sub === 'remove') {
    a.allow('json').maxPositionals(1);
    const c = client();
    const name = a.positional(0, 'a node name');
    const res = await c.call<{ removed: string; clearedVms: string[] }>('DELETE', `/api/v1/nodes/${encodeURIComponent(name)}`);
    await stopNodeAgent(c.layout, name);
    if (a.bool('json')) json(res);
    else print(`node ${name} left the cluster${res.clearedVms.length ? `; stopped VMs ${res.clearedVms.join(', ')} will start elsewhere` : ''}`);
    return 0;
  }
  if (sub !== 'list') throw errors.usage(`unknown command 'node ${sub ?? ''}' (try: node list, node add, node remove, node maintenance, node resume)`);
  a.allow('json').maxPositionals(0);
  const nodes = await client().call<(NodeRecord & { vmCount: number; memoryFreeMiB: number })[]>('GET', '/api/v1/nodes');
  if (a.bool('json')) json(nodes);
  else {
    print(table(
      ['NAME', 'STATE', 'ACCEL', 'CPU VENDOR', 'CPU MODEL', 'NIC BACKEND', 'VMS', 'MEM FREE', 'MIGRATION ADDR'],
      nodes.map((n) => [n.name, n.state, n.capabilities?.accelerator, n.capabilities?.cpu.vendor, n.capabilities?.cpu.model,
        n.capabilities?.nic ? `${n.capabilities.nic.backend} (${n.capabilities.nic.offloads.length} offloads)` : '-', n.vmCount,
        `${n.memoryFreeMiB} MiB`, n.migrationAddress]),
    ));
  }
  return 0;
}

interface DrainResult {
  plan: { node: string; mode: 'live' | 'save'; steps: { order: number; vm: string; memoryMiB: number; to?: string; estimatedMs: number }[]; blockers: string[]; estimatedMs: number };
  dryRun: boolean;
  migrations: { vm: string; id: string; to: string }[];
}

async function drainCommand(a: Args, c: Client): Promise<number> {
  a.allow('drain', 'dry-run', 'json').maxPositionals(1);
  const node = a.positional(0, 'a node name');
  const mode = a.string('drain') ?? 'live';
  if (mode !== 'live' && mode !== 'save') throw errors.invalid('drain', `--drain must be live or save, got '${mode}'`);
  const res = await c.call<DrainResult>('POST', `/api/v1/nodes/${encodeURIComponent(node)}/maintenance`, { drain: mode, dryRun: a.bool('dry-run') });
  const p = res.plan;
  if (!a.bool('json')) {
    print(`${res.dryRun ? 'drain plan' : 'draining'} ${p.node} (${p.mode}): ${p.steps.length} VM(s), estimated ${ms(p.estimatedMs)}`);
    for (const s of p.steps) print(`  ${s.order}. ${s.vm} (${s.memoryMiB} MiB) ${s.to ? `→ ${s.to}` : '→ saved to the shared volume'}  ~${ms(s.estimatedMs)}`);
    if (p.blockers.length) {
      print('blockers:');
      for (const b of p.blockers) print(`  - ${b}`);
    }
  }
  if (res.dryRun) {
    if (a.bool('json')) json(res);
    return p.blockers.length ? 1 : 0;
  }
  // Follow every move until the node is empty.
  const progress = new Progress();
  const outcome = new Map<string, string>();
  const deadline = Date.now() + 10 * 60_000;
  while (outcome.size < p.steps.length && Date.now() < deadline) {
    if (p.mode === 'live') {
      for (const m of res.migrations) {
        const r = await c.call<MigrationRecord>('GET', `/api/v1/migrations/${m.id}`);
        if (r.status !== 'running' && r.status !== 'queued') outcome.set(m.vm, r.status === 'completed' ? `on ${m.to}` : `${r.status}: ${r.error ?? ''}`);
      }
    } else {
      const vms = await c.call<VmRecord[]>('GET', '/api/v1/vms');
      for (const s of p.steps) {
        const v = vms.find((x) => x.name === s.vm);
        if (v?.state === 'saved') outcome.set(s.vm, 'saved');
        else if (v && v.state === 'running' && v.error) outcome.set(s.vm, `not saved: ${v.error}`);
      }
    }
    progress.update(`draining ${p.node}: ${outcome.size}/${p.steps.length} done`);
    if (outcome.size < p.steps.length) await new Promise((r) => setTimeout(r, 300));
  }
  progress.done();
  const failed = p.steps.filter((s) => !/^(on |saved)/.test(outcome.get(s.vm) ?? ''));
  if (a.bool('json')) json({ ...res, outcome: Object.fromEntries(outcome) });
  else for (const s of p.steps) print(`  ${s.vm}: ${outcome.get(s.vm) ?? 'still moving'}`);
  return failed.length ? 1 : 0;
}

async function switchCommand(sub: string | undefined, a: Args, client: () => Client): Promise<number> {
  const enc = encodeURIComponent;
  const out = (v: unknown, line: string) => (a.bool('json') ? json(v) : print(line));
  switch (sub) {
    case 'show': {
      a.allow('json').maxPositionals(0);
      const macs = await client().call<{ mac: string; port: string; node: string; switch: string; vm: string | null; ageMs: number }[]>('GET', '/api/v1/switch/macs');
      if (a.bool('json')) json(macs);
      else print(table(['SWITCH', 'MAC', 'PORT', 'NODE', 'VM', 'AGE'], macs.map((m) => [m.switch, m.mac, m.port, m.node, m.vm, ms(m.ageMs)])));
      return 0;
    }
    case 'list': {
      a.allow('json').maxPositionals(0);
      const list = await client().call<SwitchView[]>('GET', '/api/v1/switches');
      if (a.bool('json')) json(list);
      else print(table(['NAME', 'BINDINGS', 'VMS', 'RUNNING', 'MAC AGEING'], list.map((s) => [
        s.name, s.bindings.map((b) => `${b.node}/${b.iface}`).join(' ') || '-', s.vms.join(',') || '-', s.runningVms.length, `${s.settings.macAgeingS} s`,
      ])));
      return 0;
    }
    case 'create': {
      a.allow('mac-ageing', 'json').maxPositionals(1);
      const body: Record<string, unknown> = { name: a.positional(0, 'a switch name') };
      if (a.string('mac-ageing') !== undefined) body.macAgeingS = a.string('mac-ageing');
      const s = await client().call<SwitchView>('POST', '/api/v1/switches', body);
      out(s, `switch ${s.name} created (MAC ageing ${s.settings.macAgeingS} s); bind it with 'ferry switch bind NODE IFACE --switch ${s.name}'`);
      return 0;
    }
    case 'set': {
      a.allow('mac-ageing', 'json').maxPositionals(1);
      const name = a.positional(0, 'a switch name');
      const s = await client().call<SwitchView>('PATCH', `/api/v1/switches/${enc(name)}`, { macAgeingS: a.string('mac-ageing') });
      out(s, `switch ${s.name}: MAC ageing ${s.settings.macAgeingS} s`);
      return 0;
    }
    case 'delete': {
      a.allow('json').maxPositionals(1);
      const s = await client().call<SwitchView>('DELETE', `/api/v1/switches/${enc(a.positional(0, 'a switch name'))}`);
      out(s, `switch ${s.name} deleted${s.bindings.length ? ` with its bindings ${s.bindings.map((b) => `${b.node}/${b.iface}`).join(', ')}` : ''}`);
      return 0;
    }
    case 'bindings': {
      a.allow('json').maxPositionals(1);
      const node = a.optionalPositional(0);
      const rows = await client().call<{ node: string; iface: string; switch: string | null }[]>('GET', `/api/v1/switch-bindings${node ? `?node=${enc(node)}` : ''}`);
      if (a.bool('json')) json(rows);
      else print(table(['NODE', 'IFACE', 'SWITCH'], rows.map((r) => [r.node, r.iface, r.switch ?? '-'])));
      return 0;
    }
    case 'bind': {
      a.allow('switch', 'json').maxPositionals(2);
      const node = a.positional(0, 'a node');
      const iface = a.positional(1, 'an interface');
      const sw = a.string('switch');
      if (!sw) throw errors.usage("'switch bind' needs --switch NAME");
      const s = await client().call<SwitchView>('POST', '/api/v1/switch-bindings', { node, iface, switch: sw });
      out(s, `switch ${s.name} bound to ${node}/${iface}`);
      return 0;
    }
    case 'unbind': {
      a.allow('json').maxPositionals(2);
      const node = a.positional(0, 'a node');
      const iface = a.positional(1, 'an interface');
      const r = await client().call<{ switch: string }>('DELETE', `/api/v1/switch-bindings/${enc(node)}/${enc(iface)}`);
      out(r, `switch ${r.switch} unbound from ${node}/${iface}`);
      return 0;
    }
    case 'scrub': {
      a.allow('inactive', 'settings', 'name', 'force', 'json').maxPositionals(0);
      const body = { inactive: a.bool('inactive'), settings: a.bool('settings'), force: a.bool('force'), ...(a.string('name') !== undefined ? { name: a.string('name') } : {}) };
      const r = await client().call<ScrubResult>('POST', '/api/v1/switches-scrub', body);
      if (a.bool('json')) {
        json(r);
        return 0;
      }
      const list = (xs: string[]) => xs.join(', ') || 'none';
      print(`removed switches: ${list(r.removedSwitches)}`);
      print(`removed bindings: ${list(r.removedBindings)}`);
      print(`settings reset: ${list(r.resetSettings)}`);
      print(`disconnected VMs: ${list(r.disconnectedVms)}`);
      return 0;
    }
    default:
      throw errors.usage(`unknown command 'switch ${sub ?? ''}' (try: switch list|create|set|delete|bindings|bind|unbind|scrub|show)`);
  }
}

async function backupCommand(sub: string | undefined, a: Args, client: () => Client): Promise<number> {
  const enc = encodeURIComponent;
  switch (sub) {
    case 'create': {
      a.allow('incremental', 'bandwidth', 'json').maxPositionals(1);
      const vm = a.positional(0, 'a VM name');
      const bw = a.string('bandwidth');
      if (bw !== undefined && !/^\d+$/.test(bw)) throw errors.usage(`--bandwidth must be a whole number of MiB/s, got '${bw}'`);
      const b = await client().call<BackupRecord>('POST', '/api/v1/backups', { vm, incremental: a.bool('incremental'), ...(bw ? { bandwidthMiBps: Number(bw) } : {}) }, 32 * 60_000);
      if (a.bool('json')) json(b);
      else {
        print(`backup ${b.id} of ${b.vm}: ${b.mode}, ${bytes(b.bytes ?? 0)} copied in ${ms((b.finishedAtMs ?? 0) - (b.startedAtMs ?? 0))}${(b.waitedMs ?? 0) >= 100 ? `, waited ${ms(b.waitedMs!)} for migrations` : ''}${b.movedTo ? ` (the VM moved to ${b.movedTo} meanwhile)` : ''}, verified, ${b.file}`);
        if (b.mergeError) print(`warning: the VM runs on the backup's overlay: ${b.mergeError}`);
      }
      return 0;
    }
    case 'list': {
      a.allow('json').maxPositionals(1);
      const vm = a.optionalPositional(0);
      const list = await client().call<BackupRecord[]>('GET', `/api/v1/backups${vm ? `?vm=${enc(vm)}` : ''}`);
      if (a.bool('json')) json(list);
      else print(table(['ID', 'VM', 'MODE', 'STATUS', 'TAKEN', 'COPIED', 'BASE'], list.map((b) => [
        b.id, b.vm, b.mode, b.status, b.startedAtMs ? new Date(b.startedAtMs).toISOString() : '-', bytes(b.bytes ?? 0), b.parent ?? '-',
      ])));
      return 0;
    }
    case 'restore': {
      a.allow('as', 'json').maxPositionals(1);
      const id = a.positional(0, 'a backup id');
      const vm = await client().call<VmRecord>('POST', `/api/v1/backups/${enc(id)}/restore`, a.string('as') ? { as: a.string('as') } : {}, 10 * 60_000);
      if (a.bool('json')) json(vm);
      else print(`backup ${id} restored ${a.string('as') ? `as VM ${vm.name}` : `onto VM ${vm.name}`} (stopped; 'ferry vm start ${vm.name}')`);
      return 0;
    }
    case 'delete': {
      a.allow('json').maxPositionals(1);
      const b = await client().call<BackupRecord>('DELETE', `/api/v1/backups/${enc(a.positional(0, 'a backup id'))}`);
      if (a.bool('json')) json(b);
      else print(`backup ${b.id} deleted`);
      return 0;
    }
    case 'schedule': {
      a.allow('every', 'keep', 'window', 'off', 'json').maxPositionals(1);
      const vm = a.positional(0, 'a VM name');
      let s: BackupSchedule;
      if (a.bool('off')) {
        s = await client().call<BackupSchedule>('DELETE', `/api/v1/backup-schedules/${enc(vm)}`);
        if (!a.bool('json')) print(`backup schedule of ${vm} removed (its backups stay)`);
      } else {
        const every = a.string('every');
        const keep = a.string('keep');
        if (!every || !keep) throw errors.usage("'backup schedule' needs --every DURATION and --keep N (or --off)");
        const n = /^\d+$/.test(keep) ? Number(keep) : NaN;
        if (Number.isNaN(n)) throw errors.usage(`--keep must be a whole number, got '${keep}'`);
        s = await client().call<BackupSchedule>('PUT', `/api/v1/backup-schedules/${enc(vm)}`, { every, keep: n, ...(a.string('window') ? { window: a.string('window') } : {}) });
        if (!a.bool('json')) print(`backups of ${vm} every ${s.every}, keeping the newest ${s.keep}${s.window ? `, only between ${s.window.text.replace('-', ' and ')}` : ''}`);
      }
      if (a.bool('json')) json(s);
      return 0;
    }
    case 'schedules': {
      a.allow('json').maxPositionals(0);
      const list = await client().call<BackupSchedule[]>('GET', '/api/v1/backup-schedules');
      if (a.bool('json')) json(list);
      else print(table(['VM', 'EVERY', 'KEEP', 'WINDOW', 'LAST RUN', 'LAST BACKUP', 'NOTE'], list.map((s) => [
        s.vm, s.every, String(s.keep), s.window?.text ?? 'any time', s.lastRunMs ? new Date(s.lastRunMs).toISOString() : '-', s.lastBackup ?? '-', s.lastError ?? '',
      ])));
      return 0;
    }
    default:
      throw errors.usage(`unknown command 'backup ${sub ?? ''}' (try: backup create VM [--incremental], backup list [VM], backup restore ID [--as NAME], backup delete ID, backup schedule VM --every D --keep N, backup schedules)`);
  }
}

async function netCommand(sub: string | undefined, a: Args, client: () => Client): Promise<number> {
  if (sub === 'list') {
    a.allow('json').maxPositionals(0);
    const nets = await client().call<NetworkView[]>('GET', '/api/v1/networks');
    if (a.bool('json')) json(nets);
    else print(table(['NAME', 'ROLE', 'METRIC', 'SUBNET', 'STATE', 'NODES'], nets.map((n) => [
      n.name, n.role, n.metric, n.subnet, n.state,
      n.nodes.map((x) => `${x.node}=${x.address}${x.state === 'up' ? '' : ` (${x.state}${x.error ? `: ${x.error}` : ''})`}`).join(' '),
    ])));
    return 0;
  }
  if (sub === 'set') {
    a.allow('role', 'metric', 'json').maxPositionals(1);
    const name = a.positional(0, 'a network name');
    const body: Record<string, unknown> = {};
    if (a.string('role') !== undefined) body.role = a.string('role');
    if (a.string('metric') !== undefined) body.metric = a.string('metric');
    const n = await client().call<NetworkView>('PUT', `/api/v1/networks/${encodeURIComponent(name)}`, body);
    if (a.bool('json')) json(n);
    else print(`network ${n.name}: role ${n.role}, metric ${n.metric}`);
    return 0;
  }
  throw errors.usage(`unknown command 'net ${sub ?? ''}' (try: net list, net set NAME --role R --metric M)`);
}

type VmView = VmRecord & { migration?: Partial<MigrationRecord>; nic?: { backend: string; offered: string[]; negotiated: string[] } };

async function vmCommand(sub: string | undefined, a: Args, client: () => Client): Promise<number> {
  switch (sub) {
    case 'create': {
      a.allow('memory', 'cpus', 'disk', 'workload', 'node', 'compat', 'switch', 'offloads', 'json').maxPositionals(1);
      const body: Record<string, unknown> = { name: a.positional(0, 'a VM name') };
      for (const [flag, field] of [['memory', 'memoryMiB'], ['cpus', 'cpus'], ['disk', 'diskGiB']] as const) {
        const v = a.string(flag);
        if (v !== undefined) body[field] = /^\d+$/.test(v) ? Number(v) : v;
      }
      if (a.string('workload') !== undefined) body.workload = a.string('workload');
      if (a.string('node') !== undefined) body.node = a.string('node');
      if (a.string('switch') !== undefined) body.switch = a.string('switch');
      if (a.string('offloads') !== undefined) body.offloads = a.string('offloads');
      if (a.has('compat')) body.compat = a.raw('compat') === true ? true : a.raw('compat');
      const vm = await client().call<VmRecord>('POST', '/api/v1/vms', body);
      if (a.bool('json')) json(vm);
      else print(`VM ${vm.name} created: ${vm.memoryMiB} MiB, ${vm.cpus} CPU, ${vm.diskGiB} GiB disk, ip ${vm.ip}, mac ${vm.mac}, workload ${vm.workload}${vm.compat ? ', processor compatibility mode on' : ''}`);
      return 0;
    }
    case 'set': {
      // `--compat on` and `--compat=on` both work: compat is also a bare flag of `vm create`.
      a.allow('compat', 'switch', 'policy', 'json').maxPositionals(2);
      const name = a.positional(0, 'a VM name');
      if (!a.has('compat') && !a.has('switch') && !a.has('policy')) throw errors.usage("'vm set' needs a setting: --compat on|off, --switch NAME or --policy FILE|NAME|none");
      const body: Record<string, unknown> = {};
      if (a.has('policy')) body.policy = a.string('policy') === 'none' ? null : policyFromFlags(a);
      if (a.has('compat')) body.compat = a.raw('compat') === true ? a.positional(1, 'a value for --compat (on or off)') : a.maxPositionals(1).raw('compat');
      else a.maxPositionals(1);
      if (a.has('switch')) body.switch = a.string('switch');
      const vm = await client().call<VmRecord>('PATCH', `/api/v1/vms/${encodeURIComponent(name)}`, body);
      if (a.bool('json')) json(vm);
      else if (a.has('policy') && !a.has('compat') && !a.has('switch')) print(`VM ${vm.name}: migration policy ${vm.policy ? JSON.stringify(vm.policy) : 'from the cluster default'}`);
      else print(`VM ${vm.name}: processor compatibility mode ${vm.compat ? 'on' : 'off'}, switch ${vm.switch || '(disconnected)'} (applies at its next start)`);
      return 0;
    }
    case 'start':
    case 'stop': {
      a.allow('node', 'json').maxPositionals(1);
      const name = a.positional(0, 'a VM name');
      const body = sub === 'start' && a.string('node') ? { node: a.string('node') } : {};
      const vm = await client().call<VmRecord & { restoredFrom?: string }>('POST', `/api/v1/vms/${encodeURIComponent(name)}/${sub}`, body, 120_000);
      if (a.bool('json')) json(vm);
      else print(sub === 'start' ? `VM ${vm.name} running on ${vm.node}${vm.restoredFrom ? ' (restored from its saved state)' : ''}` : `VM ${vm.name} stopped`);
      return 0;
    }
    case 'move-storage': {
      a.allow('to', 'json').maxPositionals(1);
      const name = a.positional(0, 'a VM name');
      const to = a.string('to');
      if (!to) throw errors.usage("'vm move-storage' needs --to DIRECTORY");
      const vm = await client().call<VmRecord & { movedBytes: number; ms: number }>('POST', `/api/v1/vms/${encodeURIComponent(name)}/move-storage`, { to: path.resolve(to) }, 32 * 60_000);
      if (a.bool('json')) json(vm);
      else print(`VM ${vm.name}'s disk moved to ${vm.diskPath}: ${bytes(vm.movedBytes)} copied in ${ms(vm.ms)}${vm.state === 'running' ? ', the VM kept running' : ''}`);
      return 0;
    }
    case 'save': {
      a.allow('json').maxPositionals(1);
      const vm = await client().call<VmRecord>('POST', `/api/v1/vms/${encodeURIComponent(a.positional(0, 'a VM name'))}/save`, {}, 120_000);
      if (a.bool('json')) json(vm);
      else print(`VM ${vm.name} saved (its memory is in ${vm.savedState}); 'ferry vm start ${vm.name}' restores it`);
      return 0;
    }
    case 'delete': {
      a.allow().maxPositionals(1);
      const name = a.positional(0, 'a VM name');
      await client().call('DELETE', `/api/v1/vms/${encodeURIComponent(name)}`);
      print(`VM ${name} deleted`);
      return 0;
    }
    case 'list': {
      a.allow('json').maxPositionals(0);
      const vms = await client().call<VmView[]>('GET', '/api/v1/vms');
      if (a.bool('json')) json(vms);
      else print(table(['NAME', 'STATE', 'NODE', 'MEMORY', 'CPUS', 'IP', 'WORKLOAD'],
        vms.map((v) => [v.name, v.state + (v.migration ? ` (${v.migration.phase} → ${v.migration.to})` : ''), v.node || '-', `${v.memoryMiB} MiB`, v.cpus, v.ip, v.workload])));
      return 0;
    }
    case 'show': {
      a.allow('json').maxPositionals(1);
      const vm = await client().call<VmView>('GET', `/api/v1/vms/${encodeURIComponent(a.positional(0, 'a VM name'))}`);
      if (a.bool('json')) {
        json({ ...vm, disk: vm.diskPath });
        return 0;
      }
      const rows: [string, string][] = [
        ['name', vm.name], ['state', vm.state], ['node', vm.node || '-'], ['memoryMiB', String(vm.memoryMiB)], ['cpus', String(vm.cpus)],
        ['mac', vm.mac], ['ip', vm.ip], ['workload', vm.workload], ['disk', `${vm.diskPath} (${vm.diskGiB} GiB)`],
        ['compat', vm.compat ? 'on' : 'off'],
        ['switch', vm.switch === '' ? '(disconnected)' : vm.switch ?? 'default'],
      ];
      if (vm.guestCpu) rows.push(['cpu', `${vm.guestCpu.vendor} ${vm.guestCpu.model} (${vm.guestCpu.features.length} features)`]);
      rows.push(['offloads', vm.nicOffloads ? vm.nicOffloads.join(',') || 'none' : 'all']);
      if (vm.nic) rows.push(['nic', `${vm.nic.backend} on ${vm.node}; the guest uses ${vm.nic.negotiated.join(',') || 'no offloads'}`]);
      if (vm.error) rows.push(['error', vm.error]);
      if (vm.migration) {
        const p = vm.migration.progress;
        rows.push(['migration', `${vm.migration.id}: ${vm.migration.from} → ${vm.migration.to}, step ${vm.migration.phase}`]);
        if (p) rows.push(['progress', progressLine(p)]);
      }
      for (const [k, v] of rows) print(`${k.padEnd(10)} ${v}`);
      return 0;
    }
    case 'ping': {
      a.allow('json').maxPositionals(1);
      const name = a.positional(0, 'a VM name');
      const r = await client().call<{ vm: string; ip: string; answered: boolean; rttMs: number | null }>('POST', `/api/v1/vms/${encodeURIComponent(name)}/ping`, {});
      if (a.bool('json')) json(r);
      else print(r.answered ? `${r.vm} (${r.ip}) answered through the virtual switch in ${r.rttMs} ms` : `${r.vm} (${r.ip}) did not answer`);
      return r.answered ? 0 : 1;
    }
    case 'console':
      a.allow().maxPositionals(1);
      return attachConsole(client(), a.positional(0, 'a VM name'));
    case 'migrate': {
      a.allow('to', 'json', 'bandwidth', 'max-downtime', 'quick', 'check', 'plan', 'policy', 'postcopy', 'with-storage').maxPositionals(1);
      const name = a.positional(0, 'a VM name');
      const to = a.string('to');
      if (!to) throw errors.usage("'vm migrate' needs --to NODE");
      const policy = policyFromFlags(a);
      const mode: 'live' | 'quick' = a.bool('quick') ? 'quick' : 'live';
      const withStorage = a.string('with-storage');
      const body = { to, mode, ...(policy ? { policy } : {}), ...(withStorage !== undefined ? { withStorage: path.resolve(withStorage) } : {}) };
      if (a.bool('plan')) {
        const r = await client().call<PlanResult>('POST', `/api/v1/vms/${encodeURIComponent(name)}/migrate`, { ...body, plan: true }, 120_000);
        if (a.bool('json')) json(r);
        else printPlan(name, r);
        return r.ok ? 0 : 1;
      }
      if (a.bool('check')) {
        const r = await client().call<{ ok: boolean; blockers: string[]; to: string }>('POST', `/api/v1/vms/${encodeURIComponent(name)}/migrate`, { ...body, check: true });
        if (a.bool('json')) json(r);
        else if (r.ok) print(`${name} can ${mode}-migrate to ${r.to}: no blockers`);
        else {
          print(`${name} cannot ${mode}-migrate to ${r.to}:`);
          for (const b of r.blockers) print(`  - ${b}`);
        }
        return r.ok ? 0 : 1;
      }
      return migrate(client(), name, body, a.bool('json'));
    }
    default:
      throw errors.usage(`unknown command 'vm ${sub ?? ''}' (see 'ferry help')`);
  }
}

function progressLine(p: NonNullable<MigrationRecord['progress']>): string {
  return `${p.status === 'postcopy' ? 'post-copy, ' : ''}round ${p.rounds}, ${bytes(p.transferredBytes)} sent, ${bytes(p.remainingBytes)} left, dirty ${bytes(p.dirtyRateBytesPerSec)}/s, ` +
    `${bytes(p.throughputBytesPerSec)}/s` + (p.throttlePercent ? `, throttle ${p.throttlePercent}%` : '') +
    (p.estimatedRemainingMs !== undefined ? `, ~${ms(p.estimatedRemainingMs)} left` : '');
}

export async function followMigration(c: Client, id: string, onUpdate: (m: MigrationRecord) => void, signal?: AbortSignal): Promise<MigrationRecord & { report: MigrationReport }> {
  for (;;) {
    const m = await c.call<MigrationRecord & { report?: MigrationReport }>('GET', `/api/v1/migrations/${id}`);
    onUpdate(m);
    if (m.report) return m as MigrationRecord & { report: MigrationReport };
    await new Promise((r) => setTimeout(r, signal?.aborted ? 100 : 200));
  }
}

/**
 * A migration policy from the command line: `--policy` names a preset
 * (ferry, qemu-defaults) or a JSON file; `--bandwidth`, `--max-downtime` and
 * `--postcopy` override single fields.
 */
function policyFromFlags(a: Args): string | Record<string, unknown> | undefined {
  let policy: string | Record<string, unknown> | undefined;
  const given = a.string('policy');
  if (given !== undefined && fs.existsSync(given)) {
    try {
      policy = JSON.parse(fs.readFileSync(given, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw errors.invalid('policy', `policy file ${given} is not valid JSON: ${(e as Error).message}`);
    }
  } else if (given !== undefined) {
    if (!NAMED_POLICIES[given]) throw errors.invalid('policy', `'${given}' is neither a policy file nor a named policy (${Object.keys(NAMED_POLICIES).join(', ')})`);
    policy = given;
  }
  const bw = a.int('bandwidth', '--bandwidth (MiB/s)');
  const dt = a.int('max-downtime', '--max-downtime (ms)');
  if (bw === undefined && dt === undefined && !a.bool('postcopy')) return policy;
  const out: Record<string, unknown> = typeof policy === 'string' ? { ...NAMED_POLICIES[policy] } : { ...(policy ?? {}) };
  if (bw !== undefined) out.bandwidthMiBps = bw;
  if (dt !== undefined) out.downtimeMs = dt;
  if (a.bool('postcopy')) out.escalation = ['auto-converge', 'postcopy'];
  return out;
}

interface PlanResult {
  ok: boolean;
  blockers: string[];
  from?: string;
  to: string;
  policy: MigrationPolicy;
  network?: MigrationNetwork;
  predicted?: Prediction;
}

function printPlan(name: string, r: PlanResult): void {
  if (!r.ok) {
    print(`${name} cannot move to ${r.to}:`);
    for (const b of r.blockers) print(`  - ${b}`);
    return;
  }
  const p = r.predicted;
  print(`plan: ${name} ${r.from} → ${r.to}${r.network ? ` over ${r.network.name}` : ''}`);
  if (!p) {
    print('  quick migration: the state moves through the shared volume (no prediction)');
    return;
  }
  const i = p.input;
  print(`  measured: guest RAM ${bytes(i.ramBytes)}, not zero ${bytes(i.nonZeroBytes)}, dirty rate ${bytes(i.dirtyRateBytesPerSec)}/s, link ${bytes(i.linkBytesPerSec)}/s`);
  print(`  strategy: ${p.strategy}: ${p.reason}`);
  print(`  predicted: total ${ms(p.totalMs)} (transfer ${ms(p.transferMs)}), ${p.rounds} rounds, downtime ${ms(p.downtimeMs)}, ${bytes(p.bytes)} sent` +
    (p.throttlePercent ? `, throttle ${p.throttlePercent}%` : ''));
  const pol = r.policy;
  print(`  policy: bandwidth ${pol.bandwidthMiBps === null ? 'link' : `${pol.bandwidthMiBps} MiB/s`}, downtime ${pol.downtimeMs} ms, escalation ${pol.escalation.join(' → ') || 'none'} → abort, ` +
    `timeouts ${pol.completionTimeoutSPerGiB} s/GiB, ${pol.progressTimeoutS} s without progress`);
}

async function migrate(c: Client, name: string, req: { to: string; mode: 'live' | 'quick'; policy?: unknown }, asJson: boolean): Promise<number> {
  const started = await c.call<MigrationRecord>('POST', `/api/v1/vms/${encodeURIComponent(name)}/migrate`, req);
  const progress = new Progress();
  const ac = new AbortController();
  const onSigint = () => {
    if (ac.signal.aborted) return;
    ac.abort();
    progress.done();
    process.stderr.write(`cancelling migration ${started.id}…\n`);
    void c.call('POST', `/api/v1/migrations/${started.id}/cancel`, {}).catch(() => {});
  };
  process.on('SIGINT', onSigint);
  try {
    const final = await followMigration(c, started.id, (m) => {
      const stepNo = STEPS.indexOf(m.phase as (typeof STEPS)[number]) + 1;
      const step = stepNo > 0 ? `step ${stepNo}/7 ${m.phase}` : m.phase;
      progress.update(`migrating ${name} ${m.from} → ${m.to}: ${step}${m.phase === 'memory' && m.progress ? ` — ${progressLine(m.progress)}` : ''}`);
    }, ac.signal);
    progress.done();
    const r = final.report;
    if (asJson) json(r);
    else {
      print(`migration ${r.id}: ${r.vm} ${r.from} → ${r.to} ${r.status}${r.error ? `: ${r.error}` : ''}`);
      print(`  total ${ms(r.totalMs)}, downtime ${ms(r.downtimeMs)} (QEMU), guest blackout ${ms(r.guestBlackoutMs)} (probe), ${bytes(r.transferredBytes)} in ${r.rounds} rounds` +
        (r.pausedMs !== undefined ? `, paused ${ms(r.pausedMs)}` : ''));
      print(`  steps: ${r.steps.map((s) => `${s.name} ${ms(s.ms)}`).join(', ')}`);
      if (r.predicted) {
        print(`  predicted: ${r.predicted.strategy}, total ${ms(r.predicted.totalMs)}, ${r.predicted.rounds} rounds, downtime ${ms(r.predicted.downtimeMs)}` +
          (r.totalMs ? ` (actual total ${ms(r.totalMs)}: ${r.predicted.totalMs >= r.totalMs ? '+' : ''}${Math.round(((r.predicted.totalMs - r.totalMs) / r.totalMs) * 100)}%)` : ''));
      }
      if (r.maxThrottlePercent) print(`  auto-converge throttled the guest up to ${r.maxThrottlePercent}%`);
      if (r.postcopyAfterMs !== undefined) print(`  post-copy started after ${ms(r.postcopyAfterMs)}`);
      if (r.escalation) print(`  policy: ${r.escalation}`);
      if (r.network) {
        print(`  network: ${r.network.name} (${r.network.sourceAddress} → ${r.network.targetAddress})` +
          (r.network.skipped.length ? `; skipped ${r.network.skipped.map((s) => `${s.network} (${s.reason})`).join(', ')}` : ''));
      } else if (r.mode === 'quick') print('  state moved through the shared volume');
      for (const w of r.warnings ?? []) print(`  warning: ${w}`);
    }
    return r.status === 'completed' ? 0 : 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

async function migrationCommand(sub: string | undefined, a: Args, client: () => Client): Promise<number> {
  switch (sub) {
    case 'list': {
      a.allow('json').maxPositionals(0);
      const list = await client().call<(MigrationRecord & { queuePosition?: number })[]>('GET', '/api/v1/migrations');
      if (a.bool('json')) json(list);
      else print(table(['ID', 'VM', 'MODE', 'FROM', 'TO', 'STATUS', 'STEP', 'PRIORITY', 'TOTAL', 'DOWNTIME', 'BLACKOUT'],
        list.map((m) => [m.id, m.vm, m.mode, m.from, m.to, m.status + (m.queuePosition ? ` #${m.queuePosition}` : ''), m.phase, m.priority,
          ms(m.totalMs), ms(m.downtimeMs), ms(m.guestBlackoutMs)])));
      return 0;
    }
    case 'show': {
      a.allow('json').maxPositionals(1);
      const m = await client().call<MigrationRecord & { report?: MigrationReport }>('GET', `/api/v1/migrations/${encodeURIComponent(a.positional(0, 'a migration id'))}`);
      if (a.bool('json')) json(m);
      else {
        print(`${m.id}: ${m.vm} ${m.from} → ${m.to} (${m.mode}) ${m.status}, step ${m.phase}`);
        if (m.progress && m.status === 'running') print(`  ${progressLine(m.progress)}`);
        for (const s of m.steps) print(`  ${s.name.padEnd(8)} ${ms(s.ms)}`);
        if (m.report) print(`  total ${ms(m.totalMs)}, downtime ${ms(m.downtimeMs)}, guest blackout ${ms(m.guestBlackoutMs)}, ${bytes(m.transferredBytes)}`);
        if (m.error) print(`  error: ${m.error}`);
      }
      return 0;
    }
    case 'cancel': {
      a.allow().maxPositionals(1);
      const id = a.positional(0, 'a migration id');
      await client().call('POST', `/api/v1/migrations/${encodeURIComponent(id)}/cancel`, {});
      print(`migration ${id}: cancel requested`);
      return 0;
    }
    default:
      throw errors.usage(`unknown command 'migration ${sub ?? ''}' (see 'ferry help')`);
  }
}

async function attachConsole(c: Client, name: string): Promise<number> {
  const vm = await c.call<VmRecord>('GET', `/api/v1/vms/${encodeURIComponent(name)}`);
  if (vm.state !== 'running') throw errors.invalidState(`VM '${name}' is ${vm.state}`);
  const res = await fetch(`${c.baseUrl}/api/v1/vms/${encodeURIComponent(name)}/console?follow=1`, {
    headers: { authorization: `Bearer ${c.authToken}` },
  });
  if (!res.ok || !res.body) throw errors.internal(`console: HTTP ${res.status}`);
  process.stderr.write(`attached to ${name}'s console (Ctrl-] detaches)\n`);
  const stdin = process.stdin;
  const detach = new Promise<void>((resolve) => {
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', (d: Buffer) => {
      if (d.includes(0x1d)) return resolve();
      void c.call('POST', `/api/v1/vms/${encodeURIComponent(name)}/console`, { data: d.toString('utf8') }).catch(() => {});
    });
    // Input from a pipe: show what the VM answers for a moment, then detach.
    stdin.on('end', () => setTimeout(resolve, 1500));
  });
  const reader = res.body.getReader();
  const pump = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      process.stdout.write(value);
    }
  })();
  await Promise.race([detach, pump]);
  if (stdin.isTTY) stdin.setRawMode(false);
  await reader.cancel().catch(() => {});
  process.stderr.write('\ndetached\n');
  return 0;
}

export async function cli(argv: string[]): Promise<number> {
  try {
    return await main(argv);
  } catch (e) {
    const err = toFerryError(e);
    process.stderr.write(`error: ${err.message}\n`);
    return err.exitCode;
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/ferry') || process.argv[1]?.endsWith('cli/main.js')) {
  // A closed pipe (`ferry … | head -1`) ends the command quietly, like other Unix tools.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  void cli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
    // Let pending writes flush, then leave even if a console socket lingers.
    setTimeout(() => process.exit(code), 50).unref();
  });
}

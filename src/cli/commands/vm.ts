/** `ferry vm …`: create, set, start, stop, save, delete, list, show, ping, console, migrate, move-storage. */
import fs from 'node:fs';
import type { Command } from 'commander';
import type { Output } from '../../api/client.js';
import { vmRoutes } from '../../api/routes/vms.js';
import { migrationRoutes } from '../../api/routes/migrations.js';
import { systemClock } from '../../domain/clock.js';
import { errors } from '../../domain/errors.js';
import { STEPS, type MigrationRecord } from '../../domain/migration.js';
import { NAMED_POLICIES, namedPolicy } from '../../domain/policy.js';
import { describeRunState, RunState } from '../../domain/records.js';
import { describeHa } from '../../domain/ha.js';
import { type Cluster, command, followMigration, numberOrText, wholeNumber } from '../context.js';
import { Progress, bytes, json, ms, print } from '../output.js';

type VmView = Output<typeof vmRoutes.show>;
type PlanResult = Extract<Output<typeof vmRoutes.migrate>, { plan: true }>;

/**
 * A migration policy from the command line: `--policy` names a preset
 * (ferry, qemu-defaults) or a JSON file; `--bandwidth`, `--max-downtime` and
 * `--postcopy` override single fields.
 */
export function policyFromFlags(o: {
  policy?: string;
  bandwidth?: string;
  maxDowntime?: string;
  postcopy?: boolean;
}): string | Record<string, unknown> | undefined {
  let policy: string | Record<string, unknown> | undefined;
  const given = o.policy;
  if (given !== undefined && fs.existsSync(given)) {
    try {
      policy = JSON.parse(fs.readFileSync(given, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw errors.invalid('policy', `policy file ${given} is not valid JSON: ${(e as Error).message.split('\n')[0]}`);
    }
  } else if (given !== undefined) {
    if (!namedPolicy(given))
      throw errors.invalid('policy', `'${given}' is neither a policy file nor a named policy (${Object.keys(NAMED_POLICIES).join(', ')})`);
    policy = given;
  }
  const int = (v: string | undefined, label: string) => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw errors.invalid(label, `${label} must be a whole number, got '${v}'`);
    return Number(v);
  };
  const bw = int(o.bandwidth, '--bandwidth (MiB/s)');
  const dt = int(o.maxDowntime, '--max-downtime (ms)');
  if (bw === undefined && dt === undefined && !o.postcopy) return policy;
  const out: Record<string, unknown> = typeof policy === 'string' ? { ...namedPolicy(policy) } : { ...(policy ?? {}) };
  if (bw !== undefined) out.bandwidthMiBps = bw;
  if (dt !== undefined) out.downtimeMs = dt;
  if (o.postcopy) out.escalation = ['auto-converge', 'postcopy'];
  return out;
}

/** A VM's state as an operator needs it: a running VM whose guest does not run says what it is instead. */
function shownState(v: { state: string; runState?: RunState }): string {
  return v.state === 'running' && v.runState && v.runState !== RunState.Running ? v.runState : v.state;
}

function progressLine(p: NonNullable<MigrationRecord['progress']>): string {
  return (
    `${p.status === 'postcopy' ? 'post-copy, ' : ''}round ${p.rounds}, ${bytes(p.transferredBytes)} sent, ${bytes(p.remainingBytes)} left, dirty ${bytes(p.dirtyRateBytesPerSec)}/s, ` +
    `${bytes(p.throughputBytesPerSec)}/s` +
    (p.throttlePercent ? `, throttle ${p.throttlePercent}%` : '') +
    (p.estimatedRemainingMs !== undefined ? `, ~${ms(p.estimatedRemainingMs)} left` : '')
  );
}
export { progressLine };

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
  print(
    `  measured: guest RAM ${bytes(i.ramBytes)}, not zero ${bytes(i.nonZeroBytes)}, dirty rate ${bytes(i.dirtyRateBytesPerSec)}/s, link ${bytes(i.linkBytesPerSec)}/s`,
  );
  print(`  strategy: ${p.strategy}: ${p.reason}`);
  print(
    `  predicted: total ${ms(p.totalMs)} (transfer ${ms(p.transferMs)}), ${p.rounds} rounds, downtime ${ms(p.downtimeMs)}, ${bytes(p.bytes)} sent` +
      (p.throttlePercent ? `, throttle ${p.throttlePercent}%` : ''),
  );
  const pol = r.policy;
  print(
    `  policy: bandwidth ${pol.bandwidthMiBps === null ? 'link' : `${pol.bandwidthMiBps} MiB/s`}, downtime ${pol.downtimeMs} ms, escalation ${pol.escalation.join(' → ') || 'none'} → abort, ` +
      `timeouts ${pol.completionTimeoutSPerGiB} s/GiB, ${pol.progressTimeoutS} s without progress`,
  );
}

async function migrate(c: Cluster, name: string, body: Record<string, unknown>, asJson: boolean): Promise<number> {
  const started = (await c.api.call(vmRoutes.migrate, { params: { name }, body: body as never })) as MigrationRecord;
  const progress = new Progress();
  const ac = new AbortController();
  const onSigint = () => {
    if (ac.signal.aborted) return;
    ac.abort();
    progress.done();
    process.stderr.write(`cancelling migration ${started.id}…\n`);
    void c.api.call(migrationRoutes.cancel, { params: { id: started.id } }).catch(() => {});
  };
  process.on('SIGINT', onSigint);
  try {
    const final = await followMigration(
      c.api,
      started.id,
      (m) => {
        const stepNo = STEPS.indexOf(m.phase as (typeof STEPS)[number]) + 1;
        const step = stepNo > 0 ? `step ${stepNo}/7 ${m.phase}` : m.phase;
        progress.update(`migrating ${name} ${m.from} → ${m.to}: ${step}${m.phase === 'memory' && m.progress ? ` — ${progressLine(m.progress)}` : ''}`);
      },
      (t) => systemClock.sleep(ac.signal.aborted ? 100 : t),
    );
    progress.done();
    const r = final.report;
    if (asJson) json(r);
    else {
      print(`migration ${r.id}: ${r.vm} ${r.from} → ${r.to} ${r.status}${r.error ? `: ${r.error}` : ''}`);
      print(
        `  total ${ms(r.totalMs)}, downtime ${ms(r.downtimeMs)} (QEMU), guest blackout ${ms(r.guestBlackoutMs)} (probe), ${bytes(r.transferredBytes)} in ${r.rounds} rounds` +
          (r.pausedMs !== undefined ? `, paused ${ms(r.pausedMs)}` : ''),
      );
      print(`  steps: ${r.steps.map((s) => `${s.name} ${ms(s.ms)}`).join(', ')}`);
      if (r.predicted) {
        print(
          `  predicted: ${r.predicted.strategy}, total ${ms(r.predicted.totalMs)}, ${r.predicted.rounds} rounds, downtime ${ms(r.predicted.downtimeMs)}` +
            (r.totalMs
              ? ` (actual total ${ms(r.totalMs)}: ${r.predicted.totalMs >= r.totalMs ? '+' : ''}${Math.round(((r.predicted.totalMs - r.totalMs) / r.totalMs) * 100)}%)`
              : ''),
        );
      }
      if (r.maxThrottlePercent) print(`  auto-converge throttled the guest up to ${r.maxThrottlePercent}%`);
      if (r.postcopyAfterMs !== undefined) print(`  post-copy started after ${ms(r.postcopyAfterMs)}`);
      if (r.escalation) print(`  policy: ${r.escalation}`);
      if (r.network) {
        print(
          `  network: ${r.network.name} (${r.network.sourceAddress} → ${r.network.targetAddress})` +
            (r.network.skipped.length ? `; skipped ${r.network.skipped.map((s) => `${s.network} (${s.reason})`).join(', ')}` : ''),
        );
      } else if (r.mode === 'quick') print('  state moved through the shared volume');
      for (const w of r.warnings ?? []) print(`  warning: ${w}`);
    }
    return r.status === 'completed' ? 0 : 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

async function attachConsole(c: Cluster, name: string): Promise<number> {
  const vm = await c.api.call(vmRoutes.show, { params: { name } });
  if (vm.state !== 'running') throw errors.invalidState(`VM '${name}' is ${vm.state}`);
  const res = await c.api.open(vmRoutes.console, { params: { name }, query: { follow: '1' } });
  if (!res.body) throw errors.internal(`console: HTTP ${res.status}`);
  process.stderr.write(`attached to ${name}'s console (Ctrl-] detaches)\n`);
  const stdin = process.stdin;
  const detach = new Promise<void>((resolve) => {
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', (d: Buffer) => {
      if (d.includes(0x1d)) return resolve();
      void c.api.call(vmRoutes.consoleInput, { params: { name }, body: { data: d.toString('utf8') } }).catch(() => {});
    });
    // Input from a pipe: show what the VM answers for a moment, then detach.
    stdin.on('end', () => void systemClock.sleep(1500).then(resolve));
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

/** --cloud-init and --ssh-key, read here and checked by the same rules as the API's, so a bad file is named before anything is sent. */
async function readCloudInit(userDataFile: string | undefined, keyFile: string | undefined): Promise<{ userData?: string; sshKeys?: string[] } | undefined> {
  if (userDataFile === undefined && keyFile === undefined) return undefined;
  const { parseCloudConfig, parseSshKeys } = await import('../../domain/cloud-init.js');
  const read = (file: string, what: string) => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw errors.usage(`cannot read the ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  const out: { userData?: string; sshKeys?: string[] } = {};
  if (userDataFile !== undefined) {
    const text = read(userDataFile, 'cloud-init file');
    const parsed = parseCloudConfig(text, userDataFile);
    if ('error' in parsed) throw errors.usage(parsed.error);
    out.userData = text;
  }
  if (keyFile !== undefined) {
    const keys = parseSshKeys(read(keyFile, 'SSH key file'), keyFile);
    if (!Array.isArray(keys)) throw errors.usage(keys.error);
    out.sshKeys = keys;
  }
  return out;
}

/** `vm list`'s HA column: `on 200`, `held` (vm show says why) or `-`. */
function haColumn(v: Pick<VmView, 'ha' | 'haHeld'>): string {
  if (!v.ha) return '-';
  return v.haHeld ? 'held' : `on ${v.ha.priority}`;
}

function bootLine(b: NonNullable<VmView['boot']>): string {
  const disk = b.image ? `${b.linked ? 'linked clone of' : 'copy of'} image ${b.image}` : 'own disk';
  return [`${b.firmware === 'uefi' ? 'UEFI' : 'BIOS'} from ${disk}`, ...(b.iso ? [`ISO ${b.iso} first`] : []), ...(b.seedPath ? ['cloud-init seed'] : [])].join(
    ', ',
  );
}

function guestRows(g: NonNullable<VmView['guest']>): [string, string][] {
  if (!g.agent) return [['guest', `no agent: ${g.reason}`]];
  const rows: [string, string][] = [
    ['guest', [g.os ?? 'unknown OS', g.kernel ? `kernel ${g.kernel}` : '', g.hostname ? `hostname ${g.hostname}` : ''].filter(Boolean).join(', ')],
  ];
  for (const n of g.interfaces) rows.push(['guest nic', `${n.name}${n.mac ? ` ${n.mac}` : ''}: ${n.addresses.join(' ') || 'no address'}`]);
  if (g.cloudInit)
    rows.push([
      'cloud-init',
      g.cloudInit.state === 'done'
        ? `applied${g.cloudInit.datasource ? ` (${g.cloudInit.datasource})` : ''}`
        : g.cloudInit.state === 'error'
          ? `failed: ${(g.cloudInit.errors ?? []).join('; ')}`
          : 'not run',
    ]);
  return rows;
}

export function vmCommands(program: Command, connect: () => Cluster, done: (code: number) => void): void {
  const vm = command(program, 'vm', 'VMs: create, run, move and delete them');
  const enc = (n: string) => ({ params: { name: n } });

  command(vm, 'create', 'create a VM (stopped)')
    .argument('<name>', 'a VM name')
    .option('--memory <MiB>', 'memory in MiB (default 256)')
    .option('--cpus <N>', 'vCPUs (default 1)')
    .option('--disk <GiB>', 'disk size in GiB (default 1)')
    .option('--workload <W>', 'idle | memory:<MiB/s> | tcp | tcp-client:<VM> | disk:<writes/s>, joined with +')
    .option('--node <NODE>', 'the node it starts on')
    .option('--compat', 'processor compatibility mode: the CPU features all nodes of its vendor share')
    .option('--switch <SW>', 'the virtual switch its NIC plugs into')
    .option('--offloads <LIST>', 'NIC offloads: virtio-net names (csum,guest_csum,gso,host_tso4,…), all or none')
    .option('--image <IMAGE>', 'boot its own OS: the disk is a linked clone of this library image (ferry image list)')
    .option('--full-copy', 'copy the image instead of a linked clone')
    .option('--iso <IMAGE>', 'attach this library ISO as a CD-ROM that boots first (an installer)')
    .option('--firmware <bios|uefi>', 'SeaBIOS (default) or OVMF with its own variables (with --image or --iso)')
    .option('--cloud-init <FILE>', 'cloud-init user data: a #cloud-config YAML file (with --image)')
    .option('--ssh-key <FILE>', "an SSH public key file for the image's default user (cloud-init)")
    .option('--json', 'print the record as JSON')
    .action(async (name: string, o: Record<string, string | boolean | undefined>) => {
      const body: Record<string, unknown> = { name };
      const cloudInit = await readCloudInit(o['cloudInit'] as string | undefined, o['sshKey'] as string | undefined);
      if (cloudInit) body.cloudInit = cloudInit;
      for (const f of ['image', 'iso', 'firmware'] as const) if (o[f] !== undefined) body[f] = o[f];
      if (o['fullCopy']) body.fullCopy = true;
      for (const [flag, field] of [
        ['memory', 'memoryMiB'],
        ['cpus', 'cpus'],
        ['disk', 'diskGiB'],
      ] as const)
        if (o[flag] !== undefined) body[field] = numberOrText(o[flag] as string);
      for (const f of ['workload', 'node', 'switch', 'offloads'] as const) if (o[f] !== undefined) body[f] = o[f];
      if (o.compat) body.compat = true;
      const v = await connect().api.call(vmRoutes.create, { body: body as never });
      if (o.json) json(v);
      else
        print(
          `VM ${v.name} created: ${v.memoryMiB} MiB, ${v.cpus} CPU, ${v.diskGiB} GiB disk, ip ${v.ip}, mac ${v.mac}, ${v.boot ? bootLine(v.boot) : `workload ${v.workload}`}${v.compat ? ', processor compatibility mode on' : ''}`,
        );
    });

  command(vm, 'set', "change a VM's settings")
    .argument('<name>', 'a VM name')
    .option('--compat <on|off>', 'processor compatibility mode (only while stopped)')
    .option('--switch <SW>', 'the virtual switch its NIC plugs into (only while stopped)')
    .option('--policy <FILE|NAME|none>', "the VM's migration policy overrides (a JSON file, ferry, qemu-defaults, or none)")
    .option('--start-action <always|never|if-running>', 'what the cluster does with the VM when it starts after ferry down (default if-running)')
    .option('--ha <on|off>', 'high availability: restart it on another host when its host fails, and in place when its QEMU dies')
    .option('--ha-priority <N>', 'HA restart order, 0-1000, higher first (default 100)')
    .option('--json', 'print the record as JSON')
    .action(
      async (
        name: string,
        o: { compat?: string; switch?: string; policy?: string; startAction?: string; ha?: string; haPriority?: string; json?: boolean },
      ) => {
        const ha = o.ha !== undefined || o.haPriority !== undefined;
        if (o.compat === undefined && o.switch === undefined && o.policy === undefined && o.startAction === undefined && !ha)
          throw errors.usage(
            "'vm set' needs a setting: --compat on|off, --switch NAME, --policy FILE|NAME|none, --start-action always|never|if-running or --ha on|off [--ha-priority N]",
          );
        const body: Record<string, unknown> = {};
        if (o.ha !== undefined) body.ha = o.ha;
        if (o.haPriority !== undefined) body.haPriority = numberOrText(o.haPriority);
        if (o.startAction !== undefined) body.startAction = o.startAction;
        if (o.policy !== undefined) body.policy = o.policy === 'none' ? null : policyFromFlags({ policy: o.policy });
        if (o.compat !== undefined) body.compat = o.compat;
        if (o.switch !== undefined) body.switch = o.switch;
        const v = await connect().api.call(vmRoutes.set, { ...enc(name), body: body as never });
        if (o.json) json(v);
        else if (ha && o.startAction === undefined && o.policy === undefined && o.compat === undefined && o.switch === undefined)
          print(`VM ${v.name}: high availability ${describeHa(v)}`);
        else if (o.startAction !== undefined && o.policy === undefined && o.compat === undefined && o.switch === undefined)
          print(`VM ${v.name}: start action ${v.startAction ?? 'if-running'}`);
        else if (o.policy !== undefined && o.compat === undefined && o.switch === undefined)
          print(`VM ${v.name}: migration policy ${v.policy ? JSON.stringify(v.policy) : 'from the cluster default'}`);
        else print(`VM ${v.name}: processor compatibility mode ${v.compat ? 'on' : 'off'}, switch ${v.switch || '(disconnected)'} (applies at its next start)`);
      },
    );

  command(vm, 'start', 'start a VM, or restore a saved one')
    .argument('<name>', 'a VM name')
    .option('--node <NODE>', 'where to start it')
    .option('--json', 'print the record as JSON')
    .action(async (name: string, o: { node?: string; json?: boolean }) => {
      const v = await connect().api.call(vmRoutes.start, { ...enc(name), body: o.node ? { node: o.node } : {} }, { timeoutMs: 120_000 });
      if (o.json) json(v);
      else print(`VM ${v.name} running on ${v.node}${v.restoredFrom ? ' (restored from its saved state)' : ''}`);
    });

  command(vm, 'stop', 'shut a VM down (the guest is asked; powered off after the timeout)')
    .argument('<name>', 'a VM name')
    .option('--timeout <S>', 'seconds the guest may take (default: the cluster setting shutdownTimeoutS)', wholeNumber('--timeout'))
    .option('--force', 'power it off at once')
    .option('--json', 'print the record as JSON')
    .action(async (name: string, o: { timeout?: number; force?: boolean; json?: boolean }) => {
      const body = { ...(o.force ? { force: true } : {}), ...(o.timeout !== undefined ? { timeoutS: o.timeout } : {}) };
      const v = await connect().api.call(vmRoutes.stop, { ...enc(name), body }, { timeoutMs: ((o.timeout ?? 3600) + 60) * 1000 });
      if (o.json) json(v);
      else if (!v.shutdown) print(`VM ${v.name} stopped`);
      else if (v.shutdown.by === 'guest') print(`VM ${v.name} shut down (the guest powered off in ${ms(v.shutdown.ms)})`);
      else print(`VM ${v.name} powered off${o.force ? '' : ' (the guest did not shut down in time)'}`);
    });

  command(vm, 'resume', "resume a running VM's paused guest (after an I/O error once its disk has room)")
    .argument('<name>', 'a VM name')
    .option('--json', 'print the VM as JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const v = await connect().api.call(vmRoutes.resume, { ...enc(name), body: {} });
      if (o.json) json(v);
      else print(`VM ${v.name} ${v.runState && v.runState !== 'running' ? describeRunState(v.runState) : 'running'} on ${v.node}`);
    });

  command(vm, 'save', "save a running VM's state to the shared volume and stop it")
    .argument('<name>', 'a VM name')
    .option('--json', 'print the record as JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const v = await connect().api.call(vmRoutes.save, enc(name), { timeoutMs: 120_000 });
      if (o.json) json(v);
      else print(`VM ${v.name} saved (its memory is in ${v.savedState}); 'ferry vm start ${v.name}' restores it`);
    });

  command(vm, 'claim', 'take a VM lost with its failed host, once that host is off for good: it becomes stopped, to start elsewhere')
    .argument('<name>', 'a VM name')
    .option('--json', 'print the record as JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const v = await connect().api.call(vmRoutes.claim, { ...enc(name), body: {} });
      if (o.json) json(v);
      else print(`VM ${v.name} claimed (${v.error ?? 'it was lost'}): it is stopped; 'ferry vm start ${v.name} [--node HOST]' starts it`);
    });

  command(vm, 'delete', 'delete a stopped VM and its disk')
    .argument('<name>', 'a VM name')
    .action(async (name: string) => {
      await connect().api.call(vmRoutes.delete, enc(name));
      print(`VM ${name} deleted`);
    });

  command(vm, 'move-storage', "move the VM's disk to another volume while it runs")
    .argument('<name>', 'a VM name')
    .option('--to <DIR>', 'the directory the disk goes to')
    .option('--json', 'print the record as JSON')
    .action(async (name: string, o: { to?: string; json?: boolean }) => {
      if (!o.to) throw errors.usage("'vm move-storage' needs --to DIRECTORY");
      const v = await connect().api.call(vmRoutes.moveStorage, { ...enc(name), body: { to: o.to } }, { timeoutMs: 32 * 60_000 });
      if (o.json) json(v);
      else
        print(
          `VM ${v.name}'s disk moved to ${v.diskPath}: ${bytes(v.movedBytes)} copied in ${ms(v.ms)}${v.state === 'running' ? ', the VM kept running' : ''}`,
        );
    });

  command(vm, 'list', 'every VM, with its HA (on and its priority, held, or -)')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const vms = await connect().api.call(vmRoutes.list, {});
      if (o.json) json(vms);
      else {
        const { table } = await import('../output.js');
        print(
          table(
            ['NAME', 'STATE', 'NODE', 'MEMORY', 'CPUS', 'IP', 'WORKLOAD', 'HA'],
            vms.map((v) => [
              v.name,
              shownState(v) + (v.migration ? ` (${v.migration.phase} → ${v.migration.to})` : ''),
              v.node || '-',
              `${v.memoryMiB} MiB`,
              v.cpus,
              v.ip,
              v.workload,
              haColumn(v),
            ]),
          ),
        );
      }
    });

  command(vm, 'show', 'one VM in detail')
    .argument('<name>', 'a VM name')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const v: VmView = await connect().api.call(vmRoutes.show, enc(name));
      if (o.json) {
        json({ ...v, disk: v.diskPath });
        return;
      }
      const rows: [string, string][] = [
        ['name', v.name],
        ['state', shownState(v)],
        ['node', v.node || '-'],
        ['memoryMiB', String(v.memoryMiB)],
        ['cpus', String(v.cpus)],
        ['mac', v.mac],
        ['ip', v.ip],
        v.boot ? ['boot', bootLine(v.boot)] : ['workload', v.workload],
        ['disk', `${v.diskPath} (${v.diskGiB} GiB)`],
        ['compat', v.compat ? 'on' : 'off'],
        ['switch', v.switch === '' ? '(disconnected)' : (v.switch ?? 'default')],
        ['ha', describeHa(v)],
      ];
      if (v.lost) rows.push(['lost', `with ${v.lost.node} since ${new Date(v.lost.sinceMs).toISOString()}`]);
      if (v.guestCpu) rows.push(['cpu', `${v.guestCpu.vendor} ${v.guestCpu.model} (${v.guestCpu.features.length} features)`]);
      rows.push(['offloads', v.nicOffloads ? v.nicOffloads.join(',') || 'none' : 'all']);
      if (v.nic) rows.push(['nic', `${v.nic.backend} on ${v.node}; the guest uses ${v.nic.negotiated.join(',') || 'no offloads'}`]);
      if (v.runState) rows.push(['run state', describeRunState(v.runState)]);
      if (v.network)
        rows.push([
          'network',
          v.network === 'connected' ? `connected to switch ${v.switch ?? 'default'}` : `disconnected from switch ${v.switch ?? 'default'}`,
        ]);
      if (v.guest) rows.push(...guestRows(v.guest));
      if (v.error) rows.push(['error', v.error]);
      if (v.migration) {
        const p = v.migration.progress;
        rows.push(['migration', `${v.migration.id}: ${v.migration.from} → ${v.migration.to}, step ${v.migration.phase}`]);
        if (p) rows.push(['progress', progressLine(p)]);
      }
      for (const [k, val] of rows) print(`${k.padEnd(10)} ${val}`);
    });

  command(vm, 'ping', 'ping the VM through its virtual switch')
    .argument('<name>', 'a VM name')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await connect().api.call(vmRoutes.ping, { ...enc(name), body: {} });
      if (o.json) json(r);
      else print(r.answered ? `${r.vm} (${r.ip}) answered through the virtual switch in ${r.rttMs} ms` : `${r.vm} (${r.ip}) did not answer`);
      if (!r.answered) done(1);
    });

  command(vm, 'vnc', "the URL of the VM's screen in the web console (noVNC; sign in with the cluster token)")
    .argument('<name>', 'a running VM with its own OS')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const cluster = connect();
      const at = await cluster.api.call(vmRoutes.display, enc(name));
      const url = `${cluster.baseUrl.replace(/\/$/, '')}/display?vm=${encodeURIComponent(name)}`;
      if (o.json) json({ ...at, url });
      else print(url);
    });

  command(vm, 'console', 'attach to the serial console (Ctrl-] detaches)')
    .argument('<name>', 'a VM name')
    .action(async (name: string) => done(await attachConsole(connect(), name)));

  command(vm, 'migrate', 'live migration (or quick with --quick)')
    .argument('<name>', 'a VM name')
    .option('--to <NODE>', 'the target node (or an agent URL)')
    .option('--quick', 'pause, save to the shared volume, restore on the target')
    .option('--check', 'list every blocker; move nothing')
    .option('--plan', 'measure and predict; move nothing')
    .option('--with-storage <DIR>', 'shared-nothing: copy a disk that is not on the shared volume into DIR on the target')
    .option('--policy <FILE|NAME>', 'a policy file or ferry | qemu-defaults')
    .option('--bandwidth <MiB/s>', 'cap the transfer')
    .option('--max-downtime <ms>', 'the downtime QEMU aims for')
    .option('--postcopy', 'allow escalation to post-copy')
    .option('--json', 'print as JSON')
    .action(
      async (
        name: string,
        o: {
          to?: string;
          quick?: boolean;
          check?: boolean;
          plan?: boolean;
          withStorage?: string;
          policy?: string;
          bandwidth?: string;
          maxDowntime?: string;
          postcopy?: boolean;
          json?: boolean;
        },
      ) => {
        if (!o.to) throw errors.usage("'vm migrate' needs --to NODE");
        const policy = policyFromFlags(o);
        const mode: 'live' | 'quick' = o.quick ? 'quick' : 'live';
        const body = { to: o.to, mode, ...(policy ? { policy } : {}), ...(o.withStorage !== undefined ? { withStorage: o.withStorage } : {}) };
        const c = connect();
        if (o.plan) {
          const r = (await c.api.call(vmRoutes.migrate, { ...enc(name), body: { ...body, plan: true } as never }, { timeoutMs: 120_000 })) as PlanResult;
          if (o.json) json(r);
          else printPlan(name, r);
          return done(r.ok ? 0 : 1);
        }
        if (o.check) {
          const r = (await c.api.call(vmRoutes.migrate, { ...enc(name), body: { ...body, check: true } as never })) as {
            ok: boolean;
            blockers: string[];
            to: string;
          };
          if (o.json) json(r);
          else if (r.ok) print(`${name} can ${mode}-migrate to ${r.to}: no blockers`);
          else {
            print(`${name} cannot ${mode}-migrate to ${r.to}:`);
            for (const b of r.blockers) print(`  - ${b}`);
          }
          return done(r.ok ? 0 : 1);
        }
        done(await migrate(c, name, body, o.json === true));
      },
    );
}

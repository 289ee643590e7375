/** `ferry node …`: list, add, remove, maintenance, resume. */
import type { Command } from 'commander';
import { migrationRoutes } from '../../api/routes/migrations.js';
import { nodeRoutes } from '../../api/routes/nodes.js';
import { vmRoutes } from '../../api/routes/vms.js';
import { systemClock } from '../../domain/clock.js';
import { stopNodeAgent, up } from '../daemons.js';
import { type Cluster, command, numberOrText } from '../context.js';
import { Progress, json, ms, print, table } from '../output.js';

export function nodeCommands(program: Command, connect: () => Cluster, done: (code: number) => void): void {
  const node = command(program, 'node', 'nodes: list, join, leave, maintenance');

  command(node, 'list', 'every node with its state, CPU and load')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const nodes = await connect().api.call(nodeRoutes.list, {});
      if (o.json) json(nodes);
      else
        print(
          table(
            ['NAME', 'STATE', 'ACCEL', 'CPU VENDOR', 'CPU MODEL', 'NIC BACKEND', 'VMS', 'MEM FREE', 'MIGRATION ADDR', 'SHARED VOLUME'],
            nodes.map((n) => [
              n.name,
              n.state,
              n.capabilities?.accelerator,
              n.capabilities?.cpu.vendor,
              n.capabilities?.cpu.model,
              n.capabilities?.nic ? `${n.capabilities.nic.backend} (${n.capabilities.nic.offloads.length} offloads)` : '-',
              n.vmCount,
              `${n.memoryFreeMiB} MiB`,
              n.migrationAddress,
              n.volume ? (n.volume.ok ? 'ok' : `NOT SEEN: ${n.volume.error ?? ''}`) : '-',
            ]),
          ),
        );
    });

  command(node, 'add', 'a new node joins the cluster')
    .argument('[name]', 'a node name')
    .option('--cpu-model <M>', 'the CPU model its guests get (TCG)')
    .option('--memory <MiB>', 'memory it offers')
    .option('--nic-backend <stream|tap>', "how its VMs' NICs reach the switch")
    .option('--json', 'print as JSON')
    .action(async (name: string | undefined, o: { cpuModel?: string; memory?: string; nicBackend?: string; json?: boolean }) => {
      const c = connect();
      const body: Record<string, unknown> = {};
      if (name !== undefined) body.name = name;
      if (o.cpuModel !== undefined) body.cpuModel = o.cpuModel;
      if (o.memory !== undefined) body.memoryMiB = numberOrText(o.memory);
      if (o.nicBackend !== undefined) body.nicBackend = o.nicBackend;
      const member = await c.api.call(nodeRoutes.add, { body: body as never });
      const progress = new Progress();
      await up(c.layout, { progress: (l) => progress.update(l) });
      progress.done();
      const n = (await c.api.call(nodeRoutes.list, {})).find((x) => x.name === member.name)!;
      if (o.json) json(n);
      else
        print(`node ${n.name} joined and is ${n.state} (${n.capabilities?.cpu.vendor} ${n.capabilities?.cpu.model}, migration address ${n.migrationAddress})`);
    });

  command(node, 'remove', 'an empty node leaves (drain it first)')
    .argument('<name>', 'a node name')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const c = connect();
      const res = await c.api.call(nodeRoutes.remove, { params: { name } });
      await stopNodeAgent(c.layout, name);
      if (o.json) json(res);
      else print(`node ${name} left the cluster${res.clearedVms.length ? `; stopped VMs ${res.clearedVms.join(', ')} will start elsewhere` : ''}`);
    });

  command(node, 'maintenance', 'drain a node: live-migrate or save its VMs; it takes no new ones until resumed')
    .argument('<node>', 'a node name')
    .option('--drain <live|save>', 'how to empty it (default live)')
    .option('--dry-run', 'plan only')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { drain?: string; dryRun?: boolean; json?: boolean }) => {
      const c = connect();
      const res = await c.api.call(nodeRoutes.maintenance, { params: { name }, body: { drain: (o.drain ?? 'live') as 'live', dryRun: o.dryRun === true } });
      const p = res.plan;
      if (!o.json) {
        print(`${res.dryRun ? 'drain plan' : 'draining'} ${p.node} (${p.mode}): ${p.steps.length} VM(s), estimated ${ms(p.estimatedMs)}`);
        for (const s of p.steps)
          print(`  ${s.order}. ${s.vm} (${s.memoryMiB} MiB) ${s.to ? `→ ${s.to}` : '→ saved to the shared volume'}  ~${ms(s.estimatedMs)}`);
        if (p.blockers.length) {
          print('blockers:');
          for (const b of p.blockers) print(`  - ${b}`);
        }
      }
      if (res.dryRun) {
        if (o.json) json(res);
        return done(p.blockers.length ? 1 : 0);
      }
      // Follow every move until the node is empty.
      const progress = new Progress();
      const outcome = new Map<string, string>();
      const deadline = systemClock.nowMs() + 10 * 60_000;
      while (outcome.size < p.steps.length && systemClock.nowMs() < deadline) {
        if (p.mode === 'live') {
          for (const m of res.migrations) {
            const r = await c.api.call(migrationRoutes.show, { params: { id: m.id } });
            if (r.status !== 'running' && r.status !== 'queued') outcome.set(m.vm, r.status === 'completed' ? `on ${m.to}` : `${r.status}: ${r.error ?? ''}`);
          }
        } else {
          const vms = await c.api.call(vmRoutes.list, {});
          for (const s of p.steps) {
            const v = vms.find((x) => x.name === s.vm);
            if (v?.state === 'saved') outcome.set(s.vm, 'saved');
            else if (v && v.state === 'running' && v.error) outcome.set(s.vm, `not saved: ${v.error}`);
          }
        }
        progress.update(`draining ${p.node}: ${outcome.size}/${p.steps.length} done`);
        if (outcome.size < p.steps.length) await systemClock.sleep(300);
      }
      progress.done();
      const failed = p.steps.filter((s) => !/^(on |saved)/.test(outcome.get(s.vm) ?? ''));
      if (o.json) json({ ...res, outcome: Object.fromEntries(outcome) });
      else for (const s of p.steps) print(`  ${s.vm}: ${outcome.get(s.vm) ?? 'still moving'}`);
      done(failed.length ? 1 : 0);
    });

  command(node, 'resume', 'take a node out of maintenance')
    .argument('<node>', 'a node name')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const n = await connect().api.call(nodeRoutes.resume, { params: { name } });
      if (o.json) json(n);
      else print(`node ${n.name} is ${n.state}: it takes VMs again`);
    });
}

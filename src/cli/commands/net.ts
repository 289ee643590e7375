/** `ferry net …` (cluster networks) and `ferry switch …` (virtual switches and bindings). */
import type { Command } from 'commander';
import { networkRoutes, switchRoutes } from '../../api/routes/networks.js';
import { errors } from '../../domain/errors.js';
import { type Cluster, command, numberOrText } from '../context.js';
import { json, ms, print, table } from '../output.js';

export function netCommands(program: Command, connect: () => Cluster): void {
  const net = command(program, 'net', 'cluster networks: roles, metrics, addresses');
  command(net, 'list', "cluster networks: role, metric, each node's address and state")
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const nets = await connect().api.call(networkRoutes.list, {});
      if (o.json) json(nets);
      else
        print(
          table(
            ['NAME', 'ROLE', 'METRIC', 'SUBNET', 'STATE', 'NODES'],
            nets.map((n) => [
              n.name,
              n.role,
              n.metric,
              n.subnet,
              n.state,
              n.nodes.map((x) => `${x.node}=${x.address}${x.state === 'up' ? '' : ` (${x.state}${x.error ? `: ${x.error}` : ''})`}`).join(' '),
            ]),
          ) +
            '\n\n' +
            // Per host: the interface that holds the address, as that host's kernel reports it.
            table(
              ['NETWORK', 'NODE', 'INTERFACE', 'ADDRESS', 'LINK', 'SPEED', 'MTU'],
              nets.flatMap((n) =>
                n.nodes.map((x) => [
                  n.name,
                  x.node,
                  x.link?.iface,
                  x.address,
                  x.link?.operState,
                  x.link?.speedMbit ? `${x.link.speedMbit} Mbit/s` : undefined,
                  x.link?.mtu,
                ]),
              ),
            ),
        );
    });
  command(net, 'set', "change a network's role or metric (lower metric is preferred)")
    .argument('<name>', 'a network name')
    .option('--role <R>', 'management | migration | storage | none')
    .option('--metric <M>', 'lower is preferred')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { role?: string; metric?: string; json?: boolean }) => {
      const body: Record<string, unknown> = {};
      if (o.role !== undefined) body.role = o.role;
      if (o.metric !== undefined) body.metric = numberOrText(o.metric);
      const n = await connect().api.call(networkRoutes.set, { params: { name }, body: body as never });
      if (o.json) json(n);
      else print(`network ${n.name}: role ${n.role}, metric ${n.metric}`);
    });

  const sw = command(program, 'switch', 'virtual switches: bindings, MAC tables, scrub');
  const out = (o: { json?: boolean }, v: unknown, line: string) => (o.json ? json(v) : print(line));
  command(sw, 'show', 'MAC tables of every switch')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const macs = await connect().api.call(switchRoutes.macs, {});
      if (o.json) json(macs);
      else
        print(
          table(
            ['SWITCH', 'MAC', 'PORT', 'NODE', 'VM', 'AGE'],
            macs.map((m) => [m.switch, m.mac, m.port, m.node, m.vm, ms(m.ageMs)]),
          ),
        );
    });
  command(sw, 'list', 'virtual switches: bindings, attached VMs, settings')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const list = await connect().api.call(switchRoutes.list, {});
      if (o.json) json(list);
      else
        print(
          table(
            ['NAME', 'BINDINGS', 'VMS', 'RUNNING', 'MAC AGEING'],
            list.map((s) => [
              s.name,
              s.bindings.map((b) => `${b.node}/${b.iface}`).join(' ') || '-',
              s.vms.join(',') || '-',
              s.runningVms.length,
              `${s.settings.macAgeingS} s`,
            ]),
          ),
        );
    });
  command(sw, 'create', 'a new virtual switch (its own layer-2 domain)')
    .argument('<name>', 'a switch name')
    .option('--mac-ageing <S>', 'seconds a MAC stays learnt without traffic')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { macAgeing?: string; json?: boolean }) => {
      const s = await connect().api.call(switchRoutes.create, {
        body: { name, ...(o.macAgeing !== undefined ? { macAgeingS: numberOrText(o.macAgeing) } : {}) } as never,
      });
      out(o, s, `switch ${s.name} created (MAC ageing ${s.settings.macAgeingS} s); bind it with 'ferry switch bind NODE IFACE --switch ${s.name}'`);
    });
  command(sw, 'set', "change a switch's settings")
    .argument('<name>', 'a switch name')
    .option('--mac-ageing <S>', 'seconds a MAC stays learnt without traffic')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { macAgeing?: string; json?: boolean }) => {
      if (o.macAgeing === undefined) throw errors.invalid('settings', 'nothing to set: give --mac-ageing SECONDS');
      const s = await connect().api.call(switchRoutes.set, { params: { name }, body: { macAgeingS: numberOrText(o.macAgeing) as number } });
      out(o, s, `switch ${s.name}: MAC ageing ${s.settings.macAgeingS} s`);
    });
  command(sw, 'delete', 'delete a switch (refused while VMs are attached)')
    .argument('<name>', 'a switch name')
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const s = await connect().api.call(switchRoutes.delete, { params: { name } });
      out(o, s, `switch ${s.name} deleted${s.bindings.length ? ` with its bindings ${s.bindings.map((b) => `${b.node}/${b.iface}`).join(', ')}` : ''}`);
    });
  command(sw, 'bindings', 'which node interface carries which switch')
    .argument('[node]', 'a node name')
    .option('--json', 'print as JSON')
    .action(async (node: string | undefined, o: { json?: boolean }) => {
      const rows = await connect().api.call(switchRoutes.bindings, { query: node ? { node } : {} });
      if (o.json) json(rows);
      else
        print(
          table(
            ['NODE', 'IFACE', 'SWITCH'],
            rows.map((r) => [r.node, r.iface, r.switch ?? '-']),
          ),
        );
    });
  command(sw, 'bind', 'carry a switch on a node interface, e.g. switch bind node-2 eth1 --switch backend')
    .argument('<node>', 'a node')
    .argument('<iface>', 'an interface')
    .option('--switch <NAME>', 'the switch')
    .option('--json', 'print as JSON')
    .action(async (node: string, iface: string, o: { switch?: string; json?: boolean }) => {
      if (!o.switch) throw errors.usage("'switch bind' needs --switch NAME");
      const s = await connect().api.call(switchRoutes.bind, { body: { node, iface, switch: o.switch } });
      out(o, s, `switch ${s.name} bound to ${node}/${iface}`);
    });
  command(sw, 'unbind', 'remove a binding (refused while running VMs on that node use it)')
    .argument('<node>', 'a node')
    .argument('<iface>', 'an interface')
    .option('--json', 'print as JSON')
    .action(async (node: string, iface: string, o: { json?: boolean }) => {
      const r = await connect().api.call(switchRoutes.unbind, { params: { node, iface } });
      out(o, r, `switch ${r.switch} unbound from ${node}/${iface}`);
    });
  command(sw, 'scrub', 'remove unused switches, reset settings, or remove one switch')
    .option('--inactive', 'remove switches with no bindings and no VMs')
    .option('--settings', 'reset settings to the defaults')
    .option('--name <NAME>', 'remove this switch')
    .option('--force', 'with --name: disconnect running VMs')
    .option('--json', 'print as JSON')
    .action(async (o: { inactive?: boolean; settings?: boolean; name?: string; force?: boolean; json?: boolean }) => {
      const body = { inactive: o.inactive === true, settings: o.settings === true, force: o.force === true, ...(o.name !== undefined ? { name: o.name } : {}) };
      const r = await connect().api.call(switchRoutes.scrub, { body });
      if (o.json) return json(r);
      const list = (xs: string[]) => xs.join(', ') || 'none';
      print(`removed switches: ${list(r.removedSwitches)}`);
      print(`removed bindings: ${list(r.removedBindings)}`);
      print(`settings reset: ${list(r.resetSettings)}`);
      print(`disconnected VMs: ${list(r.disconnectedVms)}`);
    });
}

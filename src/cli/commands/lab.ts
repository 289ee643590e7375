/** `ferry lab`: hosts made of network namespaces on this machine (root). */
import type { Command } from 'commander';
import type { StateLayout } from '../../domain/layout.js';
import { labCrash, labEtcdStatus, labExec, labFreeze, labHeal, labIsolate, labSpace, readLab, requireRoot } from '../../lab/lab.js';
import { labBoot, labTakeDown, labUpWithCluster } from '../lab-cluster.js';
import { errors } from '../../domain/errors.js';
import { command, wholeNumber } from '../context.js';
import { Progress, json, print, table } from '../output.js';

export function labCommands(program: Command, layout: () => StateLayout, done: (code: number) => void): void {
  const lab = command(program, 'lab', 'a cluster of hosts made of network namespaces on this machine (root)');

  command(lab, 'up', 'make the hosts, the LAN and migration bridges, the client and etcd')
    .requiredOption('--hosts <N>', 'hosts, 1 to 16', wholeNumber('--hosts'))
    .option('--link-mbit <M>', 'shape every host link to M Mbit/s', wholeNumber('--link-mbit'))
    .option('--etcd <1|3>', 'etcd members (on host-1, or host-1..3)', wholeNumber('--etcd'))
    .option('--no-cluster', 'only the hosts and etcd: no Ferry cluster in them')
    .option('--members <N>', 'only the first N hosts join the cluster (the others are left to join by hand)', wholeNumber('--members'))
    .option('--node-memory <MiB>', 'memory each host offers to VMs (default: all of it)', wholeNumber('--node-memory'))
    .option('--controllers <N>', 'hosts host-1..N run a controller (one leads, the others stand by; needs the store in etcd)', wholeNumber('--controllers'))
    .option('--json', 'print the lab as JSON')
    .action(
      async (o: {
        hosts: number;
        linkMbit?: number;
        etcd?: number;
        cluster: boolean;
        members?: number;
        nodeMemory?: number;
        controllers?: number;
        json?: boolean;
      }) => {
        const progress = new Progress();
        const {
          lab: made,
          controllerUrl,
          nodes,
        } = await labUpWithCluster(
          layout(),
          {
            hosts: o.hosts,
            cluster: o.cluster,
            ...(o.members !== undefined ? { members: o.members } : {}),
            ...(o.nodeMemory !== undefined ? { nodeMemoryMiB: o.nodeMemory } : {}),
            ...(o.controllers !== undefined ? { controllers: o.controllers } : {}),
            ...(o.linkMbit !== undefined ? { linkMbit: o.linkMbit } : {}),
            ...(o.etcd !== undefined ? { etcd: o.etcd as 1 | 3 } : {}),
          },
          (l) => progress.update(l),
        );
        progress.done();
        if (controllerUrl && !o.json) print(`cluster up in the lab: ${nodes!.join(', ')}; controller ${controllerUrl}`);
        if (o.json) return json(made);
        print(`lab ${made.id} up: ${made.hosts.map((h) => h.name).join(', ')} and client; etcd ${made.etcd.map((m) => m.clientUrl).join(',')}`);
      },
    );

  command(lab, 'show', 'the lab: hosts, addresses, bridges, etcd')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const l = readLab(layout().dir);
      if (!l) throw errors.invalidState(`no lab in ${layout().dir} ('ferry lab up --hosts N' makes one)`);
      const etcd = await labEtcdStatus(l);
      if (o.json) return json({ ...l, etcdStatus: etcd });
      print(
        `lab ${l.id}: LAN bridge ${l.bridges.lan} (${l.gateway}/24 here), migration bridge ${l.bridges.migration}${l.linkMbit ? `, links ${l.linkMbit} Mbit/s` : ''}`,
      );
      print(
        table(
          ['HOST', 'NAMESPACE', 'LAN (eth0)', 'MIGRATION (eth1)', 'ETCD'],
          [...l.hosts, l.client].map((h) => [
            h.name,
            h.netns,
            h.lan,
            h.name === 'client' ? '-' : h.migration,
            l.etcd
              .filter((m) => m.host === h.name)
              .map((m) => {
                const s = etcd.find((x) => x.name === m.name);
                return `${m.name} (${!s?.answers ? 'down' : s.leads ? 'leader' : 'follower'})`;
              })
              .join(',') || '-',
          ]),
        ),
      );
    });

  command(lab, 'down', 'stop everything in the lab and remove its namespaces, links, bridges and files').action(async () => {
    const r = await labTakeDown(layout());
    print(r ? `lab ${r.id} down` : `no lab in ${layout().dir}`);
  });

  const theLab = () => {
    const l = readLab(layout().dir);
    if (!l) throw errors.invalidState(`no lab in ${layout().dir} ('ferry lab up --hosts N' makes one)`);
    return l;
  };
  command(lab, 'crash', "power loss: kill every process on a host (its agent, its VMs' QEMUs, a controller or etcd member there)")
    .argument('<host>', 'host-N')
    .action(async (host: string) => {
      const killed = await labCrash(theLab(), host);
      print(`${host} crashed: killed ${killed.length} process(es)`);
    });
  command(lab, 'boot', 'power a crashed host on again: its etcd members and its Ferry daemons start (ferry up inside it); it rejoins by itself')
    .argument('<host>', 'host-N')
    .action(async (host: string) => {
      const r = await labBoot(layout(), host);
      print(`${host} booted${[...r.etcd, ...r.started].length ? `: started ${[...r.etcd, ...r.started].join(', ')}` : ''}`);
    });
  command(lab, 'freeze', "a long pause: stop a host's agent (SIGSTOP; its VMs keep running) until heal, or for S seconds")
    .argument('<host>', 'host-N')
    .option('--for <S>', 'thaw it again after S seconds (the command waits)', wholeNumber('--for'))
    .action(async (host: string, o: { for?: number }) => {
      const pids = await labFreeze(theLab(), host, o.for !== undefined ? o.for * 1000 : undefined);
      print(
        o.for !== undefined
          ? `${host}'s agent was frozen for ${o.for} s`
          : `${host}'s agent is frozen (pid ${pids.join(', ')}); 'ferry lab heal ${host}' thaws it`,
      );
    });
  command(lab, 'isolate', "cut a host's management link (eth0, the LAN) at the switch")
    .argument('<host>', 'host-N')
    .action(async (host: string) => {
      await labIsolate(theLab(), host);
      print(`${host} is isolated: its LAN link is down`);
    });
  command(lab, 'heal', "undo isolate and freeze: the host's LAN link up, its agent running")
    .argument('<host>', 'host-N')
    .action(async (host: string) => {
      const r = await labHeal(theLab(), host);
      print(`${host} healed: LAN link up${r.thawed.length ? ', agent thawed' : ''}`);
    });

  const exec = (name: string, argv: string[]) => {
    requireRoot();
    const l = readLab(layout().dir);
    if (!l) throw errors.invalidState(`no lab in ${layout().dir} ('ferry lab up --hosts N' makes one)`);
    if (!argv.length) throw errors.usage('a command to run is needed after --');
    return labExec(labSpace(l, name), argv).then(done);
  };
  command(lab, 'exec', 'run a command inside a lab host: ferry lab exec host-1 -- ip addr')
    .argument('<host>', 'host-N')
    .argument('<command...>', 'the command and its arguments, after --')
    .action((host: string, argv: string[]) => exec(host, argv));
  command(lab, 'client', 'run a command inside the lab client: ferry lab client -- ping 10.X.1.11')
    .argument('<command...>', 'the command and its arguments, after --')
    .action((argv: string[]) => exec('client', argv));
}

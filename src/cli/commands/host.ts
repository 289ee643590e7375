/** A cluster of real hosts: `ferry init`, `ferry join`, `ferry token join|login`, `ferry login`. */
import type { Command } from 'commander';
import { joinRoutes } from '../../api/routes/join.js';
import { errors } from '../../domain/errors.js';
import { TOKEN_TTL, parseDuration } from '../../domain/join-token.js';
import type { StateLayout } from '../../domain/layout.js';
import { NIC_BACKENDS, type NicBackend } from '../../domain/nic.js';
import { type Cluster, command, wholeNumber } from '../context.js';
import { initCluster, joinCluster, login, parseAddressSpecs, parseNetworkSpec } from '../hosts.js';
import { Progress, json, print } from '../output.js';
import { etcdEndpoints } from './cluster.js';

const collect = (v: string, all: string[] = []) => [...all, v];

function nicBackend(v: string): NicBackend {
  if (!(NIC_BACKENDS as readonly string[]).includes(v)) throw errors.usage(`--nic-backend must be one of ${NIC_BACKENDS.join(', ')}, got '${v}'`);
  return v as NicBackend;
}

function ttl(v: string): number {
  const ms = parseDuration(v);
  if (ms === undefined) throw errors.usage(`--ttl takes a duration like 90s, 30m, 1h or 2d, got '${v}'`);
  if (ms < TOKEN_TTL.minMs || ms > TOKEN_TTL.maxMs) throw errors.usage(`--ttl must be from 1m to 7d, got '${v}'`);
  return ms;
}

export function hostCommands(program: Command, layout: () => StateLayout, connect: () => Cluster): void {
  command(program, 'init', "make a cluster of real hosts with this host as its first member: the CA, the store, the controller and this host's agent")
    .option('--name <NAME>', "this host's name in the cluster (default: the hostname)")
    .option('--shared <DIR>', "where the cluster's shared volume (NFS, CephFS, …) is mounted on every host", '/mnt/ferry')
    .option('--network <NAME=CIDR[:ROLE]>', 'a cluster network (repeat; default: management on the default route)', collect, [])
    .option('--address <NETWORK=ADDRESS>', "this host's address on a network when it is not found on an interface (repeat)", collect, [])
    .option('--port <PORT>', "the controller's HTTPS port (default 8470)", wholeNumber('--port'))
    .option('--etcd <URL,URL…>', "the cluster's store: these etcd members (default: a SQLite file on this host)", etcdEndpoints)
    .option('--nic-backend <B>', "VMs' NICs on this host: bridge (default), tap or stream", nicBackend)
    .option('--node-memory <MiB>', 'memory this host offers to VMs (default: all of it)', wholeNumber('--node-memory'))
    .option('--no-start', 'write everything but leave starting the daemons to systemd (ferry-controller, ferry-agent)')
    .option('--json', 'print the result as JSON')
    .action(
      async (o: {
        name?: string;
        shared: string;
        network: string[];
        address: string[];
        port?: number;
        etcd?: string[];
        nicBackend?: NicBackend;
        nodeMemory?: number;
        start: boolean;
        json?: boolean;
      }) => {
        const progress = new Progress();
        const l = layout();
        const res = await initCluster(l, {
          ...(o.name ? { name: o.name } : {}),
          shared: o.shared,
          networks: o.network.map(parseNetworkSpec),
          addresses: parseAddressSpecs(o.address),
          ...(o.port !== undefined ? { port: o.port } : {}),
          ...(o.etcd ? { etcd: o.etcd } : {}),
          ...(o.nicBackend ? { nicBackend: o.nicBackend } : {}),
          ...(o.nodeMemory ? { memoryMiB: o.nodeMemory } : {}),
          start: o.start,
          progress: (line) => progress.update(line),
        });
        progress.done();
        if (o.json) return json(res);
        print(`cluster ${res.clusterId} made in ${l.dir}; ${res.name} is its first host`);
        print(`controller: ${res.url} (CA fingerprint sha256 ${res.fingerprint})`);
        print(res.started ? 'daemons started' : 'start the daemons: systemctl start ferry-controller ferry-agent');
        print(`add a host: ferry token join, then on that host: ferry join ${res.url} --token TOKEN`);
      },
    );

  command(program, 'join', 'make this host a member of a cluster: get its certificate, write its configuration and start its agent')
    .argument('<URL>', "the controller's URL (https://HOST:PORT)")
    .requiredOption('--token <TOKEN>', "a join token from 'ferry token join'")
    .option('--name <NAME>', "this host's name in the cluster (default: the hostname)")
    .option('--shared <DIR>', "where the cluster's shared volume is mounted on this host", '/mnt/ferry')
    .option('--address <NETWORK=ADDRESS>', "this host's address on a network when it is not found on an interface (repeat)", collect, [])
    .option('--nic-backend <B>', "VMs' NICs on this host: bridge (default), tap or stream", nicBackend)
    .option('--node-memory <MiB>', 'memory this host offers to VMs (default: all of it)', wholeNumber('--node-memory'))
    .option('--cpu-model <MODEL>', 'the CPU model guests get on this host')
    .option(
      '--controller',
      "run a controller here too, standing by to lead when the leading one is gone (the token must come from 'ferry token join --controller')",
    )
    .option('--no-start', 'write everything but leave starting the agent to systemd (ferry-agent)')
    .option('--json', 'print the result as JSON')
    .action(
      async (
        url: string,
        o: {
          controller?: boolean;
          token: string;
          name?: string;
          shared: string;
          address: string[];
          nicBackend?: NicBackend;
          nodeMemory?: number;
          cpuModel?: string;
          start: boolean;
          json?: boolean;
        },
      ) => {
        const progress = new Progress();
        const res = await joinCluster(layout(), url, o.token, {
          ...(o.name ? { name: o.name } : {}),
          shared: o.shared,
          addresses: parseAddressSpecs(o.address),
          ...(o.nicBackend ? { nicBackend: o.nicBackend } : {}),
          ...(o.nodeMemory ? { memoryMiB: o.nodeMemory } : {}),
          ...(o.cpuModel ? { cpuModel: o.cpuModel } : {}),
          ...(o.controller ? { controller: true } : {}),
          start: o.start,
          progress: (line) => progress.update(line),
        });
        progress.done();
        if (o.json) return json(res);
        const daemons = o.controller ? 'its agent and its standby controller' : 'its agent';
        print(
          `${res.name} joined cluster ${res.clusterId}${res.started ? `; ${daemons} run${o.controller ? '' : 's'}` : `; start ${daemons}: systemctl start ferry-agent${o.controller ? ' ferry-switch ferry-controller' : ''}`}`,
        );
      },
    );

  const token = command(program, 'token', 'single-use, expiring tokens for a host to join or a CLI to log in');
  for (const kind of ['join', 'login'] as const) {
    command(token, kind, kind === 'join' ? 'a token for `ferry join` on a new host' : 'a token for `ferry login` on another machine')
      .option('--ttl <DURATION>', 'how long it is valid: 90s, 30m, 1h (default), up to 7d', ttl)
      .option('--controller', 'the host may run a controller too (it gets the CA key: only for hosts trusted like the first)')
      .option('--json', 'print the token and its expiry as JSON')
      .action(async (o: { ttl?: number; controller?: boolean; json?: boolean }) => {
        if (o.controller && kind !== 'join') throw errors.usage('--controller applies to join tokens only');
        const res = await connect().api.call(joinRoutes.issue, {
          body: { kind, ...(o.ttl !== undefined ? { ttlMs: o.ttl } : {}), ...(o.controller ? { controller: true } : {}) },
        });
        if (o.json) return json(res);
        print(res.token);
        process.stderr.write(`valid once, until ${new Date(res.expiresAtMs).toISOString()}\n`);
      });
  }

  command(program, 'login', "let this CLI use a cluster of real hosts: get the API token and trust the cluster's CA")
    .argument('<URL>', "the controller's URL (https://HOST:PORT)")
    .requiredOption('--token <TOKEN>', "a login token from 'ferry token login'")
    .action(async (url: string, o: { token: string }) => {
      const l = layout();
      const res = await login(l, url, o.token);
      print(`logged in to ${res.url}; the CLI keeps its token and the cluster's CA in ${l.clientConfig}`);
    });
}

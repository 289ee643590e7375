/**
 * A Ferry cluster in the lab, made the way an operator makes one on real
 * hosts: `ferry init` inside host-1's namespace, then `ferry token join` and
 * `ferry join` inside each other host's, each host with a state directory of
 * its own (`LAB/hosts/NAME`) and the lab's `shared` directory as the shared
 * volume; the CLI in the root namespace logs in with a login token. Nothing
 * is discovered through files one host wrote for another.
 */
import fs from 'node:fs';
import path from 'node:path';
import { readConfig } from '../config/cluster-config.js';
import { openLayout } from '../config/host-config.js';
import { projectRoot } from '../config/paths.js';
import { errors } from '../domain/errors.js';
import type { StateLayout } from '../domain/layout.js';
import { type Lab, type LabHost, type LabOptions, labDown, labRun, labPowerOn, labSpace, labUp, readLab, requireRoot, saveLab } from '../lab/lab.js';
import { DEFAULT_CONTROLLER_PORT, down } from './daemons.js';
import { login } from './hosts.js';

/** A lab host's own state directory. */
export function labHostDir(labDir: string, host: string): string {
  return path.join(labDir, 'hosts', host);
}

/** Runs the `ferry` CLI inside a lab host with that host's state directory; its answer, or its error line. */
async function ferryIn(stateDir: string, host: LabHost, args: string[]): Promise<string> {
  const r = await labRun(host, [
    process.execPath,
    path.join(projectRoot(), 'dist', 'src', 'cli', 'main.js'),
    '--state',
    labHostDir(stateDir, host.name),
    ...args,
  ]);
  if (r.code !== 0)
    throw errors.invalidState(
      `${host.name}: ferry ${args[0]}: ${
        r.stderr
          .trim()
          .split('\n')
          .at(-1)
          ?.replace(/^error: /, '') ?? `exit ${r.code}`
      }`,
    );
  return r.stdout.trim();
}

/** Builds the lab and, unless `cluster` is false, a cluster in it; on any failure takes everything down again. */
export async function labUpWithCluster(
  l: StateLayout,
  o: LabOptions & { cluster: boolean; members?: number; nodeMemoryMiB?: number; controllers?: number },
  progress: (line: string) => void,
): Promise<{ lab: Lab; controllerUrl?: string; nodes?: string[] }> {
  requireRoot();
  if (o.cluster && !readLab(l.dir) && (readConfig(l) || fs.existsSync(l.clientConfig)))
    throw errors.invalidState(`${l.dir} holds a cluster already; the lab makes its own (use another --state)`);
  if (o.members !== undefined && (o.members < 1 || o.members > o.hosts))
    throw errors.invalid('members', `--members must be from 1 to the number of hosts (${o.hosts}), got ${o.members}`);
  const members = o.members ?? o.hosts;
  if (o.controllers !== undefined && (o.controllers < 1 || o.controllers > members))
    throw errors.invalid('controllers', `--controllers must be from 1 to the number of hosts in the cluster (${members}), got ${o.controllers}`);
  const lab = await labUp(l.dir, o, progress);
  if (!o.cluster) return { lab };
  try {
    lab.cluster = true;
    saveLab(lab);
    fs.mkdirSync(l.shared, { recursive: true, mode: 0o700 });
    // Hosts past `members` stay out of the cluster, for joining by hand.
    const [first, ...others] = lab.hosts.slice(0, o.members ?? lab.hosts.length);
    const memory = o.nodeMemoryMiB ? ['--node-memory', String(o.nodeMemoryMiB)] : [];
    progress(`ferry init on ${first!.name}`);
    const init = JSON.parse(
      await ferryIn(l.dir, first!, [
        'init',
        '--name',
        first!.name,
        '--shared',
        l.shared,
        '--network',
        `management=${lab.net}.1.0/24`,
        '--network',
        `migration=${lab.net}.2.0/24`,
        '--etcd',
        lab.etcd.map((m) => m.clientUrl).join(','),
        '--port',
        String(DEFAULT_CONTROLLER_PORT),
        ...memory,
        '--json',
      ]),
    ) as { url: string };
    progress(`ferry join on ${others.map((h) => h.name).join(', ') || 'no other host'}`);
    // Hosts 2..controllers run a controller too: standby, each ready to lead.
    const controllerHost = (h: LabHost) => lab.hosts.indexOf(h) < (o.controllers ?? 1);
    await Promise.all(
      others.map(async (h) => {
        const controller = controllerHost(h) ? ['--controller'] : [];
        const token = await ferryIn(l.dir, first!, ['token', 'join', '--ttl', '10m', ...controller]);
        await ferryIn(l.dir, h, ['join', init.url, '--token', token, '--name', h.name, '--shared', l.shared, ...memory, ...controller, '--json']);
      }),
    );
    progress('ferry login from the root namespace');
    await login(l, init.url, await ferryIn(l.dir, first!, ['token', 'login', '--ttl', '10m']));
    return { lab, controllerUrl: init.url, nodes: [first!, ...others].map((h) => h.name) };
  } catch (e) {
    await labTakeDown(l);
    throw e;
  }
}

/**
 * Power on a crashed host (`ferry lab crash`): its etcd members start on
 * their data, then its Ferry daemons, as `ferry up` inside it starts them
 * (systemd's part on a real host). It rejoins the cluster by itself.
 */
export async function labBoot(l: StateLayout, name: string): Promise<{ etcd: string[]; started: string[] }> {
  requireRoot();
  const lab = readLab(l.dir);
  if (!lab) throw errors.invalidState(`no lab in ${l.dir} ('ferry lab up --hosts N' makes one)`);
  const host = labSpace(lab, name);
  if (host === lab.client) throw errors.invalid('host', "the client is not a host of the cluster: 'ferry lab boot' takes host-N");
  const etcd = await labPowerOn(lab, name);
  if (!lab.cluster || !fs.existsSync(labHostDir(l.dir, name))) return { etcd, started: [] };
  const said = await ferryIn(l.dir, host, ['up']);
  const started = /: started (.*)$/.exec(said)?.[1]?.split(', ') ?? [];
  return { etcd, started };
}

/** The lab's cluster first (its VMs, each host's daemons and files), then the lab. */
export async function labTakeDown(l: StateLayout): Promise<Lab | undefined> {
  requireRoot();
  const lab = readLab(l.dir);
  if (!lab) return undefined;
  if (lab.cluster) {
    // The controller's host first: it shuts the VMs down everywhere.
    for (const h of lab.hosts) {
      const dir = labHostDir(l.dir, h.name);
      if (fs.existsSync(dir)) await down(openLayout(dir), { shutdownTimeoutS: 5, force: true }).catch(() => {});
    }
    for (const f of [path.join(l.dir, 'hosts'), l.clientConfig, l.shared]) fs.rmSync(f, { recursive: true, force: true });
  }
  await labDown(l.dir);
  return lab;
}

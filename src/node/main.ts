/**
 * The agent daemon's composition root: the QEMU hypervisor, the host's
 * network tools and tap uplinks, the agent and its HTTP API, on the node's
 * management address.
 */
import fs from 'node:fs';
import path from 'node:path';
import { VOLUME_MARKER, type VolumeSighting } from '../domain/records.js';
import { serve } from '../api/http.js';
import { memberAddresses, readConfig, readEndpoint, readToken, writeEndpoint } from '../config/cluster-config.js';
import { systemClock } from '../domain/clock.js';
import { StateLayout } from '../domain/layout.js';
import { cacheDir, ensureImage } from '../guest/image.js';
import { QemuHypervisor } from '../qemu/hypervisor.js';
import { createImage } from '../qemu/mirror-job.js';
import { daemonLogger } from '../system/logging.js';
import { Agent } from './agent.js';
import { agentApp } from './http.js';
import { linkOf, listenBeacon, measureThroughput, probeTcp } from './net-tools.js';
import { TapUplinks } from './tap-uplink.js';

/** The shared volume's marker as this host sees it; a missing or unreadable one says why, in one line. */
function readVolumeMark(shared: string): VolumeSighting {
  const file = path.join(shared, VOLUME_MARKER);
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as { clusterId?: unknown; mark?: unknown };
    if (typeof m.clusterId !== 'string' || typeof m.mark !== 'string') return { error: `${file} is not a Ferry volume marker` };
    return { clusterId: m.clusterId.slice(0, 64), mark: m.mark.slice(0, 64) };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return {
      error:
        code === 'ENOENT' ? `${file} does not exist (is the shared volume mounted at ${shared}?)` : `cannot read ${file}: ${code ?? String(e)}`.slice(0, 300),
    };
  }
}

export async function runAgent(o: { stateDir: string; node: string }): Promise<{ close(): Promise<void>; url: string }> {
  const layout = new StateLayout(o.stateDir);
  const config = readConfig(layout);
  const token = readToken(layout);
  if (!config || !token) throw new Error(`${o.stateDir} holds no cluster (run 'ferry up')`);
  const member = config.nodes.find((n) => n.name === o.node);
  if (!member) throw new Error(`--node must name a member of the cluster (${config.nodes.map((n) => n.name).join(', ')})`);
  const log = daemonLogger(o.node);
  const runDir = layout.nodeRun(o.node);
  fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(runDir, 0o700);
  const image = await ensureImage((line) => log.info({}, line));
  const hypervisor = new QemuHypervisor({ runDir, node: o.node, image, cacheDir: cacheDir() });
  const uplinks = new TapUplinks(o.node, config.id, runDir);
  const agent = new Agent(
    {
      node: o.node,
      clusterId: config.id,
      token,
      migrationAddress: member.migrationAddress,
      networks: memberAddresses(config, o.node),
      ...(member.memoryMiB ? { memoryMiB: member.memoryMiB } : {}),
      ...(member.cpuModel ? { cpuModel: member.cpuModel } : {}),
      nicBackend: member.nicBackend ?? 'stream',
      switchSocket: (sw) => layout.switchSocket(sw, o.node),
      runDir,
    },
    {
      hypervisor,
      clock: systemClock,
      log,
      // The controller may have restarted on another address: its endpoint file says where it is now.
      controllerUrl: () => readEndpoint(layout, 'controller')?.url,
      createImage,
      removeFile: (f) => fs.rmSync(f, { force: true }),
      fileExists: (f) => fs.existsSync(f),
      uplinks,
      beacon: listenBeacon,
      linkOf,
      readVolume: () => readVolumeMark(layout.shared),
    },
  );
  await agent.prepare();
  const api = await serve(
    agentApp(agent, {
      probe: (to, port, opts) => probeTcp(to, port, opts),
      throughput: (to, port, opts) => measureThroughput(to, port, opts),
    }),
    agent.managementAddress,
  );
  agent.startHeartbeats(api.url);
  writeEndpoint(layout, o.node, { pid: process.pid, url: api.url });
  log.info({ url: api.url }, `listening on ${api.url}`);
  return {
    url: api.url,
    async close() {
      await agent.stop();
      await api.close();
    },
  };
}

/**
 * Entry point of Ferry's daemons; `ferry up` starts one process per role:
 *
 *   node dist/src/daemon/main.js switch     --state DIR
 *   node dist/src/daemon/main.js controller --state DIR
 *   node dist/src/daemon/main.js agent      --state DIR --node NAME
 *
 * Each constructs its real dependencies here, listens on loopback, writes
 * run/<name>.json ({pid, url}) once ready and removes it on SIGTERM/SIGINT.
 */
import fs from 'node:fs';
import { controllerRouter } from '../api/routes.js';
import { serve } from '../api/http.js';
import { systemClock } from '../domain/clock.js';
import { memberAddresses, readConfig, readEndpoint, readToken, writeEndpoint } from '../config/cluster-config.js';
import { Balancer } from '../controller/balancer.js';
import { Controller } from '../controller/controller.js';
import { MigrationService } from '../controller/migration/service.js';
import { startSwitch } from '../switch/daemon.js';
import { Agent } from '../node/agent.js';
import { StateLayout } from '../config/paths.js';
import { SqliteStore } from '../store/sqlite-store.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function log(role: string): (line: string) => void {
  return (line) => process.stdout.write(`${new Date().toISOString()} ${role}: ${line}\n`);
}

async function waitForEndpoint(layout: StateLayout, name: string, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const e = readEndpoint(layout, name);
    if (e) return e.url;
    if (Date.now() > deadline) throw new Error(`${name} did not start within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function onExit(cleanup: () => Promise<void>): void {
  let exiting = false;
  const handler = () => {
    if (exiting) return;
    exiting = true;
    void cleanup().finally(() => process.exit(0));
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

async function main(): Promise<void> {
  const role = process.argv[2];
  const stateDir = arg('state');
  if (!stateDir) throw new Error('--state DIR is required');
  const layout = new StateLayout(stateDir);
  const config = readConfig(layout);
  const token = readToken(layout);
  if (!config || !token) throw new Error(`${stateDir} holds no cluster (run 'ferry up')`);

  if (role === 'switch') {
    const sw = await startSwitch({ socketFor: (sw, n) => layout.switchSocket(sw, n), nodes: config.nodes.map((n) => n.name), token });
    writeEndpoint(layout, 'switch', { pid: process.pid, url: sw.api.url });
    log('switch')(`listening on ${sw.api.url}`);
    onExit(async () => {
      fs.rmSync(layout.daemonFile('switch'), { force: true });
      await sw.close();
    });
    return;
  }

  if (role === 'controller') {
    const store = new SqliteStore(layout.store);
    const switchUrl = await waitForEndpoint(layout, 'switch');
    const controller = new Controller({ layout, config, token, store, clock: systemClock, switchUrl, log: log('controller') });
    await controller.start();
    const migrations = new MigrationService(controller);
    const balancer = new Balancer(controller, migrations, systemClock);
    const api = await serve(controllerRouter(controller, migrations, token, () => {}, balancer));
    writeEndpoint(layout, 'controller', { pid: process.pid, url: api.url });
    log('controller')(`listening on ${api.url}`);
    // Give agents a few heartbeats to report, then settle unfinished migrations.
    setTimeout(() => {
      void migrations
        .recover()
        .catch((e) => log('controller')(`recover: ${String(e)}`))
        .then(() => controller.backups.recover())
        .catch((e) => log('controller')(`recover backups: ${String(e)}`))
        .finally(() => {
          migrations.startScheduler();
          balancer.start();
        });
    }, 3000);
    onExit(async () => {
      fs.rmSync(layout.daemonFile('controller'), { force: true });
      migrations.stopScheduler();
      balancer.stop();
      await controller.stop();
      await api.close();
      await store.close();
    });
    return;
  }

  if (role === 'agent') {
    const node = arg('node');
    const member = config.nodes.find((n) => n.name === node);
    if (!node || !member) throw new Error(`--node must name a member of the cluster (${config.nodes.map((n) => n.name).join(', ')})`);
    const controllerUrl = await waitForEndpoint(layout, 'controller');
    const agent = new Agent({
      node, layout, clusterId: config.id, controllerUrl, token, migrationAddress: member.migrationAddress,
      networks: memberAddresses(config, node),
      resolveController: () => readEndpoint(layout, 'controller')?.url,
      memoryMiB: member.memoryMiB, cpuModel: member.cpuModel, nicBackend: member.nicBackend, log: log(node),
    });
    await agent.start();
    writeEndpoint(layout, node, { pid: process.pid, url: agent.url });
    log(node)(`listening on ${agent.url}`);
    onExit(async () => {
      fs.rmSync(layout.daemonFile(node), { force: true });
      await agent.stop();
    });
    return;
  }
  throw new Error(`unknown daemon role '${role}' (switch, controller or agent)`);
}

main().catch((e: unknown) => {
  process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});

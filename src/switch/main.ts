/** The switch daemon's composition root: the userspace switches, their sockets and the API. */
import { readConfig, readToken, writeEndpoint } from '../config/cluster-config.js';
import { StateLayout } from '../domain/layout.js';
import { daemonLogger } from '../system/logging.js';
import { startSwitch } from './daemon.js';

export async function runSwitch(o: { stateDir: string }): Promise<{ close(): Promise<void>; url: string }> {
  const layout = new StateLayout(o.stateDir);
  const config = readConfig(layout);
  const token = readToken(layout);
  if (!config || !token) throw new Error(`${o.stateDir} holds no cluster (run 'ferry up')`);
  const log = daemonLogger('switch');
  const sw = await startSwitch({ socketFor: (s, n) => layout.switchSocket(s, n), nodes: config.nodes.map((n) => n.name), token });
  writeEndpoint(layout, 'switch', { pid: process.pid, url: sw.api.url });
  log.info({ url: sw.api.url }, `listening on ${sw.api.url}`);
  return { url: sw.api.url, close: () => sw.close() };
}

/**
 * A real etcd member for tests (Debian's etcd-server, installed by
 * scripts/setup.sh): its own data directory and ports chosen at run time,
 * fast elections so leases of a second work, and nothing left when stopped.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitFor } from './cluster.js';

export interface TestEtcd {
  endpoint: string;
  dataDir: string;
  pid: number;
  stop(): Promise<void>;
}

export async function startEtcd(): Promise<TestEtcd> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-etcd-'));
  const client = await freePort();
  const peer = await freePort();
  const endpoint = `http://127.0.0.1:${client}`;
  const log = fs.openSync(path.join(dataDir, 'etcd.log'), 'a');
  const child: ChildProcess = spawn(
    'etcd',
    [
      '--name',
      'test',
      '--data-dir',
      path.join(dataDir, 'data'),
      '--listen-client-urls',
      endpoint,
      '--advertise-client-urls',
      endpoint,
      '--listen-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-cluster',
      `test=http://127.0.0.1:${peer}`,
      '--heartbeat-interval',
      '50',
      '--election-timeout',
      '500',
    ],
    { stdio: ['ignore', log, log] },
  );
  fs.closeSync(log);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await waitFor('etcd to be healthy', 20_000, async () => {
      if (child.exitCode !== null) throw new Error(`etcd exited: ${fs.readFileSync(path.join(dataDir, 'etcd.log'), 'utf8').slice(-500)}`);
      const res = await fetch(`${endpoint}/health`).catch(() => undefined);
      return res?.ok && ((await res.json()) as { health?: string }).health === 'true';
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return { endpoint, dataDir, pid: child.pid!, stop };
}

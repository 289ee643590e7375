/**
 * A real etcd member for tests, started by Ferry's own launcher
 * (src/system/etcd.ts): its own data directory and ports chosen at run time,
 * fast elections, and nothing left when stopped. `pause`/`resume` stop and
 * restart the same member on its data and ports (etcd away, etcd back).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EtcdMember } from '../../src/system/etcd.js';
import { freePort } from './cluster.js';

export interface TestEtcd {
  endpoint: string;
  dataDir: string;
  member: EtcdMember;
  pause(): Promise<void>;
  resume(): Promise<void>;
  stop(): Promise<void>;
}

export async function startEtcd(): Promise<TestEtcd> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-etcd-'));
  const endpoint = `http://127.0.0.1:${await freePort()}`;
  const peer = `http://127.0.0.1:${await freePort()}`;
  const member = new EtcdMember({
    name: 'test',
    dataDir: path.join(dir, 'data'),
    clientUrl: endpoint,
    peerUrl: peer,
    initialCluster: { test: peer },
    logFile: path.join(dir, 'etcd.log'),
    heartbeatMs: 50,
    electionMs: 500,
  });
  const stop = async () => {
    await member.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await member.start();
  } catch (e) {
    await stop();
    throw e;
  }
  return { endpoint, dataDir: dir, member, pause: () => member.stop(), resume: () => member.start(), stop };
}

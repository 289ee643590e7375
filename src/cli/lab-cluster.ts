/**
 * A Ferry cluster in the lab: `ferry lab up` and the demo make one in the
 * lab's state directory (one node per host, bridge NICs, the lab's etcd),
 * and take it down before the lab.
 */
import fs from 'node:fs';
import { readConfig, saveConfig, writeConfig } from '../config/cluster-config.js';
import { errors } from '../domain/errors.js';
import type { StateLayout } from '../domain/layout.js';
import { type Lab, type LabOptions, labClusterShape, labDown, labUp, readLab, requireRoot, saveLab } from '../lab/lab.js';
import { DEFAULT_CONTROLLER_PORT, down, up } from './daemons.js';

/** Builds the lab and, unless `cluster` is false, a cluster in it; on any failure takes everything down again. */
export async function labUpWithCluster(
  l: StateLayout,
  o: LabOptions & { cluster: boolean },
  progress: (line: string) => void,
): Promise<{ lab: Lab; controllerUrl?: string; nodes?: string[] }> {
  requireRoot();
  if (o.cluster && !readLab(l.dir) && readConfig(l)) throw errors.invalidState(`${l.dir} holds a cluster already; the lab makes its own (use another --state)`);
  const lab = await labUp(l.dir, o, progress);
  if (!o.cluster) return { lab };
  try {
    const shape = labClusterShape(lab);
    const config = writeConfig(l, shape.members, shape.networks, DEFAULT_CONTROLLER_PORT, shape.store);
    saveConfig(l, { ...config, controllerAddress: shape.controllerAddress, defaultUplink: shape.defaultUplink });
    lab.cluster = true;
    saveLab(lab);
    const res = await up(l, { progress });
    return { lab, controllerUrl: res.controllerUrl, nodes: res.config.nodes.map((n) => n.name) };
  } catch (e) {
    await labTakeDown(l);
    throw e;
  }
}

/** The lab's cluster first (its VMs, its daemons, its files), then the lab. */
export async function labTakeDown(l: StateLayout): Promise<Lab | undefined> {
  requireRoot();
  const lab = readLab(l.dir);
  if (!lab) return undefined;
  if (lab.cluster) {
    await down(l, { shutdownTimeoutS: 5 }).catch(() => {});
    for (const f of [l.cluster, l.token, l.store, l.run, l.logs, l.shared]) fs.rmSync(f, { recursive: true, force: true });
  }
  await labDown(l.dir);
  return lab;
}

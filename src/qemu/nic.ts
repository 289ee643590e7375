/**
 * The VM's NIC and its offloads (R10). A virtio-net device offers checksum
 * and segmentation offloads only when its network backend carries the
 * virtio-net header (a tap with vnet_hdr); on a `stream` backend QEMU turns
 * them off. A guest that negotiated an offload cannot be loaded by a target
 * whose device does not offer it, so Ferry learns both sides from QEMU:
 *
 * - what a node's backend can offer: a short-lived QEMU with that backend and
 *   a virtio-net device, asked with `x-query-virtio-status`;
 * - what a running guest uses: the same query on its QEMU (guest features).
 *
 * The VM's requested offloads are part of its configuration: every QEMU it
 * runs in (source and migration target) gets the same device properties.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCode, FerryError } from '../domain/errors.js';
import type { QmpClient } from './qmp/client.js';
import { qmpBatch } from './qmp-batch.js';

import { OFFLOADS, type NicBackend, type Offload } from '../domain/nic.js';

/** Where the NIC's frames go. */
export type NicAttachment = { kind: 'stream'; socket: string } | { kind: 'tap'; ifname: string } | { kind: 'none' };

/** The NIC's device node id (its QOM path is /machine/peripheral/nic0). */
export const NIC_ID = 'nic0';
const VIRTIO_PATH = `/machine/peripheral/${NIC_ID}/virtio-backend`;

export function netdevArg(a: NicAttachment): string {
  switch (a.kind) {
    case 'stream':
      // reconnect-ms: a switch that restarts gets its VMs back within a second.
      return `stream,id=net0,server=off,reconnect-ms=1000,addr.type=unix,addr.path=${a.socket}`;
    case 'tap':
      return `tap,id=net0,ifname=${a.ifname},script=no,downscript=no,vnet_hdr=on`;
    case 'none':
      return 'hubport,id=net0,hubid=0';
  }
}

/** The device's offload properties: each requested one on, every other off. */
export function offloadProps(requested: readonly string[] | undefined): string {
  const on = new Set(requested ?? OFFLOADS);
  return OFFLOADS.map((o) => `${o}=${on.has(o) ? 'on' : 'off'}`).join(',');
}

/** `VIRTIO_NET_F_HOST_TSO4: Device can receive TSOv4` → host_tso4, for offload bits only. */
export function offloadsIn(features: string[]): Offload[] {
  const names = new Set(
    features.map((f) =>
      f
        .split(':')[0]!
        .replace(/^VIRTIO_NET_F_/, '')
        .toLowerCase(),
    ),
  );
  return OFFLOADS.filter((o) => names.has(o));
}

interface VirtioStatus {
  'host-features': { 'dev-features'?: string[] };
  'guest-features': { 'dev-features'?: string[] };
}

/** What a running VM's NIC offers and what its guest negotiated. */
export async function nicStatus(qmp: QmpClient): Promise<{ offered: Offload[]; negotiated: Offload[] }> {
  const s: VirtioStatus = await qmp.execute('x-query-virtio-status', { path: VIRTIO_PATH });
  return { offered: offloadsIn(s['host-features']['dev-features'] ?? []), negotiated: offloadsIn(s['guest-features']['dev-features'] ?? []) };
}

/**
 * The offloads a backend lets a virtio-net device offer, asked of QEMU: a
 * paused machine with the device on that backend (a tap QEMU creates and
 * removes itself, a stream to a throwaway listener).
 */
export async function probeBackendOffloads(backend: NicBackend, scratchSocket: string): Promise<Offload[]> {
  const netdev =
    backend === 'tap' || backend === 'bridge'
      ? `tap,id=n0,ifname=fyp${randomBytes(4).toString('hex')},script=no,downscript=no,vnet_hdr=on`
      : `stream,id=n0,server=on,addr.type=unix,addr.path=${scratchSocket}`;
  const answers = await qmpBatch(
    ['-machine', 'pc,accel=tcg', '-S', '-netdev', netdev, '-device', `virtio-net-pci,id=${NIC_ID},netdev=n0,romfile=,${offloadProps(OFFLOADS)}`],
    [{ execute: 'x-query-virtio-status', arguments: { path: VIRTIO_PATH } }],
    `open a ${backend} NIC backend`,
  );
  const msg = answers.get(0);
  if (msg?.error) throw new FerryError(ErrorCode.QmpError, `QEMU cannot report the NIC's features: ${msg.error.desc}`);
  if (msg?.return) return offloadsIn((msg.return as VirtioStatus)['host-features']['dev-features'] ?? []);
  throw new FerryError(ErrorCode.QmpError, 'QEMU did not report the NIC features');
}

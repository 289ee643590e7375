/**
 * NIC offloads (R10) and NIC backends in Ferry's terms: the virtio-net
 * offload properties a VM may ask for, and how a node's NICs reach the
 * virtual switch.
 */
import { errors } from './errors.js';

/** virtio-net-pci properties that are offloads (QEMU's names). */
export const OFFLOADS = [
  'csum',
  'guest_csum',
  'gso',
  'host_tso4',
  'host_tso6',
  'host_ecn',
  'host_ufo',
  'host_uso',
  'guest_tso4',
  'guest_tso6',
  'guest_ecn',
  'guest_ufo',
  'guest_uso4',
  'guest_uso6',
] as const;
export type Offload = (typeof OFFLOADS)[number];

/**
 * stream: a unix stream to Ferry's userspace switch (the single machine);
 * tap: a tap on a node bridge relayed to that switch (real offloads);
 * bridge: a tap on the Linux bridge the switch is bound to on the host, whose uplink is a real interface (real hosts).
 */
export type NicBackend = 'stream' | 'tap' | 'bridge';
export const NIC_BACKENDS: readonly NicBackend[] = ['stream', 'tap', 'bridge'];

export function validateOffloads(value: unknown): Offload[] {
  if (value === 'none') return [];
  if (value === 'all') return [...OFFLOADS];
  const list = Array.isArray(value)
    ? value
    : typeof value === 'string'
      ? value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : undefined;
  if (!list) throw errors.invalid('offloads', `offloads must be a comma-separated list, 'all' or 'none'`);
  const unknown = list.filter((o) => !(OFFLOADS as readonly string[]).includes(String(o)));
  if (unknown.length)
    throw errors.invalid('offloads', `unknown NIC offload${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (known: ${OFFLOADS.join(', ')})`);
  return OFFLOADS.filter((o) => list.includes(o));
}

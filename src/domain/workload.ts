/**
 * Workloads of the built-in guest, parsed from what a user types:
 *   idle | memory:<MiB/s> | tcp | tcp-client:<VM> | disk:<writes/s>
 * several joined with '+' run side by side, e.g. memory:32+tcp.
 */
import { errors } from './errors.js';
import { NAME_PATTERN } from './records.js';

export type Workload =
  { kind: 'idle' } | { kind: 'memory'; mibPerSec: number } | { kind: 'tcp' } | { kind: 'tcp-client'; peer: string } | { kind: 'disk'; writesPerSec: number };

export const TCP_SERVICE_PORT = 7000;

function parseOne(text: string): Workload {
  if (text === 'idle') return { kind: 'idle' };
  if (text === 'tcp') return { kind: 'tcp' };
  const memory = /^memory:(\d+)$/.exec(text);
  if (memory) {
    const mibPerSec = Number(memory[1]);
    if (mibPerSec < 1 || mibPerSec > 100_000) {
      throw errors.invalid('workload', `workload '${text}': memory rate must be 1..100000 MiB/s`);
    }
    return { kind: 'memory', mibPerSec };
  }
  const disk = /^disk:(\d+)$/.exec(text);
  if (disk) {
    const writesPerSec = Number(disk[1]);
    if (writesPerSec < 1 || writesPerSec > 1000) throw errors.invalid('workload', `workload '${text}': disk writes must be 1..1000 per second`);
    return { kind: 'disk', writesPerSec };
  }
  const client = /^tcp-client:(.+)$/.exec(text);
  if (client) {
    const peer = client[1]!;
    if (!NAME_PATTERN.test(peer)) throw errors.invalid('workload', `workload '${text}': '${peer}' is not a valid VM name`);
    return { kind: 'tcp-client', peer };
  }
  throw errors.invalid('workload', `workload '${text}' does not parse: use idle, memory:<MiB/s>, tcp, tcp-client:<VM> or disk:<writes/s>`);
}

/** Parses a workload list ('+'-joined); refuses empty parts, repeats and idle mixed with others. */
export function parseWorkloads(text: string): Workload[] {
  if (typeof text !== 'string' || text === '') throw errors.invalid('workload', 'workload must not be empty');
  const parts = text.split('+').map((p) => parseOne(p));
  const kinds = parts.map((p) => p.kind);
  if (new Set(kinds).size !== kinds.length) throw errors.invalid('workload', `workload '${text}' names the same kind twice`);
  if (parts.length > 1 && kinds.includes('idle')) throw errors.invalid('workload', `workload '${text}': idle cannot be combined`);
  return parts;
}

/** The tcp-client peer of a workload list, if it has one. */
export function tcpPeer(text: string): string | undefined {
  const c = parseWorkloads(text).find((w) => w.kind === 'tcp-client');
  return c?.kind === 'tcp-client' ? c.peer : undefined;
}

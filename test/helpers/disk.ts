/**
 * Reads what the guest's `disk` workload wrote (records "ferry-seq N" in
 * 4 KiB blocks 1, 2, 3, …, each with "t=MS", the guest's time its write
 * began) out of a disk image on the host.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { vmRoutes } from '../../src/api/routes/vms.js';
import { type TestCluster, waitFor } from './cluster.js';

export interface DiskRecords {
  /** Records 1..last are all there, in order. */
  last: number;
  /** A valid record found after a missing one: the image is not a point in time. */
  holes: number[];
  /** When each record's write began, in the guest's clock (ms), by record number. */
  times: Map<number, number>;
}

export function readRecords(image: string): DiskRecords {
  const raw = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-disk-')), 'disk.raw');
  try {
    execFileSync('qemu-img', ['convert', '-O', 'raw', image, raw]);
    const fd = fs.openSync(raw, 'r');
    const buf = Buffer.alloc(4096);
    const times = new Map<number, number>();
    const valid = (n: number) => {
      if (fs.readSync(fd, buf, 0, 4096, n * 4096) !== 4096) return false;
      const head = buf.toString('latin1', 0, 64);
      if (!head.startsWith(`ferry-seq ${n}\n`)) return false;
      const t = /\nt=(\d+)\n/.exec(head);
      if (t) times.set(n, Number(t[1]));
      return true;
    };
    let last = 0;
    while (valid(last + 1)) last++;
    // A point-in-time copy of sequential synchronous writes is a prefix: nothing valid after the first gap.
    const holes: number[] = [];
    for (let n = last + 2; n < last + 2000; n++) if (valid(n)) holes.push(n);
    fs.closeSync(fd);
    return { last, holes, times };
  } finally {
    fs.rmSync(path.dirname(raw), { recursive: true, force: true });
  }
}

/**
 * Writes `mib` MiB of random data at 512 MiB into a running built-in guest's disk (far from its
 * numbered records), so a backup has that much to copy and a capped copy takes a known while.
 */
export async function writeBulk(c: TestCluster, vm: string, mib: number): Promise<void> {
  const marker = `ferry-bulk-${mib}-${Date.now()}`;
  await c.api.call(vmRoutes.consoleInput, {
    params: { name: vm },
    body: { data: `dd if=/dev/urandom of=/dev/vda bs=1M seek=512 count=${mib} oflag=direct 2>/dev/null && echo ${marker}\n` },
  });
  await waitFor(`${mib} MiB written in ${vm}`, 120_000, () => new RegExp(`^${marker}`, 'm').test(c.consoleText(vm)));
}
